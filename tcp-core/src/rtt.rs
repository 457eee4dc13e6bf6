//! The retransmission timer's value: the RFC 6298 estimator, Karn's rule and backoff.
//!
//! One [`RttEstimator`] per connection. It keeps SRTT, RTTVAR and the RTO, takes RTT samples
//! either from timestamps (RFC 7323, every ACK that advances SND.UNA) or by timing one
//! segment per RTT ([`RttEstimator::start_timing`] / [`RttEstimator::on_ack`]), and backs the
//! RTO off on timeouts. It does not own a timer: the connection arms [`TimerKind::Rto`]
//! (crate::timer) for `now + rto()`, and decides when to give up (see
//! [`RttEstimator::backoff`]).
//!
//! Calling order for the connection:
//! - sending new data that is not a retransmission, without timestamps: `start_timing(end, now)`
//!   (ignored while a segment is already timed);
//! - any retransmission: `on_retransmit()` (Karn: the timed segment becomes ambiguous);
//! - an ACK that advances SND.UNA: with timestamps, `on_timestamp_sample(now - TSecr, n)`;
//!   without, `on_ack(ack, now)`;
//! - RTO timer expiry: `on_timeout()`, then re-arm with `rto()`;
//! - handshake completion: `on_handshake_complete()` (RFC 6298 §5.7).
//!
//! [`TimerKind::Rto`]: crate::timer::TimerKind::Rto

use crate::seq::SeqNumber;
use crate::time::{Duration, Instant};

/// RFC 6298 §2: K = 4.
const K: u64 = 4;

/// Parameters of the estimator. Every field has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttConfig {
    /// Clock granularity G of RFC 6298 §2 (the term `max(G, K*RTTVAR)`). Default 1 ms.
    pub granularity: Duration,
    /// Lower bound of the RTO. RFC 6298 §2.4 says 1 s; the default is 200 ms like Linux
    /// (`TCP_RTO_MIN`), which RFC 6298 §2.4's "MAY be ... less" allows on low-delay paths.
    pub min_rto: Duration,
    /// Upper bound of the RTO, backoff included. RFC 6298 §2.5: at least 60 s. Default 60 s.
    pub max_rto: Duration,
    /// RTO before any sample. RFC 6298 §2.1: 1 s. Default 1 s.
    pub initial_rto: Duration,
    /// RTO once data transmission starts if the SYN or SYN-ACK timed out and no sample was
    /// taken. RFC 6298 §5.7: 3 s. Default 3 s.
    pub syn_timeout_rto: Duration,
}

impl Default for RttConfig {
    fn default() -> RttConfig {
        RttConfig {
            granularity: Duration::from_millis(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            initial_rto: Duration::from_secs(1),
            syn_timeout_rto: Duration::from_secs(3),
        }
    }
}

/// SRTT, RTTVAR and RTO of one connection (RFC 6298), with Karn's rule and backoff.
///
/// Timestamp samples use the standard gains (alpha 1/8, beta 1/4) unless the caller passes
/// an `expected_samples` above 1 to [`RttEstimator::on_timestamp_sample`], which applies the
/// optional per-sample gains of RFC 7323 Appendix G (alpha/ExpectedSamples,
/// beta/ExpectedSamples). We default to 1, as Linux and FreeBSD do: per-ACK samples with
/// standard gains track path changes faster; the cost (RTTVAR decays faster, so the RTO is
/// tighter) is bounded by `min_rto`.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    cfg: RttConfig,
    /// SRTT in µs; `None` before the first sample.
    srtt: Option<u64>,
    /// RTTVAR in µs.
    rttvar: u64,
    /// RTO before backoff, bounds applied.
    base_rto: Duration,
    /// Consecutive timeouts since the last valid sample.
    backoff: u32,
    /// A timeout happened before any sample (SYN or SYN-ACK lost).
    timed_out_before_sample: bool,
    /// The timed segment (without timestamps): its end sequence number and send time.
    timed: Option<(SeqNumber, Instant)>,
}

impl RttEstimator {
    /// A fresh estimator: RTO = `initial_rto` (RFC 6298 §2.1).
    pub fn new(cfg: RttConfig) -> RttEstimator {
        RttEstimator {
            cfg,
            srtt: None,
            rttvar: 0,
            // RFC 6298 §2.1: until a measurement is made, RTO <- 1 second (configurable).
            base_rto: Self::clamp(&cfg, cfg.initial_rto),
            backoff: 0,
            timed_out_before_sample: false,
            timed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RttConfig {
        &self.cfg
    }

    /// The current retransmission timeout, backoff included, at most `max_rto`.
    pub fn rto(&self) -> Duration {
        // RFC 6298 §5.5: RTO <- RTO * 2 per expiry ("back off the timer").
        let factor = 1u64.checked_shl(self.backoff).unwrap_or(u64::MAX);
        // RFC 6298 §2.5: a maximum value MAY be placed on RTO provided it is at least 60 s.
        self.base_rto
            .saturating_mul(factor)
            .min(self.cfg.max_rto.max(self.cfg.min_rto))
    }

    /// Smoothed RTT, once a sample was taken.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_micros)
    }

    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(self.rttvar)
    }

    /// Consecutive RTO expiries since the last valid sample (the connection's retry count;
    /// it aborts after its configured limit, RFC 9293 §3.8.3 R2).
    pub fn backoff(&self) -> u32 {
        self.backoff
    }

    /// Whether a segment is being timed (without timestamps).
    pub fn is_timing(&self) -> bool {
        self.timed.is_some()
    }

    /// Time a segment of new data sent at `now`; `end_seq` is one past its last sequence
    /// number (SEG.SEQ + SEG.LEN, SYN and FIN included). Ignored while another segment is
    /// timed: one measurement per RTT (RFC 6298 §3). Never call it for a retransmission
    /// (Karn's algorithm, RFC 6298 §3).
    pub fn start_timing(&mut self, end_seq: SeqNumber, now: Instant) {
        if self.timed.is_none() {
            self.timed = Some((end_seq, now));
        }
    }

    /// A segment was retransmitted: drop the running measurement, which could otherwise be
    /// taken from the ACK of the retransmission (Karn's algorithm, RFC 6298 §3).
    pub fn on_retransmit(&mut self) {
        self.timed = None;
    }

    /// An ACK advancing SND.UNA to `ack` arrived at `now` (timing without timestamps). If it
    /// covers the timed segment, takes the sample, updates the RTO and returns the RTT.
    pub fn on_ack(&mut self, ack: SeqNumber, now: Instant) -> Option<Duration> {
        let (end, sent) = self.timed?;
        if ack < end {
            return None;
        }
        self.timed = None;
        let rtt = now.saturating_since(sent);
        self.on_sample(rtt, 1);
        Some(rtt)
    }

    /// A sample from the timestamp option: `rtt` = now − TSecr (in the caller's clock).
    ///
    /// RFC 7323 §4.1: take it from every ACK that advances SND.UNA (the caller filters);
    /// timestamps tell a retransmission's ACK from the original's, so Karn's rule does not
    /// apply (RFC 7323 §4) and the sample resets the backoff. `expected_samples` is the
    /// ExpectedSamples of RFC 7323 Appendix G (see [`expected_samples`]); pass 1 for the
    /// standard RFC 6298 gains (our default choice, see the type's docs).
    pub fn on_timestamp_sample(&mut self, rtt: Duration, expected_samples: u32) {
        // A timestamp sample supersedes the segment being timed.
        self.timed = None;
        self.on_sample(rtt, expected_samples.max(1));
    }

    /// The RTO timer expired: double the RTO (RFC 6298 §5.5) and drop the running
    /// measurement (the segment will be retransmitted, RFC 6298 §3 Karn).
    pub fn on_timeout(&mut self) {
        self.timed = None;
        if self.srtt.is_none() {
            self.timed_out_before_sample = true;
        }
        // RFC 6298 §5.5: "The host MUST set RTO <- RTO * 2 ("back off the timer")"; the
        // count stops growing once max_rto is reached (rto() caps it).
        if self.rto() < self.cfg.max_rto {
            self.backoff = self.backoff.saturating_add(1);
        }
    }

    /// The three-way handshake completed.
    ///
    /// RFC 6298 §5.7: if the timer expired awaiting the ACK of a SYN and the RTO is below
    /// 3 s, the RTO MUST be re-initialised to 3 s when data transmission begins. Applies only
    /// when no valid sample was taken since.
    pub fn on_handshake_complete(&mut self) {
        if self.timed_out_before_sample && self.srtt.is_none() {
            self.backoff = 0;
            self.base_rto = Self::clamp(&self.cfg, self.base_rto.max(self.cfg.syn_timeout_rto));
        }
        self.timed_out_before_sample = false;
    }

    /// RFC 6298 §2.2 / §2.3 update with gains alpha = 1/(8n), beta = 1/(4n).
    fn on_sample(&mut self, rtt: Duration, n: u32) {
        let r = rtt.micros();
        let n = u128::from(n);
        match self.srtt {
            None => {
                // RFC 6298 §2.2: SRTT <- R, RTTVAR <- R/2.
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                // RFC 6298 §2.3: RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|, using the
                // SRTT from before this sample ...
                let diff = u128::from(srtt.abs_diff(r));
                let (old_var, old_srtt, r) =
                    (u128::from(self.rttvar), u128::from(srtt), u128::from(r));
                // ... then SRTT <- (1 - alpha) * SRTT + alpha * R'. The common n = 1 (the
                // standard gains 1/4 and 1/8) divides by constants, which are shifts; the
                // general case is a 128-bit division.
                let (rttvar, srtt) = if n == 1 {
                    ((old_var * 3 + diff) / 4, (old_srtt * 7 + r) / 8)
                } else {
                    let (b, a) = (4 * n, 8 * n);
                    ((old_var * (b - 1) + diff) / b, (old_srtt * (a - 1) + r) / a)
                };
                self.rttvar = u64::try_from(rttvar).unwrap_or(u64::MAX);
                self.srtt = Some(u64::try_from(srtt).unwrap_or(u64::MAX));
            }
        }
        let srtt = Duration::from_micros(self.srtt.unwrap_or(r));
        // RFC 6298 §2.2/§2.3: RTO <- SRTT + max (G, K*RTTVAR).
        let var = Duration::from_micros(self.rttvar.saturating_mul(K)).max(self.cfg.granularity);
        self.base_rto = Self::clamp(&self.cfg, srtt.saturating_add(var));
        // A valid sample ends the backoff: the new RTO replaces the backed-off one
        // (RFC 6298 §5 note on Karn's algorithm: keep the backed-off RTO until a valid sample).
        self.backoff = 0;
        self.timed_out_before_sample = false;
    }

    fn clamp(cfg: &RttConfig, rto: Duration) -> Duration {
        // RFC 6298 §2.4: whenever RTO is computed, if it is less than the minimum, round it
        // up (1 s in the RFC; `min_rto` here, see RttConfig). §2.5: cap at the maximum.
        rto.max(cfg.min_rto).min(cfg.max_rto.max(cfg.min_rto))
    }
}

/// RFC 7323 Appendix G: ExpectedSamples = ceiling(FlightSize / (SMSS * 2)), at least 1.
pub fn expected_samples(flight_size: u32, smss: u32) -> u32 {
    let per = u64::from(smss.max(1)) * 2;
    u32::try_from(u64::from(flight_size).div_ceil(per))
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn est() -> RttEstimator {
        RttEstimator::new(RttConfig::default())
    }

    #[test]
    fn initial_rto_is_one_second() {
        let e = est();
        assert_eq!(e.rto(), Duration::from_secs(1));
        assert_eq!(e.srtt(), None);
    }

    #[test]
    fn first_sample_rfc6298_2_2() {
        let mut e = est();
        e.on_timestamp_sample(ms(100), 1);
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), ms(50));
        // 100 + 4*50 = 300 ms
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn subsequent_sample_rfc6298_2_3() {
        let mut e = est();
        e.on_timestamp_sample(ms(100), 1);
        e.on_timestamp_sample(ms(200), 1);
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn min_rto_and_granularity_rfc6298_2_4() {
        let mut e = est();
        for _ in 0..50 {
            e.on_timestamp_sample(ms(1), 1);
        }
        assert_eq!(e.rto(), ms(200));
        let cfg = RttConfig {
            min_rto: Duration::ZERO,
            granularity: ms(10),
            ..RttConfig::default()
        };
        let mut e = RttEstimator::new(cfg);
        for _ in 0..200 {
            e.on_timestamp_sample(ms(5), 1);
        }
        // RTTVAR decays to 0: RTO = SRTT + G.
        assert_eq!(e.rto(), ms(15));
        let cfg = RttConfig {
            min_rto: Duration::from_secs(1),
            ..RttConfig::default()
        };
        let mut e = RttEstimator::new(cfg);
        e.on_timestamp_sample(ms(10), 1);
        assert_eq!(e.rto(), Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_caps_and_resets_rfc6298_5_5() {
        let mut e = est();
        e.on_timestamp_sample(ms(100), 1);
        let mut expect = ms(300);
        for i in 1..20 {
            e.on_timeout();
            expect = expect.saturating_mul(2).min(Duration::from_secs(60));
            assert_eq!(e.rto(), expect, "after {i} timeouts");
        }
        assert_eq!(e.rto(), Duration::from_secs(60));
        assert!(e.backoff() < 20);
        e.on_timestamp_sample(ms(100), 1);
        assert_eq!(e.backoff(), 0);
        assert!(e.rto() < Duration::from_secs(1));
    }

    #[test]
    fn karn_timed_segment() {
        let mut e = est();
        let t0 = Instant::from_millis(1000);
        e.start_timing(SeqNumber(1100), t0);
        e.start_timing(SeqNumber(2100), t0 + ms(5)); // ignored: one per RTT
        assert_eq!(e.on_ack(SeqNumber(1000), t0 + ms(40)), None);
        assert_eq!(e.on_ack(SeqNumber(1100), t0 + ms(50)), Some(ms(50)));
        assert_eq!(e.srtt(), Some(ms(50)));
        assert!(!e.is_timing());
        // A retransmission invalidates the running measurement.
        e.start_timing(SeqNumber(3100), t0 + ms(60));
        e.on_retransmit();
        assert_eq!(e.on_ack(SeqNumber(3100), t0 + ms(900)), None);
        assert_eq!(e.srtt(), Some(ms(50)));
        // A timeout keeps the backed-off RTO until a valid sample.
        e.start_timing(SeqNumber(4100), t0 + ms(1000));
        e.on_timeout();
        let backed = e.rto();
        assert_eq!(e.on_ack(SeqNumber(4100), t0 + ms(2000)), None);
        assert_eq!(e.rto(), backed);
        assert_eq!(e.backoff(), 1);
    }

    #[test]
    fn sequence_wraparound_timing() {
        let mut e = est();
        let t0 = Instant::from_millis(1);
        e.start_timing(SeqNumber(10), t0);
        assert_eq!(e.on_ack(SeqNumber(u32::MAX - 5), t0 + ms(1)), None);
        assert_eq!(e.on_ack(SeqNumber(20), t0 + ms(7)), Some(ms(7)));
    }

    #[test]
    fn syn_timeout_sets_three_seconds_rfc6298_5_7() {
        let mut e = est();
        e.on_timeout(); // SYN lost
        assert_eq!(e.rto(), Duration::from_secs(2));
        e.on_handshake_complete();
        assert_eq!(e.rto(), Duration::from_secs(3));
        assert_eq!(e.backoff(), 0);
        // Without a lost SYN nothing changes.
        let mut e = est();
        e.on_handshake_complete();
        assert_eq!(e.rto(), Duration::from_secs(1));
    }

    #[test]
    fn appendix_g_gains() {
        assert_eq!(expected_samples(0, 1460), 1);
        assert_eq!(expected_samples(2920, 1460), 1);
        assert_eq!(expected_samples(2921, 1460), 2);
        assert_eq!(expected_samples(u32::MAX, 0), u32::MAX / 2 + 1);
        let mut e = est();
        e.on_timestamp_sample(ms(100), 4);
        e.on_timestamp_sample(ms(200), 4);
        // SRTT moves by (200-100)/32 instead of /8.
        assert_eq!(e.srtt(), Some(Duration::from_micros(103_125)));
    }

    proptest! {
        #[test]
        fn rto_stays_in_bounds(events in proptest::collection::vec(
            prop_oneof![
                (0u64..120_000_000, 1u32..64).prop_map(|(r, n)| (0u8, r, n)),
                Just((1u8, 0, 0)),
                Just((2u8, 0, 0)),
            ], 0..200)) {
            let cfg = RttConfig::default();
            let mut e = RttEstimator::new(cfg);
            for (kind, r, n) in events {
                match kind {
                    0 => e.on_timestamp_sample(Duration::from_micros(r), n),
                    1 => e.on_timeout(),
                    _ => e.on_handshake_complete(),
                }
                prop_assert!(e.rto() >= cfg.min_rto);
                prop_assert!(e.rto() <= cfg.max_rto);
                if let Some(s) = e.srtt() {
                    prop_assert!(s <= Duration::from_micros(120_000_000));
                }
            }
        }
    }
}
