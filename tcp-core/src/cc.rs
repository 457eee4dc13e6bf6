//! Congestion control behind a small trait, with NewReno (RFC 5681 + RFC 6582).
//!
//! The connection owns one [`CongestionControl`] implementation and tells it what happens to
//! its ACKs and timers; the controller answers with a window and, at loss events, with what
//! to retransmit. It does not see segments, buffers or the SACK scoreboard (SACK-based
//! recovery, RFC 6675, drives `scoreboard` and uses this trait only for `window`/`ssthresh`),
//! and it never reads a clock: times come in the events.
//!
//! ## Calling order (per connection)
//! 1. After the handshake: nothing — `window()` is the initial window (RFC 6928). If the
//!    SYN or SYN-ACK was retransmitted, call [`CongestionControl::on_syn_loss`] first.
//! 2. Before sending new data when nothing is in flight and nothing was sent for longer than
//!    the RTO: [`CongestionControl::on_idle_restart`] (RFC 5681 §4.1).
//! 3. Send while `FlightSize < window()` (FlightSize = SND.NXT − SND.UNA).
//! 4. For each incoming ACK, after the RFC 9293 acceptability checks:
//!    - it advances SND.UNA → [`CongestionControl::on_ack`] with the bytes newly acked and
//!      the FlightSize *before* the ACK; act on the returned [`CcAction`];
//!    - it is a duplicate ACK in the sense of RFC 5681 §2 (no data, no SYN/FIN, same
//!      window, ACK == SND.UNA, data outstanding) → [`CongestionControl::on_dup_ack`];
//!      act on the returned [`CcAction`];
//!    - anything else: no call.
//! 5. When the RTO timer fires, before retransmitting: [`CongestionControl::on_rto`].
//!
//! Limited transmit (RFC 3042) on the first two duplicate ACKs is the connection's business:
//! it may send one new segment per such ACK beyond `window()`.

use crate::seq::SeqNumber;
use crate::time::Instant;

/// An ACK that advanced SND.UNA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckEvent {
    /// The cumulative acknowledgment number (the new SND.UNA).
    pub ack: SeqNumber,
    /// Bytes newly acknowledged (new SND.UNA − old SND.UNA).
    pub acked_bytes: u32,
    /// FlightSize before this ACK: SND.NXT − old SND.UNA.
    pub flight_size: u32,
    /// SND.NXT when the ACK arrived.
    pub snd_nxt: SeqNumber,
    /// Arrival time.
    pub now: Instant,
}

/// A duplicate ACK (RFC 5681 §2 definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DupAckEvent {
    /// The acknowledgment number (== SND.UNA).
    pub ack: SeqNumber,
    /// FlightSize: SND.NXT − SND.UNA.
    pub flight_size: u32,
    /// SND.NXT when the ACK arrived.
    pub snd_nxt: SeqNumber,
    /// RFC 6675 §4 IsLost (HighACK + 1): the SACK scoreboard, updated by this ACK, says
    /// the first unacknowledged segment is lost (always false without SACK).
    pub head_lost: bool,
    /// Arrival time.
    pub now: Instant,
}

/// The retransmission timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoEvent {
    /// FlightSize when it fired: SND.NXT − SND.UNA.
    pub flight_size: u32,
    /// SND.NXT when it fired (before going back to SND.UNA).
    pub snd_nxt: SeqNumber,
    /// The segment at SND.UNA was already retransmitted by the timer (a backed-off RTO
    /// fired again, i.e. `RttEstimator::backoff() > 0` before this expiry). RFC 5681 §3.1
    /// reduces ssthresh only on the first timeout of a segment.
    pub repeated: bool,
    /// Expiry time.
    pub now: Instant,
}

/// What the connection must do after an ACK event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use = "a requested retransmission must be sent"]
pub struct CcAction {
    /// Retransmit the first unacknowledged segment (at SND.UNA) now, regardless of
    /// `window()` (fast retransmit, RFC 5681 §3.2; partial ACK, RFC 6582 §3.2).
    pub retransmit: bool,
    /// Restart the RTO timer for this ACK (RFC 6298 §5.3). `false` leaves a running timer as
    /// it is (later partial ACKs of the impatient variant, RFC 6582 §3.2 step 3). Either
    /// way, stop the timer when nothing is outstanding (RFC 6298 §5.2).
    pub restart_rto: bool,
}

/// A congestion controller, called by the connection as described in the module docs.
/// Object safe, so an endpoint may hold `Box<dyn CongestionControl>` if it wants choice.
pub trait CongestionControl {
    /// New data acknowledged (SND.UNA advanced).
    fn on_ack(&mut self, ev: &AckEvent) -> CcAction;
    /// A duplicate ACK arrived.
    fn on_dup_ack(&mut self, ev: &DupAckEvent) -> CcAction;
    /// The retransmission timer expired.
    fn on_rto(&mut self, ev: &RtoEvent);
    /// The SYN or SYN-ACK of this connection was retransmitted.
    fn on_syn_loss(&mut self);
    /// Sending resumes after an idle period longer than the RTO.
    fn on_idle_restart(&mut self);
    /// The congestion window in bytes (cwnd).
    fn window(&self) -> u32;
    /// The slow-start threshold in bytes.
    fn ssthresh(&self) -> u32;
    /// Whether a loss recovery episode is in progress.
    fn in_recovery(&self) -> bool;
}

/// NewReno parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRenoConfig {
    /// Sender maximum segment size (SMSS) in bytes; at least 1.
    pub smss: u32,
    /// Initial window in bytes; `None` = RFC 6928: min(10*SMSS, max(2*SMSS, 14600)).
    pub initial_window: Option<u32>,
    /// L of RFC 3465 (appropriate byte counting): slow start grows cwnd by at most
    /// `abc_limit * SMSS` per ACK. Default 2 (RFC 3465 §2.2); 1 is RFC 5681 §3.1's eq. 2.
    pub abc_limit: u32,
    /// RFC 5681 §4.1 restart after idle (`on_idle_restart` shrinks cwnd to the restart
    /// window). Default on, as Linux's `tcp_slow_start_after_idle`.
    pub restart_after_idle: bool,
}

impl NewRenoConfig {
    /// Defaults for `smss`.
    pub fn new(smss: u32) -> NewRenoConfig {
        NewRenoConfig {
            smss,
            initial_window: None,
            abc_limit: 2,
            restart_after_idle: true,
        }
    }
}

/// RFC 6928 §2: IW = min (10*MSS, max (2*MSS, 14600)).
pub fn rfc6928_initial_window(smss: u32) -> u32 {
    smss.saturating_mul(10)
        .min(smss.saturating_mul(2).max(14600))
}

/// NewReno: RFC 5681 slow start, congestion avoidance, fast retransmit and fast recovery,
/// with RFC 6582's partial-ACK handling.
///
/// Variants chosen: the *careful* variant of RFC 6582 §3.2 step 2 (fast retransmit only if
/// the ACK covers more than `recover`; the optional ACK/timestamp heuristics of RFC 6582 §4
/// are not implemented), the *impatient* timer (RFC 6582 §3.2 step 3: restart the RTO only
/// on the first partial ACK), and option (1) for the full-ACK exit:
/// cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS), which avoids a burst.
/// Congestion avoidance counts bytes (RFC 5681 §3.1, RFC 3465 §2.1). Invariants:
/// `SMSS <= cwnd` and `2*SMSS <= ssthresh`.
#[derive(Debug, Clone)]
pub struct NewReno {
    cfg: NewRenoConfig,
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acked in congestion avoidance since cwnd last grew (RFC 3465 §2.1).
    bytes_acked: u32,
    dup_acks: u32,
    /// RFC 6582 `recover`: highest sequence number sent at the last loss event; `None` once
    /// an ACK covered more than it (equivalent, and safe against sequence wrap-around).
    recover: Option<SeqNumber>,
    in_recovery: bool,
    /// No partial ACK yet in this recovery episode (impatient timer).
    first_partial: bool,
}

/// RFC 5681 §3.2: the fast retransmit threshold (DupThresh).
pub const DUP_THRESH: u32 = 3;

impl NewReno {
    /// A controller in slow start with the initial window and an "arbitrarily high" ssthresh
    /// (RFC 5681 §3.1).
    pub fn new(cfg: NewRenoConfig) -> NewReno {
        let cfg = NewRenoConfig {
            smss: cfg.smss.max(1),
            abc_limit: cfg.abc_limit.max(1),
            ..cfg
        };
        let iw = cfg
            .initial_window
            .unwrap_or_else(|| rfc6928_initial_window(cfg.smss));
        NewReno {
            cfg,
            // RFC 6928 §2 (or the configured IW), never below one segment.
            cwnd: iw.max(cfg.smss),
            // RFC 5681 §3.1: "The initial value of ssthresh SHOULD be set arbitrarily high".
            ssthresh: u32::MAX,
            bytes_acked: 0,
            dup_acks: 0,
            recover: None,
            in_recovery: false,
            first_partial: false,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &NewRenoConfig {
        &self.cfg
    }

    /// Duplicate ACKs counted since the last new ACK.
    pub fn dup_acks(&self) -> u32 {
        self.dup_acks
    }

    /// The RFC 6582 `recover` point, if still relevant.
    pub fn recover(&self) -> Option<SeqNumber> {
        self.recover
    }

    fn smss(&self) -> u32 {
        self.cfg.smss
    }

    fn initial_window(&self) -> u32 {
        self.cfg
            .initial_window
            .unwrap_or_else(|| rfc6928_initial_window(self.smss()))
            .max(self.smss())
    }

    /// RFC 5681 §3.1 eq. (4): ssthresh = max (FlightSize / 2, 2*SMSS).
    fn halve(&self, flight_size: u32) -> u32 {
        (flight_size / 2).max(self.smss().saturating_mul(2))
    }

    fn floor_cwnd(&mut self) {
        self.cwnd = self.cwnd.max(self.smss());
    }
}

impl CongestionControl for NewReno {
    fn on_ack(&mut self, ev: &AckEvent) -> CcAction {
        let smss = self.smss();
        let n = ev.acked_bytes;
        self.dup_acks = 0;
        if self.in_recovery {
            let recover = self.recover.unwrap_or(ev.ack);
            if ev.ack > recover {
                // RFC 6582 §3.2 step 3, full acknowledgment: it acknowledges all data up to
                // and including `recover`. Option (1):
                // cwnd = min (ssthresh, max(FlightSize, SMSS) + SMSS), FlightSize now outstanding.
                let flight_now = ev.flight_size.saturating_sub(n);
                self.cwnd = self.ssthresh.min(flight_now.max(smss).saturating_add(smss));
                self.in_recovery = false;
                self.bytes_acked = 0;
                self.floor_cwnd();
                return CcAction {
                    retransmit: false,
                    restart_rto: true,
                };
            }
            // RFC 6582 §3.2 step 3, partial acknowledgment: retransmit the first
            // unacknowledged segment; deflate cwnd by the amount of new data acknowledged,
            // then add back SMSS if at least one SMSS of new data was acknowledged.
            self.cwnd = self.cwnd.saturating_sub(n);
            if n >= smss {
                self.cwnd = self.cwnd.saturating_add(smss);
            }
            self.floor_cwnd();
            // "For the first partial ACK that arrives during fast recovery, also reset the
            // retransmit timer" (the impatient variant).
            let restart_rto = self.first_partial;
            self.first_partial = false;
            return CcAction {
                retransmit: true,
                restart_rto,
            };
        }
        if self.recover.is_some_and(|r| ev.ack > r) {
            // Every later ACK also covers more than `recover`: forget it (wrap-around safe).
            self.recover = None;
        }
        if self.cwnd < self.ssthresh {
            // RFC 5681 §3.1 slow start, with RFC 3465 §2.2 byte counting:
            // cwnd += min (N, L*SMSS).
            let limit = smss.saturating_mul(self.cfg.abc_limit);
            self.cwnd = self.cwnd.saturating_add(n.min(limit));
        } else {
            // RFC 5681 §3.1 congestion avoidance, byte counting (RFC 3465 §2.1): once
            // bytes_acked reaches cwnd, cwnd += SMSS and bytes_acked -= cwnd.
            self.bytes_acked = self.bytes_acked.saturating_add(n);
            if self.bytes_acked >= self.cwnd {
                self.bytes_acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(smss);
            }
        }
        CcAction {
            retransmit: false,
            restart_rto: true,
        }
    }

    fn on_dup_ack(&mut self, ev: &DupAckEvent) -> CcAction {
        let smss = self.smss();
        if self.in_recovery {
            // RFC 5681 §3.2 step 4 (RFC 6582 §3.2 step 3 "execute step 4"): for each
            // additional duplicate ACK, cwnd += SMSS (it left the network).
            self.cwnd = self.cwnd.saturating_add(smss);
            return CcAction::default();
        }
        self.dup_acks = self.dup_acks.saturating_add(1);
        // RFC 6675 §5 (3): "(1) If DupAcks >= DupThresh, go to step (4). (2) If DupAcks <
        // DupThresh but IsLost (HighACK + 1) returns true ... go to step (4)." (Past
        // DupThresh, the episode was started or refused at DupThresh.)
        let lost = ev.head_lost && self.dup_acks < DUP_THRESH;
        if self.dup_acks != DUP_THRESH && !lost {
            return CcAction::default();
        }
        // RFC 6582 §3.2 step 2 (careful variant): enter fast retransmit only if the ACK
        // covers more than `recover`; otherwise do not reset ssthresh.
        if self.recover.is_some_and(|r| ev.ack <= r) {
            return CcAction::default();
        }
        // RFC 6582 §3.2 step 2: recover = highest sequence number transmitted so far.
        self.recover = Some(SeqNumber(ev.snd_nxt.0.wrapping_sub(1)));
        // RFC 5681 §3.2 step 2: ssthresh = max (FlightSize / 2, 2*SMSS) (eq. 4).
        self.ssthresh = self.halve(ev.flight_size);
        // RFC 5681 §3.2 step 3: retransmit the lost segment; cwnd = ssthresh + 3*SMSS.
        self.cwnd = self
            .ssthresh
            .saturating_add(smss.saturating_mul(DUP_THRESH));
        self.in_recovery = true;
        self.first_partial = true;
        self.bytes_acked = 0;
        CcAction {
            retransmit: true,
            restart_rto: false,
        }
    }

    fn on_rto(&mut self, ev: &RtoEvent) {
        let smss = self.smss();
        if !ev.repeated {
            // RFC 5681 §3.1: on a timeout of a segment not yet resent by the timer,
            // ssthresh = max (FlightSize / 2, 2*SMSS) (eq. 4).
            self.ssthresh = self.halve(ev.flight_size);
        }
        // RFC 5681 §3.1: "upon a timeout cwnd MUST be set to no more than the loss window,
        // LW, which equals the size of one full-sized segment".
        self.cwnd = smss;
        // RFC 6582 §3.2 step 4: record the highest sequence number transmitted in recover
        // and exit fast recovery.
        self.recover = Some(SeqNumber(ev.snd_nxt.0.wrapping_sub(1)));
        self.in_recovery = false;
        self.dup_acks = 0;
        self.bytes_acked = 0;
    }

    fn on_syn_loss(&mut self) {
        // RFC 5681 §3.1 / RFC 6928 §2: if the SYN or SYN/ACK is lost, the initial window
        // after a correctly transmitted SYN MUST be one segment.
        self.cwnd = self.cwnd.min(self.smss());
    }

    fn on_idle_restart(&mut self) {
        if self.cfg.restart_after_idle {
            // RFC 5681 §4.1: cwnd = min(cwnd, RW) with RW = min (IW, cwnd).
            self.cwnd = self.cwnd.min(self.initial_window());
            self.bytes_acked = 0;
        }
    }

    fn window(&self) -> u32 {
        self.cwnd
    }

    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    fn in_recovery(&self) -> bool {
        self.in_recovery
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSS: u32 = 1000;

    /// A sender's sequence state, to script scenarios.
    struct Sender {
        cc: NewReno,
        una: SeqNumber,
        nxt: SeqNumber,
        now: Instant,
    }

    impl Sender {
        fn new(cfg: NewRenoConfig) -> Sender {
            Sender {
                cc: NewReno::new(cfg),
                una: SeqNumber(1),
                nxt: SeqNumber(1),
                now: Instant::ZERO,
            }
        }
        fn flight(&self) -> u32 {
            self.nxt - self.una
        }
        /// Fill the window.
        fn send(&mut self) {
            let w = self.cc.window();
            if self.flight() < w {
                self.nxt += w - self.flight();
            }
        }
        fn ack(&mut self, bytes: u32) -> CcAction {
            let ev = AckEvent {
                ack: self.una + bytes,
                acked_bytes: bytes,
                flight_size: self.flight(),
                snd_nxt: self.nxt,
                now: self.now,
            };
            self.una = ev.ack;
            self.cc.on_ack(&ev)
        }
        fn dup(&mut self) -> CcAction {
            let ev = DupAckEvent {
                ack: self.una,
                flight_size: self.flight(),
                snd_nxt: self.nxt,
                head_lost: false,
                now: self.now,
            };
            self.cc.on_dup_ack(&ev)
        }
        fn rto(&mut self, repeated: bool) {
            let ev = RtoEvent {
                flight_size: self.flight(),
                snd_nxt: self.nxt,
                repeated,
                now: self.now,
            };
            self.cc.on_rto(&ev);
        }
        fn check(&self) {
            assert!(
                self.cc.window() >= MSS,
                "cwnd {} below 1 MSS",
                self.cc.window()
            );
            assert!(self.cc.ssthresh() >= 2 * MSS);
        }
    }

    #[test]
    fn initial_window_rfc6928() {
        assert_eq!(rfc6928_initial_window(1460), 14600);
        assert_eq!(rfc6928_initial_window(1000), 10000);
        assert_eq!(rfc6928_initial_window(536), 5360);
        assert_eq!(rfc6928_initial_window(9000), 18000);
        assert_eq!(NewReno::new(NewRenoConfig::new(1460)).window(), 14600);
        let cfg = NewRenoConfig {
            initial_window: Some(4 * MSS),
            ..NewRenoConfig::new(MSS)
        };
        assert_eq!(NewReno::new(cfg).window(), 4 * MSS);
        let cfg = NewRenoConfig {
            initial_window: Some(0),
            ..NewRenoConfig::new(MSS)
        };
        assert_eq!(NewReno::new(cfg).window(), MSS);
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        // With L = 1 and one ACK per segment, cwnd doubles each RTT.
        let mut s = Sender::new(NewRenoConfig {
            abc_limit: 1,
            ..NewRenoConfig::new(MSS)
        });
        let mut w = s.cc.window();
        for _ in 0..5 {
            s.send();
            for _ in 0..(w / MSS) {
                let a = s.ack(MSS);
                assert_eq!(
                    a,
                    CcAction {
                        retransmit: false,
                        restart_rto: true
                    }
                );
            }
            assert_eq!(s.cc.window(), 2 * w);
            w = s.cc.window();
        }
    }

    #[test]
    fn slow_start_byte_counting_limit_l2() {
        // A stretch ACK of 5 MSS grows cwnd by L*SMSS = 2 MSS only (RFC 3465 §2.2).
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send();
        let _ = s.ack(5 * MSS);
        assert_eq!(s.cc.window(), 12 * MSS);
        // Delayed ACKs (2 MSS each) still double cwnd per RTT with L = 2.
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send();
        for _ in 0..5 {
            let _ = s.ack(2 * MSS);
        }
        assert_eq!(s.cc.window(), 20 * MSS);
    }

    #[test]
    fn congestion_avoidance_one_mss_per_rtt() {
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.cc.ssthresh = 10 * MSS; // start in congestion avoidance
        for rtt in 0..5 {
            let w = s.cc.window();
            s.send();
            for _ in 0..(w / MSS) {
                let _ = s.ack(MSS);
            }
            assert_eq!(s.cc.window(), w + MSS, "rtt {rtt}");
        }
    }

    #[test]
    fn three_dup_acks_fast_retransmit() {
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send(); // 10 MSS in flight
        assert_eq!(s.dup(), CcAction::default());
        assert_eq!(s.dup(), CcAction::default());
        let a = s.dup();
        assert!(a.retransmit);
        assert!(s.cc.in_recovery());
        // ssthresh = max(FlightSize/2, 2*SMSS) = 5 MSS; cwnd = ssthresh + 3 MSS.
        assert_eq!(s.cc.ssthresh(), 5 * MSS);
        assert_eq!(s.cc.window(), 8 * MSS);
        assert_eq!(s.cc.recover(), Some(SeqNumber(s.nxt.0 - 1)));
        // Further dup ACKs inflate.
        assert_eq!(s.dup(), CcAction::default());
        assert_eq!(s.cc.window(), 9 * MSS);
        s.check();
        // Small flight: ssthresh floors at 2 MSS.
        let mut s = Sender::new(NewRenoConfig {
            initial_window: Some(2 * MSS),
            ..NewRenoConfig::new(MSS)
        });
        s.send();
        for _ in 0..3 {
            let _ = s.dup();
        }
        assert_eq!(s.cc.ssthresh(), 2 * MSS);
        s.check();
    }

    #[test]
    fn partial_ack_deflates_and_retransmits_rfc6582() {
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send(); // 10 MSS
        for _ in 0..3 {
            let _ = s.dup();
        }
        for _ in 0..4 {
            let _ = s.dup(); // cwnd 8 + 4 = 12 MSS
        }
        assert_eq!(s.cc.window(), 12 * MSS);
        s.send(); // new data beyond recover
                  // Partial ACK of 3 MSS: deflate by 3 MSS, add back 1 MSS.
        let a = s.ack(3 * MSS);
        assert_eq!(
            a,
            CcAction {
                retransmit: true,
                restart_rto: true
            }
        );
        assert_eq!(s.cc.window(), 10 * MSS);
        assert!(s.cc.in_recovery());
        // Second partial ACK: impatient variant does not restart the timer.
        let a = s.ack(MSS / 2);
        assert_eq!(
            a,
            CcAction {
                retransmit: true,
                restart_rto: false
            }
        );
        assert_eq!(s.cc.window(), 10 * MSS - MSS / 2);
        s.check();
    }

    #[test]
    fn full_ack_exits_recovery() {
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send(); // 10 MSS: una=1, nxt=10001
        for _ in 0..3 {
            let _ = s.dup();
        }
        let recover = s.cc.recover().unwrap();
        // Nothing more sent; the ACK of everything up to recover is a full ACK.
        let a = s.ack(recover - s.una + 1);
        assert_eq!(
            a,
            CcAction {
                retransmit: false,
                restart_rto: true
            }
        );
        assert!(!s.cc.in_recovery());
        // FlightSize now 0: cwnd = min(ssthresh, max(0, MSS) + MSS) = 2 MSS.
        assert_eq!(s.cc.window(), 2 * MSS);
        // With data still outstanding beyond recover, cwnd = min(ssthresh, flight + MSS).
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send();
        for _ in 0..3 {
            let _ = s.dup();
        }
        let recover = s.cc.recover().unwrap();
        for _ in 0..10 {
            let _ = s.dup();
        }
        s.send(); // cwnd 18 MSS: 8 MSS beyond recover
        let _ = s.ack(recover - s.una + 1);
        assert_eq!(s.cc.window(), s.cc.ssthresh()); // min(5, 8+1) MSS
        assert_eq!(s.cc.window(), 5 * MSS);
        s.check();
    }

    #[test]
    fn careful_variant_after_rto() {
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send();
        s.rto(false);
        // ssthresh halved, cwnd = LW.
        assert_eq!(s.cc.ssthresh(), 5 * MSS);
        assert_eq!(s.cc.window(), MSS);
        // Dup ACKs below recover (go-back-N artefacts) do not trigger fast retransmit.
        for _ in 0..3 {
            assert_eq!(s.dup(), CcAction::default());
        }
        assert!(!s.cc.in_recovery());
        assert_eq!(s.cc.ssthresh(), 5 * MSS);
        // Once an ACK covers more than recover, three dup ACKs do trigger it again.
        let all = s.flight();
        let _ = s.ack(all);
        assert_eq!(s.cc.recover(), None);
        s.send();
        for _ in 0..2 {
            let _ = s.dup();
        }
        assert!(s.dup().retransmit);
        s.check();
    }

    #[test]
    fn rto_sets_loss_window_and_halves_ssthresh_once() {
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send();
        for _ in 0..10 {
            let _ = s.ack(MSS);
            s.send();
        }
        let flight = s.flight(); // 20 MSS
        s.rto(false);
        assert_eq!(s.cc.window(), MSS);
        assert_eq!(s.cc.ssthresh(), flight / 2);
        // A repeated timeout of the same segment keeps ssthresh (FlightSize is unchanged,
        // but cwnd collapsed; halving again would use a meaningless value).
        s.nxt = s.una + MSS;
        s.rto(true);
        assert_eq!(s.cc.ssthresh(), flight / 2);
        assert_eq!(s.cc.window(), MSS);
        // RTO during fast recovery exits it.
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        s.send();
        for _ in 0..3 {
            let _ = s.dup();
        }
        s.rto(false);
        assert!(!s.cc.in_recovery());
        s.check();
    }

    #[test]
    fn syn_loss_and_idle_restart() {
        let mut c = NewReno::new(NewRenoConfig::new(MSS));
        c.on_syn_loss();
        assert_eq!(c.window(), MSS);
        let mut s = Sender::new(NewRenoConfig::new(MSS));
        for _ in 0..10 {
            s.send();
            let f = s.flight();
            let _ = s.ack(f);
        }
        assert!(s.cc.window() > 10 * MSS);
        s.cc.on_idle_restart();
        assert_eq!(s.cc.window(), 10 * MSS);
        let mut c = NewReno::new(NewRenoConfig {
            restart_after_idle: false,
            ..NewRenoConfig::new(MSS)
        });
        c.cwnd = 50 * MSS;
        c.on_idle_restart();
        assert_eq!(c.window(), 50 * MSS);
    }

    #[test]
    fn trait_object() {
        let mut b: alloc::boxed::Box<dyn CongestionControl> =
            alloc::boxed::Box::new(NewReno::new(NewRenoConfig::new(MSS)));
        b.on_syn_loss();
        assert_eq!(b.window(), MSS);
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Ack(u32),
        Dup,
        Rto(bool),
        Idle,
        SynLoss,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn windows_stay_above_floors(
            mss in prop_oneof![Just(1u32), Just(536u32), Just(1460u32), 1u32..70_000],
            iw in proptest::option::of(0u32..200_000),
            abc in 0u32..4,
            events in proptest::collection::vec(prop_oneof![
                6 => (0u32..=100).prop_map(Ev::Ack),
                4 => Just(Ev::Dup),
                1 => any::<bool>().prop_map(Ev::Rto),
                1 => Just(Ev::Idle),
                1 => Just(Ev::SynLoss),
            ], 0..300),
        ) {
            let cfg = NewRenoConfig { initial_window: iw, abc_limit: abc, ..NewRenoConfig::new(mss) };
            let mut s = Sender::new(cfg);
            s.una = SeqNumber(u32::MAX - 100_000); // exercise wrap-around
            s.nxt = s.una;
            for ev in events {
                s.send();
                match ev {
                    Ev::Ack(pct) => {
                        let bytes = (u64::from(s.flight()) * u64::from(pct) / 100) as u32;
                        if bytes > 0 { let _ = s.ack(bytes); }
                    }
                    Ev::Dup => if s.flight() > 0 { let _ = s.dup(); },
                    Ev::Rto(rep) => s.rto(rep),
                    Ev::Idle => s.cc.on_idle_restart(),
                    Ev::SynLoss => s.cc.on_syn_loss(),
                }
                prop_assert!(s.cc.window() >= mss, "cwnd {} < mss {}", s.cc.window(), mss);
                prop_assert!(s.cc.ssthresh() >= 2 * mss);
            }
        }
    }
}
