//! Scenario 7 of issue 6, hostile segments: crafted frames from the peer's side of the link,
//! one of each kind, against connections our stack holds with the kernel.
//!
//! Our raw sender ([`super::rawsend`]) sits on the kernel side's veth (`io-linux`) and
//! writes frames that claim to come from the kernel (its MAC, 10.0.0.1 and the port of one
//! of its connections to us); it also reads what arrives there, so our stack's answers are
//! seen on the wire. The kernel peer runs with `tcp_timestamps = 0`: with timestamps in
//! effect, RFC 7323 §3.2 has a segment without a TSopt silently dropped, so every crafted
//! segment would have to carry a fresh TSval, and the checks below would test PAWS instead
//! of what they name.
//!
//! ## What is sent, and what must happen
//! Sequence numbers are taken from our own last segment on the connection (its SEQ is our
//! SND.NXT, its ACK our RCV.NXT). For each kind: the frame goes out, our stack is driven
//! until it has taken the frame in (its `frames_in` counter moves), then the answer, or its
//! absence, is checked on the wire, and the counter the kind belongs under must have moved
//! by exactly one.
//!
//! | kind | expected (RFC) | counter |
//! |---|---|---|
//! | RST in window, not at RCV.NXT | challenge ACK (5961 §3.2) | `challenge_acks` |
//! | RST out of window | nothing (5961 §3.2) | `out_of_window` |
//! | SYN in window, SYN out of window | challenge ACK (5961 §4.2) | `challenge_acks` |
//! | data out of window, old duplicate data | ACK (9293 §3.10.7.4) | `out_of_window` |
//! | ACK of data never sent | ACK (5961 §5.2) | `out_of_window` |
//! | bad TCP checksum, bad IPv4 checksum | nothing | `bad_checksum` |
//! | TCP data offset 0, 4, 15 (beyond the segment) | nothing | `malformed` |
//! | TCP option of length 0, 1, overrunning the header | nothing | `malformed` |
//! | runt frames (Ethernet header only; IPv4 + 6 bytes of TCP) | nothing | `malformed` |
//! | IPv4 total length beyond the frame | nothing | `malformed` |
//! | IPv4 with options (out-of-window data) | ACK (options skipped) | `out_of_window` |
//! | IPv4 first fragment, later fragment | nothing (no reassembly) | `not_for_us` |
//! | ACK for no connection | RST (9293 §3.10.7.1) | `rst_sent` |
//! | RST at exactly RCV.NXT (second connection) | connection reset (5961 §3.2) | `rst_received` |
//! | zero-length frame, 10-byte frame, frames beyond the MTU | refused by `AF_PACKET` | — |
//!
//! The in-window variants of the broken frames carry 100 bytes of data at RCV.NXT: if our
//! stack took any of them in, the surviving connection's stream would hold those bytes and
//! its byte-exact check would fail. After all of them: the surviving connection carries
//! `bytes` each way, byte for byte, and so do two fresh connections (we connect, the kernel
//! connects); the reset one reads as reset.
//!
//! ## What it does not do
//! Frames larger than the MTU cannot be written with `AF_PACKET` (`EMSGSIZE`): they are
//! reported as refused, not sent another way. No timestamps (see above), no IPv4
//! reassembly tests (our stack has none).

use super::rawsend::{broken, RawSocket, Seen, Tcp4, ACK, PSH, RST, SYN};
use super::{
    exchange, size_text, KernelPeer, Lab, LinkKind, Ours, Outcome, Record, Role, Streams,
    DEV_LINUX, LINUX, OURS, OUR_PORT,
};
use crate::netns;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tcp_core::Counters;

/// Longest wait for our stack to take a frame in, or to answer it.
const WAIT: Duration = Duration::from_secs(5);
/// How long the wire is watched for an answer that must not come, once the frame was
/// taken in (an answer goes out in the same pass of the stack).
const QUIET: Duration = Duration::from_millis(150);
/// Bytes of data in the in-window crafted segments.
const DATA: usize = 100;
/// A port our stack does not listen on.
const CLOSED_PORT: u16 = 5999;

/// Scenario 7: every hostile kind against our stack, then `bytes` each way on the
/// surviving connection and on two fresh ones. Figure: kinds sent, answered as expected,
/// counted.
pub fn hostile(bytes: u64, seed: u64) -> Record {
    Record::from_result("hostile", hostile_inner(bytes, seed))
}

/// What must come back for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// An ACK (no SYN, no RST) on the connection from `port`, acknowledging RCV.NXT.
    Ack,
    /// A RST to the sender's port.
    Rst,
    /// Nothing at all.
    Nothing,
    /// Nothing, and the connection is reset.
    Reset,
    /// `AF_PACKET` refuses to send it (if it does send it, it must not reach our stack
    /// uncounted).
    Refused,
}

/// One crafted kind.
struct Kind {
    name: &'static str,
    frame: Vec<u8>,
    /// The kernel port of the connection it targets.
    port: u16,
    expect: Expect,
    /// The counter it belongs under (`None`: not expected to reach our stack).
    counter: Option<&'static str>,
}

/// What happened to one kind.
#[derive(Debug)]
struct Verdict {
    name: &'static str,
    answered: bool,
    counted: bool,
    note: String,
}

/// A counter of [`Counters`] by name (the names the table above uses).
fn counter(c: &Counters, name: &str) -> u64 {
    match name {
        "challenge_acks" => c.challenge_acks,
        "out_of_window" => c.out_of_window,
        "bad_checksum" => c.bad_checksum,
        "malformed" => c.malformed,
        "not_for_us" => c.not_for_us,
        "rst_sent" => c.rst_sent,
        "rst_received" => c.rst_received,
        _ => u64::MAX,
    }
}

/// The wire as the raw sender sees it: our stack's frames arriving on `io-linux`.
struct Wire {
    raw: RawSocket,
    ours_mac: [u8; 6],
    linux_mac: [u8; 6],
    buf: Vec<u8>,
    /// Every TCP segment from our stack, in arrival order.
    log: Vec<Seen>,
}

impl Wire {
    /// Reads every frame waiting on the socket, keeping our stack's TCP segments.
    fn drain(&mut self) -> io::Result<()> {
        while let Some(r) = self.raw.recv(&mut self.buf, Duration::ZERO)? {
            if r.outgoing {
                continue;
            }
            if let Some(s) = Seen::parse(&self.buf[..r.len]) {
                if s.src_mac == self.ours_mac && s.src == OURS {
                    self.log.push(s);
                }
            }
        }
        Ok(())
    }

    /// Our SND.NXT and RCV.NXT on the connection from the kernel's `port`, as our last
    /// segment on it says.
    fn numbers(&self, port: u16) -> Option<(u32, u32)> {
        let s = self.log.iter().rev().find(|s| s.dst_port == port)?;
        let len = s.payload as u32 + u32::from(s.has(SYN)) + u32::from(s.flags & 1 != 0);
        Some((s.seq.wrapping_add(len), s.ack))
    }

    /// A segment of the kernel's connection from `port` to our listener.
    fn segment(&self, port: u16, seq: u32, ack: u32, flags: u8) -> Tcp4 {
        Tcp4::new(
            self.linux_mac,
            self.ours_mac,
            LINUX,
            OURS,
            port,
            OUR_PORT,
            seq,
            ack,
            flags,
        )
    }
}

/// Runs our stack (run-to-completion: it runs inside our calls) for one short turn and
/// reads the wire.
fn pump(ours: &mut Ours, wire: &mut Wire) -> Result<(), String> {
    ours.ctx
        .epoll_wait(ours.ep, &mut ours.events, 1)
        .map_err(|e| format!("epoll_wait: {e}"))?;
    wire.drain().map_err(|e| format!("raw socket: {e}"))
}

/// A kernel client connected to our listener, waiting to be told what to do: `Some(peer)`
/// runs that exchange on the connection, `None` drops it.
struct KernelConn {
    port: u16,
    go: mpsc::Sender<Option<KernelPeer>>,
    thread: JoinHandle<io::Result<Option<Streams>>>,
}

/// Connects a kernel client to our listener and accepts it on our side.
fn kernel_conn(
    lab: &Lab,
    ours: &mut Ours,
    wire: &mut Wire,
) -> Result<(KernelConn, mtcp_api::Fd), String> {
    let (port_tx, port_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<Option<KernelPeer>>();
    let thread = netns::spawn_in(lab.linux_ns(), move || -> io::Result<Option<Streams>> {
        let to = SocketAddr::V4(SocketAddrV4::new(OURS, OUR_PORT));
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        let _ = port_tx.send(stream.local_addr()?.port());
        match go_rx.recv() {
            Ok(Some(peer)) => peer.exchange(stream).map(Some),
            _ => Ok(None),
        }
    });
    let thread = std::thread::spawn(move || {
        thread
            .join()
            .map_err(|_| io::Error::other("a linux peer thread panicked"))??
    });
    let fd = ours.accept(Instant::now() + Duration::from_secs(15))?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(15))
        .map_err(|_| "the kernel client did not connect".to_string())?;
    // Our SYN-ACK is on the wire by now; read it (our numbers on the connection).
    let deadline = Instant::now() + WAIT;
    while wire.numbers(port).is_none() {
        if Instant::now() >= deadline {
            return Err(format!("our SYN-ACK to port {port} never seen on the wire"));
        }
        pump(ours, wire)?;
    }
    Ok((KernelConn { port, go, thread }, fd))
}

/// The kinds against the connection from `port` (numbers `snd_nxt`, `rcv_nxt` of ours).
fn kinds(wire: &Wire, port: u16) -> Result<Vec<Kind>, String> {
    let (snd, rcv) = wire
        .numbers(port)
        .ok_or_else(|| format!("no segment of ours on the connection from {port}"))?;
    let far = rcv.wrapping_add(0x4000_0000);
    let seg = |seq: u32, flags: u8| wire.segment(port, seq, snd, flags);
    let data = |seq: u32| {
        let mut s = seg(seq, ACK | PSH);
        s.payload = vec![0xa5; DATA];
        s
    };
    let kind = |name, frame, expect, counter| Kind {
        name,
        frame,
        port,
        expect,
        counter,
    };
    let with_options = |opts: Vec<u8>| {
        let mut s = data(rcv);
        s.tcp_options = opts;
        s.frame()
    };
    let mut ip_opts = data(far);
    ip_opts.ip_options = vec![0x94, 0x04, 0x00, 0x00]; // Router Alert (RFC 2113)
    let mut first_frag = data(rcv);
    first_frag.more_fragments = true;
    first_frag.ident = 0x4242;
    let mut later_frag = data(rcv);
    later_frag.fragment_offset = 185;
    later_frag.ident = 0x4242;
    let mut no_conn = wire.segment(port, 1, 12_345, ACK);
    no_conn.dst_port = CLOSED_PORT;
    let good = data(rcv).frame();
    let mut oversized = data(rcv);
    oversized.payload = vec![0x5a; 1500 - 40 + 1];
    let mut jumbo = data(rcv);
    jumbo.payload = vec![0x5a; 9000 - 40];
    let runt_tcp = broken::truncated(broken::total_length(good.clone(), 26), 14 + 26);
    Ok(vec![
        kind(
            "rst-in-window",
            seg(rcv.wrapping_add(1), RST).frame(),
            Expect::Ack,
            Some("challenge_acks"),
        ),
        kind(
            "rst-out-of-window",
            seg(far, RST).frame(),
            Expect::Nothing,
            Some("out_of_window"),
        ),
        kind(
            "syn-in-window",
            seg(rcv.wrapping_add(1), SYN).frame(),
            Expect::Ack,
            Some("challenge_acks"),
        ),
        kind(
            "syn-out-of-window",
            seg(far, SYN).frame(),
            Expect::Ack,
            Some("challenge_acks"),
        ),
        kind(
            "data-out-of-window",
            data(far).frame(),
            Expect::Ack,
            Some("out_of_window"),
        ),
        kind(
            "data-old-duplicate",
            data(rcv.wrapping_sub(DATA as u32)).frame(),
            Expect::Ack,
            Some("out_of_window"),
        ),
        kind(
            "ack-of-unsent-data",
            wire.segment(port, rcv, snd.wrapping_add(100_000), ACK)
                .frame(),
            Expect::Ack,
            Some("out_of_window"),
        ),
        kind(
            "bad-tcp-checksum",
            broken::tcp_checksum(good.clone()),
            Expect::Nothing,
            Some("bad_checksum"),
        ),
        kind(
            "bad-ipv4-checksum",
            broken::ip_checksum(good.clone()),
            Expect::Nothing,
            Some("bad_checksum"),
        ),
        kind(
            "data-offset-0",
            broken::data_offset(good.clone(), 0),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "data-offset-4",
            broken::data_offset(good.clone(), 4),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "data-offset-beyond",
            broken::data_offset(good.clone(), 15),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "option-length-0",
            with_options(vec![30, 0, 1, 1]),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "option-length-1",
            with_options(vec![30, 1, 1, 1]),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "option-overrun",
            with_options(vec![1, 1, 30, 12]),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "runt-ethernet-only",
            broken::truncated(good.clone(), 14),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "runt-tcp-6-bytes",
            runt_tcp,
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "ipv4-length-beyond-frame",
            broken::total_length(good.clone(), 1500),
            Expect::Nothing,
            Some("malformed"),
        ),
        kind(
            "ipv4-options",
            ip_opts.frame(),
            Expect::Ack,
            Some("out_of_window"),
        ),
        kind(
            "ipv4-first-fragment",
            first_frag.frame(),
            Expect::Nothing,
            Some("not_for_us"),
        ),
        kind(
            "ipv4-later-fragment",
            later_frag.frame(),
            Expect::Nothing,
            Some("not_for_us"),
        ),
        kind(
            "ack-no-connection",
            no_conn.frame(),
            Expect::Rst,
            Some("rst_sent"),
        ),
        kind("zero-length-frame", Vec::new(), Expect::Refused, None),
        kind(
            "runt-10-bytes",
            broken::truncated(good.clone(), 10),
            Expect::Refused,
            None,
        ),
        kind("oversized-mtu+1", oversized.frame(), Expect::Refused, None),
        kind("oversized-9000", jumbo.frame(), Expect::Refused, None),
    ])
}

/// Sends one kind and checks what follows.
fn try_kind(ours: &mut Ours, wire: &mut Wire, k: &Kind, rcv_nxt: u32) -> Result<Verdict, String> {
    wire.drain().map_err(|e| e.to_string())?;
    let before = ours.stats().endpoint;
    let mark = wire.log.len();
    let mut v = Verdict {
        name: k.name,
        answered: false,
        counted: false,
        note: String::new(),
    };
    if let Err(e) = wire.raw.send(&k.frame) {
        v.answered = k.expect == Expect::Refused;
        v.counted = k.counter.is_none();
        v.note = format!("refused by AF_PACKET ({e})");
        return Ok(v);
    }
    // Until our stack has taken the frame in (or, for the kinds AF_PACKET may let
    // through but the link may not carry, a while).
    let deadline = Instant::now() + WAIT;
    while ours.stats().endpoint.frames_in == before.frames_in {
        if Instant::now() >= deadline {
            if k.expect == Expect::Refused {
                v.answered = true;
                v.counted = true;
                v.note = "sent, never reached our stack".into();
            } else {
                v.note = "never reached our stack".into();
            }
            return Ok(v);
        }
        pump(ours, wire)?;
    }
    let answer = |s: &Seen| match k.expect {
        Expect::Ack => {
            s.dst_port == k.port && s.has(ACK) && s.flags & (SYN | RST) == 0 && s.ack == rcv_nxt
        }
        Expect::Rst => s.has(RST),
        _ => true,
    };
    let until = Instant::now()
        + match k.expect {
            Expect::Ack | Expect::Rst => WAIT,
            _ => QUIET,
        };
    while Instant::now() < until && !wire.log[mark..].iter().any(answer) {
        pump(ours, wire)?;
    }
    let after = ours.stats().endpoint;
    let got: Vec<&Seen> = wire.log[mark..].iter().collect();
    v.answered = match k.expect {
        Expect::Ack | Expect::Rst => got.iter().any(|s| answer(s)),
        _ => got.is_empty(),
    };
    if !v.answered {
        v.note = format!(
            "answered {:?}",
            got.iter()
                .map(|s| format!("flags {:#04x} seq {} ack {}", s.flags, s.seq, s.ack))
                .collect::<Vec<_>>()
        );
    }
    match k.counter {
        Some(name) => {
            let d = counter(&after, name).wrapping_sub(counter(&before, name));
            v.counted = d == 1;
            if !v.counted {
                v.note = format!("{} {name} +{d}", v.note).trim().to_string();
            }
        }
        None => {
            v.note = "sent and reached our stack".into();
            v.counted = after.malformed > before.malformed;
        }
    }
    Ok(v)
}

fn hostile_inner(bytes: u64, seed: u64) -> Outcome {
    let fail = |e: String| (format!("failed: {e}"), String::new());
    let mut lab =
        Lab::new("hostile", LinkKind::Clean, seed, None).map_err(|e| fail(e.to_string()))?;
    lab.linux_sysctl("net/ipv4/tcp_timestamps", "0")
        .map_err(|e| fail(e.to_string()))?;
    let config = lab.our_config(seed, "").map_err(fail)?;
    let mut ours = Ours::new(&lab, &config).map_err(fail)?;
    ours.listen(OUR_PORT).map_err(fail)?;
    let raw = netns::spawn_in(lab.linux_ns(), || RawSocket::open(DEV_LINUX))
        .join()
        .map_err(|_| fail("raw socket thread panicked".into()))?
        .and_then(|r| r)
        .map_err(|e| fail(format!("raw socket on {DEV_LINUX}: {e}")))?;
    let mut wire = Wire {
        raw,
        ours_mac: lab.ours_mac,
        linux_mac: lab.linux_mac,
        buf: vec![0; 16 * 1024],
        log: Vec::new(),
    };
    let r = attack(&lab, &mut ours, &mut wire, bytes, seed);
    let stats = ours.stats();
    drop(ours);
    let relay = lab.stop_relay();
    let mut detail = match &r {
        Ok((_, d)) | Err((_, d)) => d.clone(),
    };
    match relay {
        Ok(r) => detail.push_str(&format!(
            "\nrelay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => detail.push_str(&format!("\nrelay failed: {e}")),
    }
    let c = stats.endpoint;
    detail.push_str(&format!(
        "\nour stack: {stats}\nour counters: challenge ACKs {}, out of window {}, bad checksum \
         {}, malformed {}, not for us {}, RST sent {}, RST received {}",
        c.challenge_acks,
        c.out_of_window,
        c.bad_checksum,
        c.malformed,
        c.not_for_us,
        c.rst_sent,
        c.rst_received
    ));
    match r {
        Ok((figure, _)) => Ok((figure, detail)),
        Err((figure, _)) => Err((figure, detail)),
    }
}

fn attack(lab: &Lab, ours: &mut Ours, wire: &mut Wire, bytes: u64, seed: u64) -> Outcome {
    let fail = |e: String| (format!("failed: {e}"), String::new());
    let (survivor, fd_a) = kernel_conn(lab, ours, wire).map_err(fail)?;
    let (victim, fd_b) = kernel_conn(lab, ours, wire).map_err(fail)?;
    let mut verdicts = Vec::new();
    for k in kinds(wire, survivor.port).map_err(fail)? {
        let (_, rcv) = wire.numbers(survivor.port).unwrap_or_default();
        verdicts.push(try_kind(ours, wire, &k, rcv).map_err(fail)?);
    }
    // RFC 5961 §3.2: "If the RST bit is set and the sequence number exactly matches the
    // next expected sequence number (RCV.NXT), then TCP MUST reset the connection."
    let (_, rcv_b) = wire
        .numbers(victim.port)
        .ok_or_else(|| fail("no segment of ours on the second connection".into()))?;
    let rst = Kind {
        name: "rst-at-rcv-nxt",
        frame: wire.segment(victim.port, rcv_b, 0, RST).frame(),
        port: victim.port,
        expect: Expect::Reset,
        counter: Some("rst_received"),
    };
    let mut v = try_kind(ours, wire, &rst, rcv_b).map_err(fail)?;
    let mut buf = [0u8; 64];
    match ours.ctx.read(fd_b, &mut buf) {
        Err(mtcp_api::Error::ConnectionReset) => {}
        other => {
            v.answered = false;
            v.note = format!("{} read after the RST: {other:?}", v.note);
        }
    }
    verdicts.push(v);
    let _ = ours.ctx.close(fd_b);
    let _ = victim.go.send(None);
    let _ = victim.thread.join();

    let mut detail: Vec<String> = verdicts
        .iter()
        .map(|v| {
            format!(
                "{:<26} {} {} {}",
                v.name,
                if v.answered { "as-expected" } else { "WRONG" },
                if v.counted { "counted" } else { "NOT-COUNTED" },
                v.note
            )
        })
        .collect();
    let n = verdicts.len();
    let answered = verdicts.iter().filter(|v| v.answered).count();
    let counted = verdicts.iter().filter(|v| v.counted).count();

    // The surviving connection, then two fresh ones, byte for byte.
    let mut failures: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.answered || !v.counted)
        .map(|v| format!("{}: {}", v.name, v.note))
        .collect();
    let kinds_failed = failures.len();
    let peer = KernelPeer::bulk(bytes, seed ^ 0x5355_5256);
    let _ = survivor.go.send(Some(peer));
    let deadline = super::deadline_for(bytes);
    let mine = ours.exchange(fd_a, bytes, seed, deadline);
    ours.drive_until_finished(&survivor.thread, deadline);
    let theirs = survivor
        .thread
        .join()
        .map_err(|_| "the linux peer panicked".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match (mine, theirs) {
        (Ok(m), Ok(Some(t))) => match super::check(&m, &t, bytes) {
            Ok(()) => detail.push(format!(
                "surviving connection: {} each way, byte-exact",
                size_text(bytes)
            )),
            Err(e) => failures.push(format!("surviving connection: {e}")),
        },
        (m, t) => failures.push(format!("surviving connection: ours {m:?}, linux {t:?}")),
    }
    for (i, role) in [Role::Client, Role::Server].into_iter().enumerate() {
        match exchange(lab, ours, role, bytes, seed.wrapping_add(7 + i as u64)) {
            Ok(x) => detail.push(format!("fresh connection: {x}")),
            Err(e) => failures.push(format!("fresh connection ({role:?}): {e}")),
        }
    }
    let figure = format!(
        "{n} kinds sent: {answered} answered as expected, {counted} counted; surviving and 2 \
         fresh connections {}",
        if failures.len() > kinds_failed {
            "FAILED"
        } else {
            "byte-exact"
        }
    );
    if failures.is_empty() {
        Ok((figure, detail.join("\n")))
    } else {
        Err((
            format!("{figure}; {}", failures.join("; ")),
            detail.join("\n"),
        ))
    }
}
