//! RFC 9293 §3.10.7: every state × {SYN, SYN-ACK, ACK, data, FIN, RST} (table driven), then
//! the handshakes, simultaneous open and close, half-close, the RST rules and the listen
//! backlog.

use crate::harness::*;
use tcp_core::{CloseReason, Duration, Event, SocketError, State};

/// The six kinds of segment the matrix sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn,
    SynAck,
    Ack,
    Data,
    Fin,
    Rst,
}

const KINDS: [Kind; 6] = [
    Kind::Syn,
    Kind::SynAck,
    Kind::Ack,
    Kind::Data,
    Kind::Fin,
    Kind::Rst,
];

const TEN: &[u8] = b"0123456789";

/// Where the script stands in a state: the next sequence number it sends (`rcv`, the stack's
/// RCV.NXT), the stack's SND.NXT (`snd`), the sequence number of a SYN that makes sense in
/// this state, and of its FIN (a retransmission once the stack has received it).
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub rcv: u32,
    pub snd: u32,
    pub syn_seq: u32,
    pub fin_seq: u32,
}

fn peer(full: bool) -> PeerOpts {
    if full {
        PeerOpts::full()
    } else {
        PeerOpts::plain()
    }
}

/// A harness in `state`, with plain segments or with every option (`full`).
pub fn setup(state: State, full: bool) -> (H, Ctx) {
    let mut cfg = if full { cfg_full() } else { cfg_plain() };
    cfg.tcp.delayed_ack = None;
    let p = peer(full);
    let mut h = H::new(cfg);
    let ctx = |rcv, snd, syn_seq, fin_seq| Ctx {
        rcv,
        snd,
        syn_seq,
        fin_seq,
    };
    let c = match state {
        State::Closed => ctx(0, 5000, 0, 0),
        State::Listen => {
            h.listen(16);
            ctx(0, 5000, 0, 0)
        }
        State::SynSent => {
            h.connect(0);
            ctx(0, 1, 0, 0)
        }
        State::SynReceived => {
            h.listen(16);
            h.send(0, Seg::syn(0).with_opts(p));
            h.expect(&[Exp::synack(0, 1)]);
            h.auto_ts = full;
            ctx(1, 1, 0, 1)
        }
        State::Established => {
            h.passive_open(0, p);
            ctx(1, 1, 1, 1)
        }
        State::FinWait1 => {
            h.passive_open(0, p);
            h.shutdown();
            h.expect(&[Exp::fin(1, 1)]);
            ctx(1, 2, 1, 1)
        }
        State::FinWait2 => {
            h.passive_open(0, p);
            h.shutdown();
            h.expect(&[Exp::fin(1, 1)]);
            h.send(1, Seg::ack(1, 2));
            h.expect_nothing();
            ctx(1, 2, 1, 1)
        }
        State::CloseWait => {
            h.passive_open(0, p);
            h.send(1, Seg::fin(1, 1));
            h.expect(&[Exp::ack(1, 2)]);
            ctx(2, 1, 2, 1)
        }
        State::Closing => {
            h.passive_open(0, p);
            h.shutdown();
            h.expect(&[Exp::fin(1, 1)]);
            h.send(1, Seg::fin(1, 1));
            h.expect(&[Exp::ack(2, 2)]);
            ctx(2, 2, 2, 1)
        }
        State::LastAck => {
            h.passive_open(0, p);
            h.send(1, Seg::fin(1, 1));
            h.expect(&[Exp::ack(1, 2)]);
            h.shutdown();
            h.expect(&[Exp::fin(1, 2)]);
            ctx(2, 2, 2, 1)
        }
        State::TimeWait => {
            h.passive_open(0, p);
            h.shutdown();
            h.expect(&[Exp::fin(1, 1)]);
            h.send(1, Seg::ack(1, 2));
            h.send(1, Seg::fin(1, 2));
            h.expect(&[Exp::ack(2, 2)]);
            ctx(2, 2, 2, 1)
        }
    };
    if !matches!(state, State::Closed | State::Listen) {
        assert_eq!(conn_state(&h), Some(state), "setup of {state}");
    }
    (h, c)
}

/// The state of the (only) connection in the table, `None` if there is none or it is
/// CLOSED.
pub fn conn_state(h: &H) -> Option<State> {
    h.ep.connections()
        .map(|i| i.state)
        .find(|s| *s != State::Closed)
}

fn segment(kind: Kind, state: State, c: Ctx, full: bool) -> Seg {
    let opening = matches!(state, State::Closed | State::Listen | State::SynSent);
    let with = |s: Seg| if opening { s.with_opts(peer(full)) } else { s };
    match kind {
        Kind::Syn => with(Seg::syn(c.syn_seq)),
        Kind::SynAck => with(Seg::synack(c.syn_seq, c.snd)),
        Kind::Ack => Seg::ack(c.rcv, c.snd),
        Kind::Data => Seg::data(c.rcv, c.snd, TEN),
        Kind::Fin => Seg::fin(c.fin_seq, c.snd),
        Kind::Rst => Seg::rst(c.rcv),
    }
}

/// What RFC 9293 (with RFC 5961, RFC 1337 and RFC 6191) says the stack answers, and the
/// state it is in afterwards (`None`: no connection left).
fn expected(state: State, kind: Kind, c: Ctx, full: bool) -> (Vec<Exp>, Option<State>) {
    use Kind::*;
    use State::*;
    // <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, RCV.NXT advanced by `n`.
    let ack = |n: u32| vec![Exp::ack(c.snd, c.rcv + n)];
    let none = Vec::new();
    match (state, kind) {
        // §3.10.7.1 CLOSED: "If the ACK bit is off, sequence number zero is used,
        // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. If the ACK bit is on,
        // <SEQ=SEG.ACK><CTL=RST>." A RST is discarded.
        (Closed, Syn) => (vec![Exp::rstack(0, 1)], None),
        (Closed | Listen, SynAck | Ack | Data | Fin) => (vec![Exp::rst(c.snd)], None),
        (Closed | Listen, Rst) => (none, None),
        // §3.10.7.2 LISTEN: a SYN gets <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>.
        (Listen, Syn) => (vec![Exp::synack(0, 1)], Some(SynReceived)),
        // §3.10.7.3 SYN-SENT: a SYN without ACK is a simultaneous open; an acceptable
        // SYN-ACK completes the handshake; anything without SYN or RST is dropped, and a
        // RST without ACK too.
        (SynSent, Syn) => (vec![Exp::synack(0, 1)], Some(SynReceived)),
        (SynSent, SynAck) => (vec![Exp::ack(1, 1)], Some(Established)),
        (SynSent, Ack | Data | Fin | Rst) => (none, Some(SynSent)),
        // SYN-RECEIVED: the retransmitted SYN gets the SYN-ACK again; an in-window SYN a
        // challenge ACK (RFC 5961 §4.2); the ACK completes the handshake.
        (SynReceived, Syn) => (vec![Exp::synack(0, 1)], Some(SynReceived)),
        (SynReceived, SynAck) => (ack(0), Some(SynReceived)),
        (SynReceived, Ack) => (none, Some(Established)),
        (SynReceived, Data) => (ack(10), Some(Established)),
        (SynReceived, Fin) => (ack(1), Some(CloseWait)),
        // RFC 6191: with timestamps, a newer SYN reuses the TIME-WAIT 4-tuple.
        (TimeWait, Syn) if full => (vec![Exp::synack(0, c.rcv + 1)], Some(SynReceived)),
        // RFC 5961 §4.2: a SYN in a synchronized state gets a challenge ACK.
        (_, Syn | SynAck) => (ack(0), Some(state)),
        // RFC 5961 §3.2: a RST at exactly RCV.NXT resets, except in TIME-WAIT (RFC 1337).
        (TimeWait, Rst) => (none, Some(TimeWait)),
        (_, Rst) => (none, None),
        (Established | CloseWait, Ack) => (none, Some(state)),
        (Established, Data) => (ack(10), Some(Established)),
        (Established, Fin) => (ack(1), Some(CloseWait)),
        // FIN-WAIT-1: the ACK of our FIN → FIN-WAIT-2; with the peer's FIN → TIME-WAIT.
        (FinWait1 | FinWait2, Ack) => (none, Some(FinWait2)),
        (FinWait1 | FinWait2, Data) => (ack(10), Some(FinWait2)),
        (FinWait1 | FinWait2, Fin) => (ack(1), Some(TimeWait)),
        // After the peer's FIN, text is ignored (and acknowledged); a retransmitted FIN is
        // acknowledged.
        (CloseWait, Data | Fin) => (ack(0), Some(CloseWait)),
        (Closing, Ack) => (none, Some(TimeWait)),
        (Closing, Data) => (ack(0), Some(TimeWait)),
        (Closing, Fin) => (ack(0), Some(Closing)),
        (LastAck, Ack | Data) => (none, None),
        (LastAck, Fin) => (ack(0), Some(LastAck)),
        (TimeWait, Ack) => (none, Some(TimeWait)),
        (TimeWait, Data | Fin) => (ack(0), Some(TimeWait)),
    }
}

/// Runs the six segment kinds against `state`, plain and with every option; panics listing
/// every cell that disagrees.
fn matrix(state: State) {
    let mut failures = Vec::new();
    for full in [false, true] {
        for kind in KINDS {
            let (mut h, c) = setup(state, full);
            let (exp, next) = expected(state, kind, c, full);
            if state == State::TimeWait && kind == Kind::Syn && full {
                h.reset_flow();
            }
            h.send(10, segment(kind, state, c, full));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                h.expect(&exp);
            }));
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "?".into());
                failures.push(format!("{state} × {kind:?} (options: {full}):\n{msg}"));
                continue;
            }
            let got = conn_state(&h);
            if got != next {
                failures.push(format!(
                    "{state} × {kind:?} (options: {full}): state {got:?}, expected {next:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn matrix_closed() {
    matrix(State::Closed);
}

#[test]
fn matrix_listen() {
    matrix(State::Listen);
}

#[test]
fn matrix_syn_sent() {
    matrix(State::SynSent);
}

#[test]
fn matrix_syn_received() {
    matrix(State::SynReceived);
}

#[test]
fn matrix_established() {
    matrix(State::Established);
}

#[test]
fn matrix_fin_wait_1() {
    matrix(State::FinWait1);
}

#[test]
fn matrix_fin_wait_2() {
    matrix(State::FinWait2);
}

#[test]
fn matrix_close_wait() {
    matrix(State::CloseWait);
}

#[test]
fn matrix_closing() {
    matrix(State::Closing);
}

#[test]
fn matrix_last_ack() {
    matrix(State::LastAck);
}

#[test]
fn matrix_time_wait() {
    matrix(State::TimeWait);
}

// ---------------------------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------------------------

#[test]
fn three_way_handshake_passive() {
    let mut h = H::plain();
    let l = h.listen(4);
    h.send(0, Seg::syn(0).with_opts(PeerOpts::plain()));
    h.expect(&[Exp::synack(0, 1).mss(Some(1460)).win(65_535)]);
    assert_eq!(h.ep.accept(l), Err(SocketError::WouldBlock));
    h.send(1, Seg::ack(1, 1));
    h.expect_nothing();
    let ev = h.events();
    let c = h.ep.accept(l).unwrap();
    assert_eq!(
        ev,
        vec![Event::Accepted {
            listener: l,
            conn: c
        }]
    );
    h.conn = Some(c);
    assert_eq!(h.state(), State::Established);
}

#[test]
fn three_way_handshake_active() {
    let mut h = H::plain();
    let syn = h.connect(0);
    assert_eq!(syn.opts.mss, Some(1460));
    assert_eq!(h.state(), State::SynSent);
    h.send(5, Seg::synack(0, 1).with_opts(PeerOpts::plain()));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.state(), State::Established);
    let c = h.c();
    assert_eq!(h.events(), vec![Event::Connected(c), Event::Writable(c)]);
}

/// RFC 9293 §3.5 Figure 7: both sides send SYN; each answers the other's SYN with a
/// SYN-ACK, and the peer's SYN-ACK (line 6) moves us to ESTABLISHED.
#[test]
fn simultaneous_open() {
    let mut h = H::plain();
    h.connect(0);
    // Line 3: the peer's SYN crosses ours.
    h.send(1, Seg::syn(0).with_opts(PeerOpts::plain()));
    // Line 5: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>.
    h.expect(&[Exp::synack(0, 1)]);
    assert_eq!(h.state(), State::SynReceived);
    // Line 6: <SEQ=300><ACK=101><CTL=SYN,ACK> arrives: ESTABLISHED.
    h.send(2, Seg::synack(0, 1).with_opts(PeerOpts::plain()));
    let out = h.take();
    assert!(
        out.iter()
            .all(|g| g.flags == ACK && g.seq == 1 && g.ack == 1),
        "at most a pure ACK: {out:?}"
    );
    assert_eq!(h.state(), State::Established);
    let c = h.c();
    assert!(h.events().contains(&Event::Connected(c)));
    // Data flows.
    h.send(3, Seg::data(1, 1, TEN));
    h.expect(&[Exp::ack(1, 11)]);
    assert_eq!(h.read(), TEN);
}

/// RFC 9293 §3.10.7.3, SYN-SENT, fourth: a crossing SYN that carries text: "queue them for
/// processing after the ESTABLISHED state has been reached". The SYN-ACK acknowledges the
/// SYN only, nothing is readable in SYN-RECEIVED, and once the handshake completes the text
/// is read and acknowledged (FreeBSD's rcv-syn-with-data-syn-sent script, too).
#[test]
fn simultaneous_open_with_data_in_the_syn() {
    let mut cfg = cfg_plain();
    cfg.tcp.delayed_ack = Some(Duration::from_millis(200));
    let mut h = H::new(cfg);
    h.connect(0);
    h.send(1, Seg::syn(0).with_opts(PeerOpts::plain()).payload(b"abc"));
    h.expect(&[Exp::synack(0, 1)]);
    assert_eq!(h.state(), State::SynReceived);
    assert!(h.read().is_empty(), "nothing readable before ESTABLISHED");
    // The peer counts its text as sent: its ACK comes at 4.
    h.send(2, Seg::ack(4, 1));
    assert_eq!(h.state(), State::Established);
    assert_eq!(h.read(), b"abc");
    // Acknowledged like an in-order segment: by the delayed ACK, or by the next segment we
    // send (here our FIN) if that comes first.
    h.expect_nothing();
    h.close();
    h.expect(&[Exp::fin(1, 4)]);
    // The peer's FIN after its text.
    h.send(3, Seg::fin(4, 2));
    h.expect(&[Exp::ack(2, 5)]);
}

/// RFC 9293 §3.6 Figure 13: both FINs cross; CLOSING, then TIME-WAIT, then CLOSED. The
/// peer's FIN is acknowledged with a plain ACK at SND.NXT (§3.10.7.4 eighth), without
/// resending our FIN as FreeBSD does.
#[test]
fn simultaneous_close() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    assert_eq!(h.state(), State::FinWait1);
    h.send(1, Seg::fin(1, 1));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::Closing);
    h.send(2, Seg::ack(2, 2));
    h.expect_nothing();
    assert_eq!(h.state(), State::TimeWait);
    h.idle(60_000);
    assert_eq!(h.state(), State::Closed);
    h.expect_nothing();
}

#[test]
fn active_close_fin_wait_1_fin_wait_2_time_wait_closed() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.close();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(1, Seg::ack(1, 2));
    h.expect_nothing();
    assert_eq!(h.ep.connections().next().unwrap().state, State::FinWait2);
    h.send(2, Seg::fin(1, 2));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.ep.connections().next().unwrap().state, State::TimeWait);
    h.at(2 + 59_999);
    assert_eq!(h.ep.connection_count(), 2, "listener and the TIME-WAIT TCB");
    h.at(2 + 60_000);
    assert_eq!(h.ep.connection_count(), 1, "only the listener");
    h.expect_nothing();
}

#[test]
fn passive_close_close_wait_last_ack_closed() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::fin(1, 1));
    h.expect(&[Exp::ack(1, 2)]);
    assert_eq!(h.state(), State::CloseWait);
    let c = h.c();
    assert!(h.events().contains(&Event::PeerClosed(c)));
    assert_eq!(h.ep.recv(c, &mut [0; 10]), Ok(0));
    h.shutdown();
    h.expect(&[Exp::fin(1, 2)]);
    assert_eq!(h.state(), State::LastAck);
    h.send(2, Seg::ack(2, 2));
    h.expect_nothing();
    assert_eq!(h.state(), State::Closed);
    assert!(h.events().contains(&Event::Closed(c, CloseReason::Normal)));
}

#[test]
fn half_close_we_keep_sending_after_the_peers_fin() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::fin(1, 1));
    h.expect(&[Exp::ack(1, 2)]);
    h.write(b"late reply");
    h.expect(&[Exp::data(1, 2, b"late reply")]);
    h.send(2, Seg::ack(2, 11));
    h.write(b"more");
    h.expect(&[Exp::data(11, 2, b"more")]);
    assert_eq!(h.state(), State::CloseWait);
}

#[test]
fn half_close_we_keep_receiving_after_our_fin() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.shutdown();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(1, Seg::ack(1, 2));
    assert_eq!(h.state(), State::FinWait2);
    for i in 0..3u32 {
        h.send(2 + u64::from(i), Seg::data(1 + 10 * i, 2, TEN));
        h.expect(&[Exp::ack(2, 11 + 10 * i)]);
    }
    assert_eq!(h.read(), TEN.repeat(3));
    assert_eq!(h.ep.send(h.c(), b"x"), Err(SocketError::Shutdown));
    h.send(9, Seg::fin(31, 2));
    h.expect(&[Exp::ack(2, 32)]);
    assert_eq!(h.state(), State::TimeWait);
}

// ---------------------------------------------------------------------------------------------
// RST rules
// ---------------------------------------------------------------------------------------------

/// RFC 9293 §3.10.7: a RST is never answered, whatever the state and whatever it carries.
#[test]
fn rst_is_never_answered_with_a_rst() {
    for state in State::ALL {
        for seq in [0u32, 1, 2, 1000, 0x8000_0000] {
            for flags in [RST, RST | ACK, RST | SYN, RST | FIN, RST | ACK | PSH] {
                let (mut h, c) = setup(state, false);
                let seg = Seg::new(flags, seq, c.snd.wrapping_add(seq)).payload(b"x");
                h.send(10, seg);
                let out = h.take();
                assert!(
                    out.iter().all(|g| !g.flags.contains(RST)),
                    "{state}: {flags:?} seq {seq} answered with {out:?}"
                );
                assert!(h.counters().rst_sent == 0);
            }
        }
    }
}

/// RFC 9293 §3.10.7.1: "If the ACK bit is off, ... <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>";
/// with ACK, "<SEQ=SEG.ACK><CTL=RST>".
#[test]
fn rst_for_segments_to_a_closed_port() {
    let mut h = H::plain();
    h.send(0, Seg::new(FIN, 7, 0).payload(b"abc"));
    h.expect(&[Exp::rstack(0, 7 + 3 + 1)]);
    h.send(1, Seg::data(3, 0xdead, b"abc"));
    h.expect(&[Exp::rst(0xdead)]);
    h.send(2, Seg::new(TcpFlags::EMPTY, 3, 0));
    h.expect(&[Exp::rstack(0, 3)]);
    assert_eq!(h.counters().rst_sent, 3);
}

use tcp_core::wire::TcpFlags;

/// RFC 9293 §3.10.7.3: in SYN-SENT, "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset
/// <SEQ=SEG.ACK><CTL=RST>" (unless it carries RST), and stay in SYN-SENT.
#[test]
fn rst_for_an_unacceptable_ack_in_syn_sent() {
    let mut h = H::plain();
    h.connect(0);
    h.send(1, Seg::synack(0, 2));
    h.expect(&[Exp::rst(2)]);
    h.send(2, Seg::ack(0, 0));
    h.expect(&[Exp::rst(0)]);
    h.send(3, Seg::rstack(0, 5));
    h.expect_nothing();
    assert_eq!(h.state(), State::SynSent);
    h.send(4, Seg::synack(0, 1));
    h.expect(&[Exp::ack(1, 1)]);
}

/// RFC 9293 §3.10.7.4 fifth, SYN-RECEIVED: "If the segment acknowledgment is not acceptable,
/// form a reset segment <SEQ=SEG.ACK><CTL=RST> and send it."
#[test]
fn rst_for_an_unacceptable_ack_in_syn_received() {
    let mut h = H::plain();
    h.listen(4);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    h.send(1, Seg::ack(1, 77));
    h.expect(&[Exp::rst(77)]);
    assert_eq!(conn_state(&h), Some(State::SynReceived));
    h.send(2, Seg::ack(1, 1));
    h.expect_nothing();
    assert_eq!(conn_state(&h), Some(State::Established));
}

/// RFC 9293 §3.10.7.3: "If the RST bit is set, If the ACK was acceptable, then signal to the
/// user 'error: connection reset', drop the segment, enter CLOSED state".
#[test]
fn rst_ack_in_syn_sent_refuses_the_connection() {
    let mut h = H::plain();
    h.connect(0);
    h.send(1, Seg::rstack(0, 1));
    h.expect_nothing();
    assert_eq!(h.state(), State::Closed);
    let c = h.c();
    let ev = h.events();
    assert!(
        ev.contains(&Event::Closed(c, CloseReason::Refused)),
        "{ev:?}"
    );
    assert_eq!(h.ep.send(c, b"x"), Err(SocketError::ConnectionRefused));
    assert_eq!(h.counters().rst_received, 1);
}

/// RFC 9293 §3.10.7.3: a RST without ACK in SYN-SENT is dropped ("Otherwise (no ACK), drop
/// the segment and return").
#[test]
fn rst_without_ack_in_syn_sent_is_ignored() {
    let mut h = H::plain();
    h.connect(0);
    h.send(1, Seg::rst(0));
    h.expect_nothing();
    assert_eq!(h.state(), State::SynSent);
}

/// RFC 9293 §3.10.7.4 second, SYN-RECEIVED: "If this connection was initiated with a passive
/// OPEN (i.e., came from the LISTEN state), then return this connection to LISTEN state".
#[test]
fn rst_in_syn_received_returns_to_listen() {
    let mut h = H::plain();
    h.listen(4);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    h.send(1, Seg::rst(1));
    h.expect_nothing();
    assert_eq!(conn_state(&h), None);
    assert_eq!(h.ep.connection_count(), 1, "only the listener");
    // The listener still answers.
    h.reset_flow();
    h.send(2, Seg::syn(100));
    h.expect(&[Exp::synack(0, 101)]);
}

/// RFC 5961 §3.2 with RCV.WND capped at what the window field can say (RFC 7323 §2.3):
/// without window scaling, a receive buffer larger than 65 535 does not widen the window, so
/// a RST at RCV.NXT + 65 535 in SYN-RECEIVED is outside it and silently dropped (no challenge
/// ACK), and the handshake then completes.
#[test]
fn rst_beyond_the_advertisable_window_is_dropped_in_syn_received() {
    let mut cfg = cfg_plain();
    cfg.tcp.recv_buffer = 128 * 1024;
    let mut h = H::new(cfg);
    h.listen(4);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).win(65_535)]);
    h.send(100, Seg::rst(1 + 65_535));
    h.expect_nothing();
    assert_eq!(h.counters().challenge_acks, 0);
    h.send(200, Seg::ack(1, 1));
    h.send(200, Seg::fin(1, 1));
    h.expect(&[Exp::ack(1, 2)]);
}

/// RFC 9293 §3.10.7.4: in TIME-WAIT, a FIN without the ACK bit inside the receive window
/// (the peer's FIN does not shrink RCV.WND) is acceptable and then dropped by "fifth, if
/// the ACK bit is off drop the segment and return": no ACK, no restart of 2·MSL. One outside
/// the window is unacceptable and gets its ACK from the first check.
#[test]
fn fin_without_ack_in_the_window_is_dropped_in_time_wait() {
    let (mut h, c) = setup(State::TimeWait, false);
    h.send(10, Seg::new(FIN, c.rcv + 1, 0));
    h.expect_nothing();
    h.send(11, Seg::new(FIN, c.rcv - 1, 0));
    h.expect(&[Exp::ack(c.snd, c.rcv)]);
    assert_eq!(conn_state(&h), Some(State::TimeWait));
}

/// RFC 9293 §3.10.7.4 fifth, TIME-WAIT ("the only thing that can arrive ... is a
/// retransmission of the remote FIN. Acknowledge it"): an ACK inside the window but not at
/// RCV.NXT is acknowledged; a duplicate ACK at RCV.NXT is not.
#[test]
fn unexpected_ack_in_the_window_is_acknowledged_in_time_wait() {
    let (mut h, c) = setup(State::TimeWait, false);
    h.send(10, Seg::ack(c.rcv, c.snd));
    h.expect_nothing();
    h.send(11, Seg::ack(c.rcv + 1, c.snd));
    h.expect(&[Exp::ack(c.snd, c.rcv)]);
    assert_eq!(conn_state(&h), Some(State::TimeWait));
}

/// RFC 1122 §4.2.3.9 / RFC 5461 §4: an ICMP port unreachable (a hard error) quoting our SYN
/// aborts the connection in SYN-SENT as refused — only if the quoted sequence number is in
/// SND.UNA..SND.NXT (RFC 5927 §4.1); a soft error (time exceeded) is ignored.
#[test]
fn icmp_hard_error_in_syn_sent_refuses_the_connection() {
    let mut h = H::plain();
    h.connect(0);
    let c = h.c();
    for bad in [u32::MAX, 1] {
        let f = h.icmp_error(3, 3, bad);
        h.at(10);
        h.raw(&f);
        assert_eq!(
            h.state(),
            State::SynSent,
            "quoted seq {bad} is outside SND.UNA..SND.NXT"
        );
    }
    let f = h.icmp_error(11, 0, 0);
    h.raw(&f);
    assert_eq!(h.state(), State::SynSent, "time exceeded is a soft error");
    let f = h.icmp_error(3, 3, 0);
    h.raw(&f);
    h.expect_nothing();
    assert!(h.events().contains(&Event::Closed(c, CloseReason::Refused)));
    assert_eq!(h.counters().icmp_errors, 4);
}

/// `drop_syn_fin` (off by default): a SYN+FIN is dropped unanswered in LISTEN and in
/// SYN-SENT (where the SYN is then retransmitted); without it, a SYN+FIN at a listener is
/// answered as a SYN.
#[test]
fn syn_fin_is_dropped_when_configured() {
    let mut cfg = cfg_plain();
    cfg.tcp.drop_syn_fin = true;
    let mut h = H::new(cfg.clone());
    h.listen(4);
    h.send(0, Seg::syn(0).flags(SYN | FIN));
    h.expect_nothing();
    assert_eq!(h.counters().syn_fin_dropped, 1);
    h.send(1, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);

    let mut h = H::new(cfg);
    h.connect(0);
    h.send(10, Seg::syn(0).flags(SYN | FIN));
    h.expect_nothing();
    assert_eq!(h.state(), State::SynSent);
    assert_eq!(h.wake(), 1000);
    assert_eq!(h.take()[0].flags, SYN, "the SYN is retransmitted");

    let mut h = H::new(cfg_plain());
    h.listen(4);
    h.send(0, Seg::syn(0).flags(SYN | FIN));
    h.expect(&[Exp::synack(0, 1)]);
}

/// RFC 9293 §3.10.7.4 second, LAST-ACK: an acceptable RST closes the connection; our FIN
/// was never acknowledged, so the application is told of the reset (not a normal close).
#[test]
fn rst_in_last_ack_closes_with_a_reset() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::fin(1, 1));
    h.expect(&[Exp::ack(1, 2)]);
    h.shutdown();
    h.expect(&[Exp::fin(1, 2)]);
    let c = h.c();
    h.send(2, Seg::rst(2));
    h.expect_nothing();
    assert!(h.events().contains(&Event::Closed(c, CloseReason::Reset)));
}

/// RFC 1337 §3 (fix F1), the documented choice: a RST in TIME-WAIT is ignored.
#[test]
fn rst_in_time_wait_is_ignored() {
    let (mut h, c) = setup(State::TimeWait, false);
    h.send(10, Seg::rst(c.rcv));
    h.expect_nothing();
    assert_eq!(h.state(), State::TimeWait);
    assert_eq!(h.counters().rst_received, 0);
}

/// RFC 9293 §3.10.7.4 first: "If an incoming segment is not acceptable, an acknowledgment
/// should be sent in reply ... <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>".
#[test]
fn unacceptable_segment_gets_an_ack() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::data(1, 1, TEN));
    h.expect(&[Exp::ack(1, 11)]);
    // Old duplicate.
    h.send(2, Seg::data(1, 1, TEN));
    h.expect(&[Exp::ack(1, 11)]);
    // Beyond the window.
    h.send(3, Seg::data(11 + 70_000, 1, TEN));
    h.expect(&[Exp::ack(1, 11)]);
    assert_eq!(h.read(), TEN);
    assert!(h.counters().out_of_window >= 2);
}

/// RFC 9293 §3.10.7.4 first: a zero-length segment at RCV.NXT-1 is not acceptable even
/// when its ACK field acknowledges our FIN: it is answered with an ACK and dropped, so LAST-ACK
/// stays until an acceptable ACK arrives (FreeBSD processes the ACK; the conformance
/// corpus lists those scripts as differing).
#[test]
fn ack_of_a_segment_below_rcv_nxt_is_not_processed_in_last_ack() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::fin(1, 1));
    h.expect(&[Exp::ack(1, 2)]);
    h.shutdown();
    h.expect(&[Exp::fin(1, 2)]);
    h.send(2, Seg::ack(1, 2));
    h.expect(&[Exp::ack(2, 2)]);
    assert_eq!(h.state(), State::LastAck);
    h.send(3, Seg::ack(2, 2));
    h.expect_nothing();
    assert_eq!(h.state(), State::Closed);
}

/// RFC 9293 §3.10.7.4: a segment without ACK (and without SYN or RST) in a synchronized
/// state is dropped ("if the ACK bit is off, drop the segment and return").
#[test]
fn segment_without_ack_is_dropped_in_synchronized_states() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::new(PSH, 1, 0).payload(TEN));
    h.expect_nothing();
    assert_eq!(h.read(), b"");
}

/// RFC 2525 §2.17 (the documented choice): closing with unread data sends a RST.
#[test]
fn close_with_unread_data_sends_rst() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::data(1, 1, TEN));
    h.expect(&[Exp::ack(1, 11)]);
    h.close();
    h.expect(&[Exp::rst(1)]);
    assert_eq!(h.counters().aborts, 1);
    assert_eq!(conn_state(&h), None);
}

/// The documented choice: data arriving after `close` (nobody will read it) is answered
/// with a RST.
#[test]
fn data_after_close_sends_rst() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.close();
    h.expect(&[Exp::fin(1, 1)]);
    h.send(1, Seg::data(1, 2, TEN));
    h.expect(&[Exp::rst(2)]);
    assert_eq!(conn_state(&h), None);
}

/// RFC 9293 §3.10.5 ABORT: "<SEQ=SND.NXT><CTL=RST>".
#[test]
fn abort_sends_rst_at_snd_nxt() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(b"abc");
    h.expect(&[Exp::data(1, 1, b"abc")]);
    h.abort();
    h.expect(&[Exp::rst(4)]);
    assert_eq!(conn_state(&h), None);
    // Whatever the peer sends now meets a closed port.
    h.send(1, Seg::ack(1, 4));
    h.expect(&[Exp::rst(4)]);
}

/// RFC 9293 §3.10.5 ABORT in SYN-SENT: "Delete the TCB" — nothing is sent.
#[test]
fn abort_in_syn_sent_sends_nothing() {
    let mut h = H::plain();
    h.connect(0);
    h.abort();
    h.expect_nothing();
    h.idle(10_000);
    h.expect_nothing();
}

// ---------------------------------------------------------------------------------------------
// Listen backlog
// ---------------------------------------------------------------------------------------------

/// The accept queue holds `backlog` connections; further SYNs are dropped (and counted)
/// until the application accepts.
#[test]
fn listen_backlog_bounds_the_accept_queue() {
    let mut h = H::plain();
    let l = h.listen(2);
    for i in 0..2u16 {
        h.peer_port = PEER_PORT + i;
        h.send(0, Seg::syn(0));
        h.expect(&[Exp::synack(0, 1).port(PEER_PORT + i)]);
        h.send(1, Seg::ack(1, 1));
        h.expect_nothing();
    }
    h.peer_port = PEER_PORT + 2;
    h.send(2, Seg::syn(0));
    h.expect_nothing();
    assert_eq!(h.counters().accept_queue_full, 1);
    let first = h.ep.accept(l).unwrap();
    assert_eq!(h.ep.peer_addr(first).unwrap().port(), PEER_PORT);
    // Room again: the retransmitted SYN is answered.
    h.send(3, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1).port(PEER_PORT + 2)]);
}

#[test]
fn listen_rejects_a_port_in_use_and_a_zero_backlog() {
    let mut h = H::plain();
    h.listen(1);
    assert_eq!(h.ep.listen(PORT, 1), Err(SocketError::AddrInUse));
    assert_eq!(h.ep.listen(81, 0), Err(SocketError::InvalidArgument));
}

/// Closing a listener resets the connections nobody accepted.
#[test]
fn closing_a_listener_resets_unaccepted_connections() {
    let mut h = H::plain();
    let l = h.listen(4);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    h.send(1, Seg::ack(1, 1));
    h.expect_nothing();
    let now = h.now();
    h.ep.close(now, l).unwrap();
    h.expect(&[Exp::rst(1)]);
    assert_eq!(h.ep.connection_count(), 0);
    h.reset_flow();
    h.send(2, Seg::syn(0));
    h.expect(&[Exp::rstack(0, 1)]);
}

/// A handshake that completes after its listener was closed is reset, and counted as an
/// abort of the application's (not as a full accept queue).
#[test]
fn handshake_completing_after_its_listener_closed_is_reset() {
    let mut h = H::plain();
    let l = h.listen(4);
    h.send(0, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    let now = h.now();
    h.ep.close(now, l).unwrap();
    h.send(1, Seg::ack(1, 1));
    h.expect(&[Exp::rst(1)]);
    assert_eq!(h.counters().accept_queue_full, 0);
    assert_eq!(h.counters().aborts, 1);
}

// ---------------------------------------------------------------------------------------------
// Segment text, FIN and window processing (RFC 9293 §3.10.7.4)
// ---------------------------------------------------------------------------------------------

/// "seventh, process the segment text" and "eighth, check the FIN bit" in one segment: the
/// ACK covers the data and the FIN.
#[test]
fn data_with_fin_is_acknowledged_together() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::data(1, 1, TEN).flags(ACK | PSH | FIN));
    h.expect(&[Exp::ack(1, 12)]);
    assert_eq!(h.state(), State::CloseWait);
    assert_eq!(h.read(), TEN);
    assert_eq!(h.ep.recv(h.c(), &mut [0; 4]), Ok(0));
}

/// A FIN that arrives before the data in front of it waits for that data.
#[test]
fn out_of_order_fin_is_processed_when_the_gap_fills() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::fin(11, 1));
    h.expect(&[Exp::ack(1, 1)]);
    assert_eq!(h.state(), State::Established);
    h.send(2, Seg::data(1, 1, TEN));
    h.expect(&[Exp::ack(1, 12)]);
    assert_eq!(h.state(), State::CloseWait);
    assert_eq!(h.read(), TEN);
}

/// RFC 9293 §3.10.7.4: a segment that starts before RCV.NXT is trimmed; only the new octets
/// are delivered.
#[test]
fn partially_duplicate_segment_delivers_only_new_octets() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::data(1, 1, b"0123456789"));
    h.expect(&[Exp::ack(1, 11)]);
    h.send(2, Seg::data(6, 1, b"56789abcde"));
    h.expect(&[Exp::ack(1, 16)]);
    assert_eq!(h.read(), b"0123456789abcde");
}

/// RFC 9293 §3.10.7.3: "Data or controls that were queued for transmission may be
/// included" — and data in the SYN-ACK is delivered.
#[test]
fn data_in_the_syn_ack_is_delivered() {
    let mut h = H::plain();
    h.connect(0);
    h.send(1, Seg::synack(0, 1).payload(b"banner"));
    h.expect(&[Exp::ack(1, 7)]);
    assert_eq!(h.state(), State::Established);
    assert_eq!(h.read(), b"banner");
}

/// RFC 9293 §3.10.7.3: "If there are other controls or text in the segment, then continue
/// processing at the sixth step" — a FIN in the SYN-ACK closes the peer's side at once
/// (its sequence number follows the SYN's and the data's). It was taken for an
/// out-of-order FIN and dropped (found by fuzzing).
#[test]
fn fin_in_the_syn_ack_enters_close_wait() {
    let mut h = H::plain();
    h.connect(0);
    h.send(
        1,
        Seg::synack(0, 1).flags(TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN),
    );
    h.expect(&[Exp::ack(1, 2)]);
    assert_eq!(h.state(), State::CloseWait);
    assert_eq!(h.read(), b"");
    let mut h = H::plain();
    h.connect(0);
    h.send(
        1,
        Seg::synack(0, 1)
            .payload(b"bye")
            .flags(TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN),
    );
    h.expect(&[Exp::ack(1, 5)]);
    assert_eq!(h.state(), State::CloseWait);
    assert_eq!(h.read(), b"bye");
}

/// RFC 9293 §3.10.4 CLOSE in SYN-SENT/SYN-RECEIVED: "queue for processing after entering
/// ESTABLISHED state": the FIN follows the handshake.
#[test]
fn shutdown_before_the_handshake_completes_sends_fin_after_it() {
    let mut h = H::plain();
    h.connect(0);
    h.shutdown();
    h.expect_nothing();
    h.send(1, Seg::synack(0, 1));
    h.expect(&[Exp::fin(1, 1)]);
    assert_eq!(h.state(), State::FinWait1);
}

/// RFC 9293 §3.10.7.4, FIN-WAIT-1: only the ACK of the FIN itself moves to FIN-WAIT-2.
#[test]
fn fin_wait_1_waits_for_the_ack_of_the_fin_itself() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.write(TEN);
    h.expect(&[Exp::data(1, 1, TEN)]);
    h.shutdown();
    h.expect(&[Exp::fin(11, 1)]);
    h.send(1, Seg::ack(1, 11));
    assert_eq!(h.state(), State::FinWait1);
    h.send(2, Seg::ack(1, 12));
    assert_eq!(h.state(), State::FinWait2);
}

/// RFC 9293 §3.10.7.4 fifth: the send window is taken from a segment only if
/// "SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)": an older segment
/// arriving late does not roll the window back.
#[test]
fn window_update_follows_snd_wl1_and_snd_wl2() {
    let mut h = H::plain();
    h.passive_open(0, PeerOpts::plain());
    h.send(1, Seg::ack(1, 1).win(1000));
    assert_eq!(h.info().snd_wnd, 1000);
    // Out of order, newer: its window counts.
    h.send(2, Seg::data(11, 1, b"x").win(5000));
    h.take();
    assert_eq!(h.info().snd_wnd, 5000);
    // The older segment arrives late with the window it was sent with.
    h.send(3, Seg::data(1, 1, TEN).win(100));
    h.expect(&[Exp::ack(1, 12)]);
    assert_eq!(h.info().snd_wnd, 5000);
    // A newer segment with the same SEQ and a higher ACK does update it.
    h.write(b"abc");
    h.take();
    h.send(4, Seg::ack(12, 4).win(3000));
    assert_eq!(h.info().snd_wnd, 3000);
}

/// RFC 9293 §3.10.7.4 second, SYN-RECEIVED from an active open (simultaneous open): "If
/// this connection was initiated with an active OPEN (i.e., came from SYN-SENT state), then
/// the connection was refused".
#[test]
fn rst_in_syn_received_after_simultaneous_open_refuses() {
    let mut h = H::plain();
    h.connect(0);
    h.send(1, Seg::syn(0));
    h.expect(&[Exp::synack(0, 1)]);
    h.send(2, Seg::rst(1));
    h.expect_nothing();
    let c = h.c();
    assert_eq!(h.state(), State::Closed);
    assert!(h.events().contains(&Event::Closed(c, CloseReason::Refused)));
}

/// Sequence numbers are modular (RFC 9293 §3.4): a peer ISN of 0 or 2^32-1 is as good as
/// any.
#[test]
fn peer_isn_at_the_edges_of_the_sequence_space() {
    for isn in [0, u32::MAX, 0x8000_0000] {
        let mut h = H::plain();
        h.set_peer_isn(isn);
        h.passive_open(0, PeerOpts::plain());
        h.send(1, Seg::data(1, 1, TEN));
        h.expect(&[Exp::ack(1, 11)]);
        assert_eq!(h.read(), TEN);
    }
}
