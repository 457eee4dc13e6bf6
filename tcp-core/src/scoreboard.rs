//! The sender's SACK scoreboard (RFC 6675): which outstanding bytes the peer has SACKed,
//! which are deemed lost, what to retransmit next and how much is in the pipe.
//!
//! Place in the layers: a connection with SACK permitted (RFC 2018 §2) owns one
//! [`Scoreboard`], feeds it every ACK ([`Scoreboard::on_ack`]) and asks it, during loss
//! recovery, for [`Scoreboard::next_seg`] and [`Scoreboard::pipe`]. The recovery variables
//! themselves (RecoveryPoint, HighRxt, RescueRxt, cwnd) belong to the connection and its
//! congestion control; they are passed in.
//!
//! ## Conventions
//! RFC 6675 names octets: HighACK is the highest octet cumulatively acknowledged, HighData
//! the highest octet sent, HighRxt the highest octet retransmitted. Here every bound is
//! exclusive, as sequence numbers on the wire are: `SND.UNA = HighACK + 1`,
//! `SND.NXT = HighData + 1`, and `high_rxt`/`rescue_rxt` are one past the octets the RFC
//! names. "S2 > HighRxt" thus reads `s2 >= high_rxt`.
//!
//! ## Bounds
//! At most `max_ranges` SACKed ranges (default [`DEFAULT_MAX_RANGES`]) are remembered, kept
//! sorted, disjoint, non-adjacent and inside `[SND.UNA, SND.NXT)`. When a new block would
//! exceed the bound, the highest range is forgotten. Forgetting SACK information is the
//! conservative direction: bytes are at worst retransmitted needlessly, and loss is at worst
//! declared later; a byte is never believed SACKed when it was not.
//!
//! ## What this module leaves to others
//! Deciding when an ACK is a "duplicate acknowledgment" (RFC 6675 §2: the connection uses
//! [`AckOutcome::newly_sacked`]), entering and leaving recovery (§5), and the RTO response
//! other than clearing the board (§5.1: the connection calls [`Scoreboard::reset`]).

use alloc::vec::Vec;

use crate::seq::SeqNumber;

/// Default bound on remembered SACKed ranges.
pub const DEFAULT_MAX_RANGES: usize = 32;

/// Most SACK blocks one ACK can carry (RFC 2018 §3: 40 option bytes).
const MAX_BLOCKS_PER_ACK: usize = 4;

/// SACK blocks this long or longer are refused: no window reaches 2^30 (RFC 7323 §2.3).
const MAX_BLOCK_LEN: u32 = 1 << 30;

/// RFC 6675 §2 DupThresh: "The number of duplicate acknowledgments required to trigger a
/// fast retransmission. ... a DupThresh of 3."
pub const DUP_THRESH: u32 = 3;

/// What one ACK changed on the scoreboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Bytes SACKed by this ACK that were not SACKed before (RFC 6675 §2 counts an ACK that
    /// carries new SACK information as a duplicate acknowledgment).
    pub newly_sacked: u32,
    /// Previously SACKed bytes now covered by the cumulative ACK.
    pub sacked_acked: u32,
    /// The first block reported a duplicate (RFC 2883 §4): it lies below SND.UNA or inside
    /// the second block. It is not SACK information.
    pub dsack: Option<(SeqNumber, SeqNumber)>,
    /// Blocks refused as invalid: empty, reversed, or reaching beyond SND.NXT.
    pub invalid_blocks: u8,
}

/// Which RFC 6675 §4 NextSeg() rule chose a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextSegKind {
    /// Rule (1): the first unSACKed octet above HighRxt that IsLost() says is lost.
    Lost,
    /// Rule (2): previously unsent data, starting at SND.NXT.
    NewData,
    /// Rule (3): an unSACKed octet above HighRxt below the highest SACKed octet, not (yet)
    /// deemed lost.
    Unsacked,
    /// Rule (4): the rescue retransmission, ending at the last outstanding octet.
    Rescue,
}

/// A segment NextSeg() says to send: `len` octets from `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextSeg {
    /// First octet.
    pub seq: SeqNumber,
    /// Octets, 1..=SMSS.
    pub len: u32,
    /// The rule that chose it.
    pub kind: NextSegKind,
}

/// The connection's recovery variables NextSeg() and SetPipe() read (RFC 6675 §3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryView {
    /// SND.NXT (HighData + 1).
    pub snd_nxt: SeqNumber,
    /// One past the highest octet retransmitted in this recovery (HighRxt + 1); SND.UNA on
    /// entry before anything is retransmitted.
    pub high_rxt: SeqNumber,
    /// One past RescueRxt, `None` while undefined (RFC 6675 §4 rule (4)).
    pub rescue_rxt: Option<SeqNumber>,
    /// Sender maximum segment size.
    pub smss: u32,
    /// Octets of new data NextSeg() rule (2) may offer: unsent data the application has
    /// written and the peer's window allows (0 when none).
    pub new_data: u32,
}

/// Whether `inner` is a non-empty block inside `outer` (offsets, no modular comparison).
fn contains(outer: (SeqNumber, SeqNumber), inner: (SeqNumber, SeqNumber)) -> bool {
    let olen = outer.1 - outer.0;
    let (a, b) = (inner.0 - outer.0, inner.1 - outer.0);
    olen < MAX_BLOCK_LEN && a < b && b <= olen
}

/// The sender's record of SACKed ranges in `[SND.UNA, SND.NXT)`.
#[derive(Debug, Clone)]
pub struct Scoreboard {
    /// SND.UNA as of the latest [`Scoreboard::on_ack`] or [`Scoreboard::reset`].
    una: SeqNumber,
    /// Sorted, disjoint, non-adjacent, inside `[una, SND.NXT)`; at most `max_ranges` after each ACK.
    ranges: Vec<(SeqNumber, SeqNumber)>,
    max_ranges: usize,
}

impl Default for Scoreboard {
    fn default() -> Self {
        Scoreboard::new(SeqNumber(0))
    }
}

impl Scoreboard {
    /// An empty scoreboard with SND.UNA = `una`, remembering at most [`DEFAULT_MAX_RANGES`]
    /// ranges.
    pub fn new(una: SeqNumber) -> Scoreboard {
        Scoreboard::with_max_ranges(una, DEFAULT_MAX_RANGES)
    }

    /// An empty scoreboard remembering at most `max_ranges` ranges (allocated once, on the
    /// first SACK block).
    pub fn with_max_ranges(una: SeqNumber, max_ranges: usize) -> Scoreboard {
        Scoreboard {
            una,
            // Allocated on the first SACK block (most connections never see one), with room
            // for the blocks of one ACK beyond the bound: they are merged first, and the
            // bound applied after (see `on_ack`).
            ranges: Vec::new(),
            max_ranges,
        }
    }

    /// Forgets every SACKed range and sets SND.UNA.
    ///
    /// RFC 6675 §5.1: "If an RTO occurs during loss recovery as specified in this document,
    /// the data sender MUST discard the SACK scoreboard"; also RFC 2018 §8: after a
    /// retransmission timeout the sender must ignore prior SACK information, since the
    /// receiver may have reneged.
    pub fn reset(&mut self, una: SeqNumber) {
        self.una = una;
        self.ranges.clear();
    }

    /// SND.UNA as last seen.
    pub fn una(&self) -> SeqNumber {
        self.una
    }

    /// The SACKed ranges `(start, end)` (end exclusive), lowest first.
    pub fn ranges(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.ranges
    }

    /// Whether no range is SACKed.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Octets SACKed above SND.UNA.
    pub fn sacked_bytes(&self) -> u32 {
        self.ranges
            .iter()
            .fold(0u32, |acc, &(s, e)| acc.saturating_add(e - s))
    }

    /// One past the highest SACKed octet, if any.
    pub fn high_sacked(&self) -> Option<SeqNumber> {
        self.ranges.last().map(|r| r.1)
    }

    /// Whether octet `seq` is SACKed.
    pub fn is_sacked(&self, seq: SeqNumber) -> bool {
        self.ranges.iter().any(|&(s, e)| seq.in_range(s, e))
    }

    /// Records an ACK: `una` is SND.UNA after it (never behind the previous one), `snd_nxt`
    /// the current SND.NXT, `blocks` its SACK blocks in option order.
    ///
    /// Ranges below `una` are dropped (cumulatively acknowledged). Blocks are validated:
    /// empty or reversed blocks and blocks ending beyond SND.NXT are refused (they cannot
    /// acknowledge unsent data); parts below SND.UNA are ignored. A first block below SND.UNA
    /// or inside the second block is reported as an RFC 2883 §4 D-SACK and not used.
    pub fn on_ack(
        &mut self,
        una: SeqNumber,
        snd_nxt: SeqNumber,
        blocks: &[(SeqNumber, SeqNumber)],
    ) -> AckOutcome {
        let mut out = AckOutcome::default();
        // Everything below works on offsets from SND.UNA (plain u32 compares), so that no
        // value from the network can hit the 2^31 ambiguity of modular comparison.
        let advance = una - self.una;
        if self.ranges.is_empty() && blocks.is_empty() {
            // Nothing SACKed and nothing reported (nearly every ACK): only SND.UNA moves.
            if advance != 0 && advance < 1 << 31 {
                self.una = una;
            }
            return out;
        }
        if advance != 0 && advance < 1 << 31 {
            // RFC 6675 §2: the cumulative ACK covers SACKed octets below it; drop them.
            let before = self.sacked_bytes();
            let old = self.una;
            self.ranges.retain(|&(_, e)| e - old > advance);
            for r in &mut self.ranges {
                r.0 = old + (r.0 - old).max(advance);
            }
            self.una = una;
            out.sacked_acked = before.saturating_sub(self.sacked_bytes());
        }
        let una = self.una;
        // Outstanding octets; a SND.NXT behind SND.UNA means nothing is outstanding.
        let wnd = match snd_nxt - una {
            w if w < MAX_BLOCK_LEN => w,
            _ => 0,
        };
        // Ranges beyond SND.NXT cannot exist unless the caller moved SND.NXT back (e.g. after
        // an RTO without `reset`): clip them.
        self.ranges.retain(|&(s, _)| s - una < wnd);
        for r in &mut self.ranges {
            r.1 = una + (r.1 - una).min(wnd);
        }

        // RFC 2883 §4: "If the first SACK block reports data below the cumulative ACK or
        // within the second SACK block, the block is a D-SACK."
        let mut blocks = blocks;
        if let Some(&(s, e)) = blocks.first() {
            let len = e - s;
            let below = len != 0 && len < MAX_BLOCK_LEN && una - e < MAX_BLOCK_LEN;
            let inside = blocks.get(1).is_some_and(|&outer| contains(outer, (s, e)));
            if below || inside {
                out.dsack = Some((s, e));
                blocks = &blocks[1..];
            }
        }

        let before = self.sacked_bytes();
        for &(s, e) in blocks {
            // RFC 2018 §3: the block covers [Left Edge, Right Edge). Validity: non-empty, not
            // reversed, not beyond what was sent, not longer than any window (RFC 5961 spirit:
            // refuse the implausible). Blocks wholly below SND.UNA are simply stale.
            let len = e - s;
            let end = e - una;
            if len == 0 || len >= MAX_BLOCK_LEN || (end > wnd && una - e >= MAX_BLOCK_LEN) {
                out.invalid_blocks = out.invalid_blocks.saturating_add(1);
                continue;
            }
            if end > wnd {
                continue; // stale: at or below SND.UNA
            }
            // Parts below SND.UNA are already acknowledged.
            let start = end.saturating_sub(len);
            if start < end {
                self.insert(una + start, una + end);
            }
        }
        // The bound, applied once the ACK's blocks are merged (blocks of one ACK may join
        // ranges that, inserted one by one, would have overflowed): forget the highest ranges
        // (conservative, see the module doc).
        self.ranges.truncate(self.max_ranges);
        out.newly_sacked = self.sacked_bytes().saturating_sub(before);
        out
    }

    /// Merges `[s, e)` (non-empty, inside `[una, SND.NXT)`) into the ranges.
    fn insert(&mut self, s: SeqNumber, e: SeqNumber) {
        if self.ranges.capacity() == 0 {
            self.ranges
                .reserve_exact(self.max_ranges + MAX_BLOCKS_PER_ACK);
        }
        let lo = self.ranges.partition_point(|r| r.1 < s);
        let hi = self.ranges.partition_point(|r| r.0 <= e);
        if lo < hi {
            let merged = (self.ranges[lo].0.min(s), self.ranges[hi - 1].1.max(e));
            self.ranges.splice(lo..hi, core::iter::once(merged));
            return;
        }
        if self.ranges.len() >= self.max_ranges + MAX_BLOCKS_PER_ACK {
            // Unreachable through `on_ack` (it inserts at most that many blocks before
            // applying the bound); stay bounded anyway: forget the highest range.
            if lo == self.ranges.len() {
                return;
            }
            self.ranges.pop();
        }
        self.ranges.insert(lo, (s, e));
    }

    /// The loss boundary: unSACKed octets below it satisfy IsLost(), those at or above it
    /// do not. IsLost() only grows as the octet gets lower, so one boundary describes it.
    fn lost_below(&self, smss: u32) -> SeqNumber {
        let byte_limit = (DUP_THRESH - 1).saturating_mul(smss);
        let mut bytes = 0u32;
        for (count, &(s, e)) in self.ranges.iter().rev().enumerate() {
            bytes = bytes.saturating_add(e - s);
            // Octets just below this range see `count + 1` ranges and `bytes` octets above.
            if count as u32 + 1 >= DUP_THRESH || bytes > byte_limit {
                return s;
            }
        }
        self.una
    }

    /// RFC 6675 §4 IsLost(SeqNum): "This routine returns whether the given sequence number
    /// is considered to be lost. The routine returns true when either DupThresh
    /// discontiguous SACKed sequences have arrived above 'SeqNum' or more than
    /// (DupThresh - 1) * SMSS bytes with sequence numbers greater than 'SeqNum' have been
    /// SACKed. Otherwise, the routine returns false."
    ///
    /// Discontiguous SACKed sequences are counted as SACKed ranges with octets above `seq`.
    pub fn is_lost(&self, seq: SeqNumber, smss: u32) -> bool {
        let mut count = 0u32;
        let mut bytes = 0u32;
        for &(s, e) in self.ranges.iter().rev() {
            if e <= seq + 1u32 {
                // No octet of this range lies above `seq`; nor of any lower range.
                break;
            }
            count += 1;
            bytes = bytes.saturating_add(e - (seq + 1u32).max(s));
        }
        count >= DUP_THRESH || bytes > (DUP_THRESH - 1).saturating_mul(smss)
    }

    /// Unsacked octets in `[from, to)`.
    fn unsacked_in(&self, from: SeqNumber, to: SeqNumber) -> u32 {
        if from >= to {
            return 0;
        }
        let sacked: u32 = self
            .ranges
            .iter()
            .map(|&(s, e)| {
                let (a, b) = (s.max(from), e.min(to));
                if a < b {
                    b - a
                } else {
                    0
                }
            })
            .fold(0u32, u32::saturating_add);
        (to - from).saturating_sub(sacked)
    }

    /// RFC 6675 §4 SetPipe(): the octets estimated in flight.
    ///
    /// "for each octet from HighACK to HighData that has not been SACKed: (a) If IsLost (S1)
    /// returns false: Pipe is incremented by 1 octet. (b) If S1 <= HighRxt: Pipe is
    /// incremented by 1 octet." Computed per range, not per octet, using the loss boundary.
    pub fn pipe(&self, snd_nxt: SeqNumber, high_rxt: SeqNumber, smss: u32) -> u32 {
        let snd_nxt = snd_nxt.max(self.una);
        // (a) unSACKed and not lost: everything at or above the loss boundary.
        let not_lost = self.unsacked_in(self.lost_below(smss).max(self.una), snd_nxt);
        // (b) unSACKed and retransmitted.
        let rxt = self.unsacked_in(self.una, high_rxt.min(snd_nxt));
        not_lost.saturating_add(rxt)
    }

    /// The first unSACKed octet at or above `from` and below `limit`, with the length of the
    /// hole there (up to the next SACKed range or `limit`).
    fn first_hole(&self, from: SeqNumber, limit: SeqNumber) -> Option<(SeqNumber, u32)> {
        let mut at = from;
        for &(s, e) in &self.ranges {
            if e <= at {
                continue;
            }
            if at < s {
                break;
            }
            at = e; // `at` inside this range: skip it
        }
        if at >= limit {
            return None;
        }
        let hole_end = self
            .ranges
            .iter()
            .find(|r| r.0 > at)
            .map_or(limit, |r| r.0.min(limit));
        Some((at, hole_end - at))
    }

    /// RFC 6675 §4 NextSeg(): the next segment to send during loss recovery, or `None`
    /// ("If no sequence number 'S2' ... exists" for every rule: send nothing).
    ///
    /// Segments never span a SACKed range: a retransmission covers one hole, up to SMSS.
    pub fn next_seg(&self, v: &RecoveryView) -> Option<NextSeg> {
        let smss = v.smss.max(1);
        let snd_nxt = v.snd_nxt.max(self.una);
        let from = v.high_rxt.max(self.una);
        // "(1.b) S2 is less than the highest octet covered by any received SACK."
        let high_sacked = self.high_sacked().unwrap_or(self.una);
        let hole = self.first_hole(from, high_sacked);
        // "(1) If there exists a smallest unSACKed sequence number 'S2' that meets the
        // following three criteria for determining loss, the sequence range of one segment of
        // up to SMSS octets starting with S2 MUST be returned.
        //   (1.a) S2 is greater than HighRxt.
        //   (1.b) S2 is less than the highest octet covered by any received SACK.
        //   (1.c) IsLost (S2) returns true."
        if let Some((seq, len)) = hole {
            if seq < self.lost_below(smss) {
                return Some(NextSeg {
                    seq,
                    len: len.min(smss),
                    kind: NextSegKind::Lost,
                });
            }
        }
        // "(2) If no sequence number 'S2' per rule (1) exists but there exists available
        // unsent data and the receiver's advertised window allows, the sequence range of one
        // segment of up to SMSS octets of previously unsent data starting with sequence
        // number HighData+1 MUST be returned."
        if v.new_data > 0 {
            return Some(NextSeg {
                seq: snd_nxt,
                len: v.new_data.min(smss),
                kind: NextSegKind::NewData,
            });
        }
        // "(3) If the conditions for rules (1) and (2) fail, but there exists an unSACKed
        // sequence number 'S3' that meets the criteria for detecting loss given in steps
        // (1.a) and (1.b) above (specifically excluding step (1.c)), then one segment of up
        // to SMSS octets starting with S3 SHOULD be returned."
        if let Some((seq, len)) = hole {
            return Some(NextSeg {
                seq,
                len: len.min(smss),
                kind: NextSegKind::Unsacked,
            });
        }
        // "(4) If the conditions for (1), (2), and (3) fail, but there exists outstanding
        // unacknowledged data, we provide the opportunity for a single "rescue"
        // retransmission per entry into loss recovery. If HighACK is greater than RescueRxt
        // (or RescueRxt is undefined), then one segment of upto SMSS octets that MUST include
        // the final octet of outstanding data MUST be returned."
        // HighACK > RescueRxt  <=>  SND.UNA - 1 > rescue_rxt - 1  <=>  SND.UNA > rescue_rxt.
        let rescue_ok = v.rescue_rxt.is_none_or(|r| self.una > r);
        if snd_nxt > self.una && rescue_ok {
            let outstanding = snd_nxt - self.una;
            let len = outstanding.min(smss);
            return Some(NextSeg {
                seq: SeqNumber(snd_nxt.0.wrapping_sub(len)),
                len,
                kind: NextSegKind::Rescue,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const MSS: u32 = 100;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(1000u32.wrapping_add(n))
    }

    fn view(nxt: u32, high_rxt: u32) -> RecoveryView {
        RecoveryView {
            snd_nxt: s(nxt),
            high_rxt: s(high_rxt),
            rescue_rxt: None,
            smss: MSS,
            new_data: 0,
        }
    }

    /// RFC 6675 single loss: segment 0 lost, 1..=3 SACKed one by one; the third SACK makes
    /// segment 0 lost (DupThresh) and NextSeg() returns it.
    #[test]
    fn rfc6675_single_loss() {
        let mut sb = Scoreboard::new(s(0));
        let nxt = s(1000);
        let o = sb.on_ack(s(0), nxt, &[(s(100), s(200))]);
        assert_eq!(o.newly_sacked, 100);
        assert!(!sb.is_lost(s(0), MSS));
        sb.on_ack(s(0), nxt, &[(s(100), s(300))]);
        assert!(
            !sb.is_lost(s(0), MSS),
            "2 SMSS SACKed above: not more than (3-1)*SMSS"
        );
        assert_eq!(
            sb.next_seg(&view(1000, 0)).map(|n| n.kind),
            Some(NextSegKind::Unsacked)
        );
        sb.on_ack(s(0), nxt, &[(s(100), s(400))]);
        assert!(sb.is_lost(s(0), MSS));
        assert!(!sb.is_lost(s(400), MSS));
        let n = sb.next_seg(&view(1000, 0)).unwrap();
        assert_eq!((n.seq, n.len, n.kind), (s(0), 100, NextSegKind::Lost));
        // Pipe before the retransmission: segment 0 is lost (not counted), 300 SACKed,
        // 600 octets above the highest SACK not lost.
        assert_eq!(sb.pipe(nxt, s(0), MSS), 600);
        // After retransmitting it (HighRxt past it), it counts once (rule b).
        assert_eq!(sb.pipe(nxt, s(100), MSS), 700);
        // Nothing left to retransmit below the SACKs: rescue (rule 4) of the last segment.
        let n = sb.next_seg(&view(1000, 100)).unwrap();
        assert_eq!((n.seq, n.len, n.kind), (s(900), 100, NextSegKind::Rescue));
        // The cumulative ACK covers everything SACKed: the board empties.
        let o = sb.on_ack(s(400), nxt, &[]);
        assert_eq!(o.sacked_acked, 300);
        assert!(sb.is_empty());
    }

    /// Multiple losses: holes at 0 and 200 and 500; SACKs above them.
    #[test]
    fn rfc6675_multiple_losses() {
        let mut sb = Scoreboard::new(s(0));
        let nxt = s(1000);
        sb.on_ack(
            s(0),
            nxt,
            &[(s(600), s(700)), (s(300), s(500)), (s(100), s(200))],
        );
        assert_eq!(
            sb.ranges(),
            [(s(100), s(200)), (s(300), s(500)), (s(600), s(700))]
        );
        assert_eq!(sb.sacked_bytes(), 400);
        assert!(sb.is_lost(s(0), MSS), "three discontiguous ranges above");
        assert!(sb.is_lost(s(200), MSS), "300 octets > 2*SMSS above");
        assert!(!sb.is_lost(s(500), MSS));
        let mut high_rxt = 0;
        let mut sent = Vec::new();
        while let Some(n) = sb.next_seg(&view(1000, high_rxt)) {
            if n.kind != NextSegKind::Lost {
                assert_eq!(n.kind, NextSegKind::Unsacked);
                assert_eq!(n.seq, s(500));
                break;
            }
            sent.push((n.seq, n.len));
            high_rxt = (n.seq + n.len) - s(0);
        }
        assert_eq!(sent, [(s(0), 100), (s(200), 100)]);
        // With new data allowed, rule (2) comes before rule (3).
        let mut v = view(1000, high_rxt);
        v.new_data = 5000;
        let n = sb.next_seg(&v).unwrap();
        assert_eq!((n.seq, n.len, n.kind), (s(1000), 100, NextSegKind::NewData));
    }

    /// A receiver that reneges (RFC 2018 §8) is handled by the RTO: RFC 6675 §5.1 reset.
    #[test]
    fn reneging_cleared_by_reset_on_rto() {
        let mut sb = Scoreboard::new(s(0));
        sb.on_ack(s(0), s(1000), &[(s(300), s(600))]);
        assert!(sb.is_lost(s(0), MSS));
        // The receiver discards its out-of-order data and never SACKs it again; only the RTO
        // helps, and it must forget every SACK.
        sb.reset(s(0));
        assert!(sb.is_empty());
        assert!(!sb.is_lost(s(0), MSS));
        assert_eq!(sb.pipe(s(1000), s(0), MSS), 1000);
    }

    #[test]
    fn invalid_and_dsack_blocks() {
        let mut sb = Scoreboard::new(s(500));
        // D-SACK below SND.UNA.
        let o = sb.on_ack(s(500), s(1000), &[(s(100), s(200)), (s(600), s(700))]);
        assert_eq!(o.dsack, Some((s(100), s(200))));
        assert_eq!(sb.ranges(), [(s(600), s(700))]);
        // D-SACK inside the second block.
        let o = sb.on_ack(s(500), s(1000), &[(s(620), s(640)), (s(600), s(700))]);
        assert_eq!(o.dsack, Some((s(620), s(640))));
        assert_eq!(o.newly_sacked, 0);
        // Beyond SND.NXT, reversed, empty, absurd: refused.
        let o = sb.on_ack(
            s(500),
            s(1000),
            &[
                (s(900), s(1100)),
                (s(800), s(700)),
                (s(800), s(800)),
                (SeqNumber(0), SeqNumber(0x8000_0000)),
            ],
        );
        assert_eq!(o.invalid_blocks, 4);
        assert_eq!(sb.ranges(), [(s(600), s(700))]);
    }

    #[test]
    fn bound_forgets_highest_range() {
        let mut sb = Scoreboard::with_max_ranges(s(0), 2);
        sb.on_ack(s(0), s(1000), &[(s(100), s(110)), (s(200), s(210))]);
        sb.on_ack(s(0), s(1000), &[(s(300), s(310))]);
        assert_eq!(sb.ranges(), [(s(100), s(110)), (s(200), s(210))]);
        sb.on_ack(s(0), s(1000), &[(s(50), s(60))]);
        assert_eq!(sb.ranges(), [(s(50), s(60)), (s(100), s(110))]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send(u32),
        Ack(u32, Vec<(u32, u32)>),
        Wild(Vec<(u32, u32)>),
        Rto,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (1u32..200).prop_map(Op::Send),
            5 => (0u32..200, proptest::collection::vec((0u32..800, 0u32..80), 0..4))
                .prop_map(|(a, b)| Op::Ack(a, b)),
            1 => proptest::collection::vec((any::<u32>(), any::<u32>()), 0..4).prop_map(Op::Wild),
            1 => Just(Op::Rto),
        ]
    }

    proptest! {
        /// Random ACK/SACK sequences: the ranges stay sorted, disjoint, non-adjacent, inside
        /// [una, nxt), bounded; they are a subset of what was really SACKed (equal while the
        /// bound is not hit); IsLost, SetPipe and NextSeg rule (1) match octet-by-octet
        /// versions of the RFC text.
        #[test]
        fn scoreboard_invariants(
            base in any::<u32>(),
            max_ranges in 1usize..8,
            ops in proptest::collection::vec(op(), 1..40),
            smss in 1u32..150,
            high_rxt_off in 0u32..600,
        ) {
            let b0 = SeqNumber(base);
            let mut sb = Scoreboard::with_max_ranges(b0, max_ranges);
            let cap = max_ranges + MAX_BLOCKS_PER_ACK;
            let (mut una, mut nxt) = (0u32, 0u32); // offsets from b0
            // Model: octets SACKed (absolute offsets), since the last reset.
            let mut model = std::collections::BTreeSet::new();
            let mut overflowed = false;
            for op in ops {
                let mut rebuild = false;
                match op {
                    Op::Send(n) => nxt += n,
                    Op::Rto => {
                        sb.reset(b0 + una);
                        model.clear();
                        overflowed = false;
                    }
                    Op::Ack(adv, blocks) => {
                        una = (una + adv).min(nxt);
                        let blocks: Vec<(SeqNumber, SeqNumber)> = blocks.iter()
                            .map(|&(o, l)| (b0 + una + o, b0 + una + o + l)).collect();
                        sb.on_ack(b0 + una, b0 + nxt, &blocks);
                        model.retain(|&x| x >= una);
                        for (i, &(s, e)) in blocks.iter().enumerate() {
                            let dsack_inside = i == 0 && blocks.len() > 1
                                && blocks[1].0 <= s && e <= blocks[1].1 && s < e;
                            if s < e && e <= b0 + nxt && !dsack_inside {
                                for x in (s - b0)..(e - b0) {
                                    if x >= una { model.insert(x); }
                                }
                            }
                        }
                    }
                    Op::Wild(blocks) => {
                        let blocks: Vec<(SeqNumber, SeqNumber)> = blocks.iter()
                            .map(|&(a, b)| (SeqNumber(a), SeqNumber(b))).collect();
                        let before = sb.ranges().to_vec();
                        sb.on_ack(b0 + una, b0 + nxt, &blocks);
                        // Wild blocks rarely land in the window; if they do, follow them.
                        rebuild = sb.ranges() != before.as_slice();
                    }
                }
                let r = sb.ranges();
                prop_assert!(r.len() <= max_ranges);
                // Allocated once, on the first block, and never grown.
                prop_assert!(sb.ranges.capacity() == 0 || sb.ranges.capacity() == cap);
                for (i, &(s, e)) in r.iter().enumerate() {
                    prop_assert!(b0 + una <= s && s < e && e <= b0 + nxt);
                    if i > 0 { prop_assert!(r[i - 1].1 < s, "sorted, disjoint, not adjacent"); }
                }
                if rebuild {
                    model.clear();
                    for &(s, e) in r {
                        for x in (s - b0)..(e - b0) { model.insert(x); }
                    }
                }
                // Subset of the truth; equal unless the bound was hit.
                let mut sacked = std::collections::BTreeSet::new();
                for &(s, e) in r { for x in (s - b0)..(e - b0) { sacked.insert(x); } }
                prop_assert!(sacked.is_subset(&model));
                let mut runs = 0;
                let mut prev = None;
                for &x in &model { if prev != Some(x.wrapping_sub(1)) { runs += 1; } prev = Some(x); }
                if runs > max_ranges { overflowed = true; }
                if !overflowed { prop_assert_eq!(&sacked, &model); }

                // IsLost and SetPipe, octet by octet as RFC 6675 §4 words them: walk down
                // from HighData counting SACKed octets and discontiguous runs above each one.
                let high_rxt = una + high_rxt_off.min(nxt - una);
                let high_sacked = sacked.iter().next_back().map_or(una, |&x| x + 1);
                let mut lost = std::vec![false; (nxt - una) as usize];
                let (mut bytes_above, mut runs_above) = (0u32, 0u32);
                for seq in (una..nxt).rev() {
                    lost[(seq - una) as usize] = runs_above >= DUP_THRESH
                        || bytes_above > (DUP_THRESH - 1) * smss;
                    if sacked.contains(&seq) {
                        bytes_above += 1;
                        if !sacked.contains(&(seq + 1)) { runs_above += 1; }
                    }
                }
                let mut pipe = 0;
                let mut first_lost = None;
                for seq in una..nxt {
                    if sacked.contains(&seq) { continue; }
                    let lost = lost[(seq - una) as usize];
                    prop_assert_eq!(sb.is_lost(b0 + seq, smss), lost, "IsLost({})", seq);
                    if !lost { pipe += 1; }
                    if seq < high_rxt { pipe += 1; }
                    if first_lost.is_none() && seq >= high_rxt && seq < high_sacked && lost {
                        first_lost = Some(seq);
                    }
                }
                prop_assert_eq!(sb.pipe(b0 + nxt, b0 + high_rxt, smss), pipe);
                let v = RecoveryView {
                    snd_nxt: b0 + nxt,
                    high_rxt: b0 + high_rxt,
                    rescue_rxt: None,
                    smss,
                    new_data: 0,
                };
                let n = sb.next_seg(&v);
                match first_lost {
                    Some(seq) => {
                        let n = n.unwrap();
                        prop_assert_eq!(n.kind, NextSegKind::Lost);
                        prop_assert_eq!(n.seq, b0 + seq);
                        prop_assert!(n.len >= 1 && n.len <= smss);
                        for x in seq..seq + n.len { prop_assert!(!sacked.contains(&x)); }
                    }
                    None => {
                        if let Some(n) = n {
                            prop_assert!(n.kind != NextSegKind::Lost);
                            prop_assert!(n.len >= 1 && n.len <= smss);
                            prop_assert!(b0 + una <= n.seq && n.seq + n.len <= b0 + nxt);
                        } else {
                            prop_assert_eq!(una, nxt);
                        }
                    }
                }
            }
        }
    }
}
