//! Scenario 8 of issue 6, the soak: mixed traffic between our stack and the kernel's over a
//! lossy link for a while, every byte checked; afterwards our connection table and memory
//! must be back where they started.
//!
//! ## Traffic
//! For the soak's duration, at the same time, over [`LinkKind::Lossy`] (2 % loss, 1 %
//! reordering, 0.5 % duplication, 0.1 % corruption, both ways):
//! - short connections each way: [`Shape::short`] kernel clients keep connecting to our
//!   server, and as many of our clients to a kernel server; each connection is one
//!   request/response exchange of small (1 B–1 KiB, 70 %) or medium (1–64 KiB, 30 %)
//!   messages, and the last header says who closes first (half the connections each side,
//!   so both stacks pass through TIME-WAIT and through CLOSE-WAIT/LAST-ACK);
//! - long connections each way: [`Shape::long`] from each side, each a sequence of
//!   [`Shape::long_exchanges`] full-duplex exchanges of [`Shape::long_exchange`] bytes each
//!   way (then it closes and another starts), or fewer: at the end the exchange in progress
//!   is the last.
//!
//! When the time is up no new connection starts; the ones in flight finish (for at most
//! [`DRAIN`]; a connection still open then is a failure, as is one that makes no progress
//! for [`STALL`]).
//!
//! ## The protocol, checked byte for byte
//! A connection carries one or more exchanges. The client opens each with a 32-byte header
//! (magic, flags, seed, request length, response length) followed by the request; the
//! server answers with the response, after the whole request (request/response) or while
//! it still arrives (duplex). Request and response are seeded [`Pattern`] streams (`seed`
//! and `seed ^ RESPONSE`), which the receiver regenerates and compares with every byte it
//! reads: a mismatch, a short stream, an extra byte after the last exchange or an error
//! fails the connection. A transfer counts when the client has its last response and the
//! close it expected; the server's failures count as errors too.
//!
//! ## Two event loops, one state machine
//! The protocol is [`Party`], which reads and writes until the socket would block. Both sides
//! run it in an event loop ([`Side`]) over the socket interface of `mtcp-bench pingpong`
//! (`Net`: non-blocking sockets, connections registered edge-triggered): ours over one
//! run-to-completion mtcp-api context (one thread drives the stack and every connection
//! through its epoll: the stack runs only inside `epoll_wait`), the kernel's over Linux
//! sockets and Linux epoll in one thread of the kernel namespace.
//!
//! ## Afterwards
//! Both loops end, then our stack is driven until its table holds only the listener again
//! (TIME-WAIT is `time_wait_ms = 500` in the lab's configuration; at most [`SETTLE`]). The
//! checks:
//! - no failed transfer, and connections of all four kinds done;
//! - `StackStats::open` (tcp-core's table: every connection in any state, TIME-WAIT and
//!   embryonic ones included, and listeners) equal to its value before the soak;
//! - our stack's own heap accounting (`Context::memory_usage`: tcp-core's table and the
//!   buffers of its connections) within [`STACK_SLACK`] of its value before: the buffers
//!   are gone, and what stays is capacity kept for reuse (the slot vector, the pool of
//!   freed buffer storage, the TIME-WAIT table), which grows with the peak number of
//!   connections, not with time;
//! - the process's resident memory (VmRSS, after `malloc_trim` both times) within
//!   [`RSS_SLACK`] of its value before. It is the whole test process: both stacks, the
//!   relay, both event loops. The allocator keeps some freed memory in its per-thread
//!   arenas (`malloc_trim` returns only whole free pages), so the bound is not zero; a
//!   leak of a few hundred bytes per connection would pass it in 60 s but not in the 10
//!   minutes of the long run, where the stack's own accounting is the sharper check.
//!   The peak is `VmHWM` after resetting it (`/proc/self/clear_refs`) at the start.
//!
//! ## What it does not do
//! No timing assertions (transfers and goodput are printed, not checked); no abortive
//! closes (scenario 5's job); one core on our side.

use super::{verdict, Lab, LinkKind, Outcome, Pattern, Record, KERNEL_PORT, LINUX, OURS, OUR_PORT};
use crate::core_bench::{proc_kb, trim_heap, vm_rss};
use crate::netns;
use crate::pingpong::{LinuxNet, MtcpNet, Net, Ready};
use mtcp_api::{Context, Fd};
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How many connections of each kind run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Short connections in flight from each side's clients.
    pub short: usize,
    /// Long connections from each side's clients.
    pub long: usize,
    /// Bytes each way of one exchange of a long connection.
    pub long_exchange: u64,
    /// Exchanges of a long connection before it closes (and another starts).
    pub long_exchanges: u64,
}

impl Shape {
    /// What [`soak`] runs.
    pub const DEFAULT: Shape = Shape {
        short: 6,
        long: 2,
        long_exchange: 1 << 20,
        long_exchanges: 16,
    };
}

/// Longest the connections in flight at the end may take to finish.
pub const DRAIN: Duration = Duration::from_secs(60);
/// Longest a connection may go without moving a byte.
pub const STALL: Duration = Duration::from_secs(30);
/// Longest our table may take to return to its size before the soak, once both loops ended.
pub const SETTLE: Duration = Duration::from_secs(30);
/// How much more heap our stack's own accounting may hold after the soak than before.
pub const STACK_SLACK: u64 = 1 << 20;
/// How much more resident memory the process may hold after the soak than before.
pub const RSS_SLACK: u64 = 16 << 20;

/// Bytes of an exchange's header.
const HEADER: usize = 32;
/// The header's first four bytes.
const MAGIC: u32 = 0x534f_414b;
/// The response stream's seed is the request's with these bits flipped.
const RESPONSE: u64 = 0x5245_5350_4f4e_5345;
/// Largest request or response a header may announce.
const MAX_MESSAGE: u64 = 1 << 30;
/// Bytes of the pattern generated at a time (a multiple of 8: see [`Stream`]).
const FILL: usize = 16 * 1024;
/// Bytes per read call.
const READ: usize = 64 * 1024;
/// Listen backlog of both servers.
const BACKLOG: usize = 128;
/// Token of a side's listener.
const LISTENER: u64 = u64::MAX;
/// Error messages kept (all are counted).
const MESSAGES: usize = 12;

// ---------------------------------------------------------------------------------------------
// The protocol
// ---------------------------------------------------------------------------------------------

/// An end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Client,
    Server,
}

/// One exchange, as its header announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    seed: u64,
    request: u64,
    response: u64,
    /// The server answers while the request still arrives.
    duplex: bool,
    /// The connection's last exchange: who closes first after it.
    last: Option<End>,
}

impl Plan {
    fn encode(&self) -> [u8; HEADER] {
        let flags = u32::from(self.duplex)
            | match self.last {
                None => 0,
                Some(End::Client) => 2,
                Some(End::Server) => 6,
            };
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&flags.to_be_bytes());
        h[8..16].copy_from_slice(&self.seed.to_be_bytes());
        h[16..24].copy_from_slice(&self.request.to_be_bytes());
        h[24..32].copy_from_slice(&self.response.to_be_bytes());
        h
    }

    fn decode(h: &[u8; HEADER]) -> Result<Plan, String> {
        let u32_at = |i: usize| u32::from_be_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let (magic, flags) = (u32_at(0), u32_at(4));
        let plan = Plan {
            seed: u64_at(8),
            request: u64_at(16),
            response: u64_at(24),
            duplex: flags & 1 != 0,
            last: match flags >> 1 {
                0 => None,
                1 => Some(End::Client),
                3 => Some(End::Server),
                _ => return Err(format!("bad header flags {flags:#x}")),
            },
        };
        if magic != MAGIC || plan.request > MAX_MESSAGE || plan.response > MAX_MESSAGE {
            return Err(format!("bad header {h:02x?}"));
        }
        Ok(plan)
    }
}

/// splitmix64: the seeds and sizes of the traffic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Who closes first: each side half the time.
    fn closer(&mut self) -> End {
        if self.next() & 1 == 0 {
            End::Client
        } else {
            End::Server
        }
    }

    /// A short exchange: small or medium messages, request/response.
    fn short_plan(&mut self) -> Plan {
        let size = |r: &mut Rng| {
            if r.below(10) < 7 {
                1 + r.below(1024)
            } else {
                1025 + r.below(63 * 1024)
            }
        };
        Plan {
            seed: self.next(),
            request: size(self),
            response: size(self),
            duplex: false,
            last: Some(self.closer()),
        }
    }
}

/// A [`Pattern`] stream handed out a piece at a time. Pieces are generated in multiples of
/// 8 bytes, so the stream is the same however it is cut.
struct Stream {
    pattern: Pattern,
    buf: Vec<u8>,
    off: usize,
}

impl Stream {
    fn new(seed: u64) -> Stream {
        Stream {
            pattern: Pattern::new(seed),
            buf: Vec::new(),
            off: 0,
        }
    }

    /// The next bytes, at most `max` (at least one if `max > 0`).
    fn peek(&mut self, max: u64) -> &[u8] {
        if self.off == self.buf.len() {
            let n = (max.min(FILL as u64) as usize).next_multiple_of(8);
            self.buf.resize(n, 0);
            self.pattern.fill(&mut self.buf);
            self.off = 0;
        }
        let n = (self.buf.len() - self.off).min(max.min(FILL as u64) as usize);
        &self.buf[self.off..self.off + n]
    }

    fn consume(&mut self, n: usize) {
        self.off += n;
    }
}

/// What is left to write of an exchange: a header (the client's), then a stream.
struct Outgoing {
    header: [u8; HEADER],
    header_left: usize,
    body: Stream,
    left: u64,
}

impl Outgoing {
    fn new(header: Option<[u8; HEADER]>, seed: u64, len: u64) -> Outgoing {
        Outgoing {
            header: header.unwrap_or([0; HEADER]),
            header_left: if header.is_some() { HEADER } else { 0 },
            body: Stream::new(seed),
            left: len,
        }
    }

    fn pending(&mut self) -> &[u8] {
        if self.header_left > 0 {
            &self.header[HEADER - self.header_left..]
        } else {
            self.body.peek(self.left)
        }
    }

    fn advance(&mut self, n: usize) {
        if self.header_left > 0 {
            self.header_left -= n;
        } else {
            self.body.consume(n);
            self.left -= n as u64;
        }
    }

    fn done(&self) -> bool {
        self.header_left == 0 && self.left == 0
    }
}

/// What is left to read of an exchange, and the stream it must equal.
struct Incoming {
    expect: Stream,
    left: u64,
    got: u64,
}

impl Incoming {
    fn new(seed: u64, len: u64) -> Incoming {
        Incoming {
            expect: Stream::new(seed),
            left: len,
            got: 0,
        }
    }

    /// Compares `data` (at most `left` bytes) with the stream; the offset of the first
    /// byte that differs.
    fn check(&mut self, mut data: &[u8]) -> Result<(), u64> {
        while !data.is_empty() {
            let want = self.expect.peek(self.left);
            let n = want.len().min(data.len());
            if want[..n] != data[..n] {
                let i = (0..n).find(|&i| want[i] != data[i]).unwrap_or(0);
                return Err(self.got + i as u64);
            }
            self.expect.consume(n);
            self.left -= n as u64;
            self.got += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

/// Where a client's exchanges come from.
enum Script {
    /// A server: from the client's headers.
    Serve,
    /// A short connection: this one exchange.
    Once(Plan),
    /// A long connection: `left` duplex exchanges of `bytes` each way, or fewer: the one in
    /// progress at `end` is the last.
    Long {
        rng: Rng,
        bytes: u64,
        left: u64,
        end: Instant,
    },
}

impl Script {
    fn next(&mut self) -> Plan {
        match self {
            Script::Serve => unreachable!("a server's plans come from its client"),
            Script::Once(p) => *p,
            Script::Long {
                rng,
                bytes,
                left,
                end,
            } => {
                *left = left.saturating_sub(1);
                Plan {
                    seed: rng.next(),
                    request: *bytes,
                    response: *bytes,
                    duplex: true,
                    last: (*left == 0 || Instant::now() >= *end).then(|| rng.closer()),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A server waiting for the next header.
    Header,
    /// Sending and receiving the current exchange.
    Exchange,
    /// The last exchange is done and the peer closes first: only its FIN may come.
    AwaitEof,
}

/// One end of a connection running the protocol; reads and writes through a [`Net`] until
/// the socket would block.
struct Party {
    end: End,
    script: Script,
    phase: Phase,
    plan: Plan,
    out: Outgoing,
    inc: Incoming,
    header: [u8; HEADER],
    header_got: usize,
    /// Exchanges completed.
    exchanges: u64,
    /// Payload bytes of the exchanges completed, both ways.
    bytes: u64,
    /// Bytes read and written so far (progress, for the stall check).
    moved: u64,
}

impl Party {
    fn client(mut script: Script) -> Party {
        let plan = script.next();
        let mut p = Party::new(End::Client, script);
        p.start(plan);
        p
    }

    fn server() -> Party {
        Party::new(End::Server, Script::Serve)
    }

    fn new(end: End, script: Script) -> Party {
        Party {
            end,
            script,
            phase: Phase::Header,
            plan: Plan {
                seed: 0,
                request: 0,
                response: 0,
                duplex: false,
                last: None,
            },
            out: Outgoing::new(None, 0, 0),
            inc: Incoming::new(0, 0),
            header: [0; HEADER],
            header_got: 0,
            exchanges: 0,
            bytes: 0,
            moved: 0,
        }
    }

    fn start(&mut self, plan: Plan) {
        let response = plan.seed ^ RESPONSE;
        (self.out, self.inc) = match self.end {
            End::Client => (
                Outgoing::new(Some(plan.encode()), plan.seed, plan.request),
                Incoming::new(response, plan.response),
            ),
            End::Server => (
                Outgoing::new(None, response, plan.response),
                Incoming::new(plan.seed, plan.request),
            ),
        };
        self.plan = plan;
        self.phase = Phase::Exchange;
    }

    /// Which exchange, for messages.
    fn what(&self) -> String {
        let p = &self.plan;
        format!(
            "exchange {} ({} B request, {} B response{})",
            self.exchanges + 1,
            p.request,
            p.response,
            if p.duplex { ", duplex" } else { "" }
        )
    }

    /// How far it got, for messages.
    fn progress(&self) -> String {
        let (done, o, i) = (self.exchanges, &self.out, &self.inc);
        match self.phase {
            Phase::Header => format!(
                "{done} exchanges done, {} of {HEADER} header bytes of the next",
                self.header_got
            ),
            Phase::Exchange => format!(
                "{done} exchanges done; in {}: {} header and {} body bytes left to send, \
                 {} received and {} left",
                self.what(),
                o.header_left,
                o.left,
                i.got,
                i.left
            ),
            Phase::AwaitEof => format!("{done} exchanges done, waiting for the end of stream"),
        }
    }

    /// Goes as far as the socket lets it. `Ok(true)`: the connection is done, close it now.
    fn step<N: Net>(&mut self, net: &mut N, s: &N::Sock, buf: &mut [u8]) -> Result<bool, String> {
        loop {
            let mut moved = false;
            match self.phase {
                Phase::Header => match net.read(s, &mut self.header[self.header_got..]) {
                    Ok(0) => {
                        return Err(format!(
                            "end of stream after {} of {HEADER} header bytes of exchange {}",
                            self.header_got,
                            self.exchanges + 1
                        ))
                    }
                    Ok(n) => {
                        self.moved += n as u64;
                        self.header_got += n;
                        if self.header_got == HEADER {
                            self.header_got = 0;
                            self.start(Plan::decode(&self.header)?);
                        }
                        moved = true;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(format!("reading a header: {e}")),
                },
                Phase::Exchange => {
                    let may_write =
                        self.end == End::Client || self.plan.duplex || self.inc.left == 0;
                    while may_write && !self.out.done() {
                        match net.write(s, self.out.pending()) {
                            Ok(n) => {
                                self.out.advance(n);
                                self.moved += n as u64;
                                moved = true;
                            }
                            Err(e) if would_block(&e) => break,
                            Err(e) => return Err(format!("{}: write: {e}", self.what())),
                        }
                    }
                    while self.inc.left > 0 {
                        let n = buf.len().min(self.inc.left.min(usize::MAX as u64) as usize);
                        match net.read(s, &mut buf[..n]) {
                            Ok(0) => {
                                return Err(format!(
                                    "{}: end of stream after {} bytes",
                                    self.what(),
                                    self.inc.got
                                ))
                            }
                            Ok(n) => {
                                self.inc
                                    .check(&buf[..n])
                                    .map_err(|at| format!("{}: byte {at} differs", self.what()))?;
                                self.moved += n as u64;
                                moved = true;
                            }
                            Err(e) if would_block(&e) => break,
                            Err(e) => {
                                return Err(format!(
                                    "{}: read after {} bytes: {e}",
                                    self.what(),
                                    self.inc.got
                                ))
                            }
                        }
                    }
                    if self.out.done() && self.inc.left == 0 {
                        self.exchanges += 1;
                        self.bytes += self.plan.request + self.plan.response;
                        moved = true;
                        match self.plan.last {
                            Some(closer) if closer == self.end => return Ok(true),
                            Some(_) => self.phase = Phase::AwaitEof,
                            None if self.end == End::Server => self.phase = Phase::Header,
                            None => {
                                let plan = self.script.next();
                                self.start(plan);
                            }
                        }
                    }
                }
                Phase::AwaitEof => match net.read(s, buf) {
                    Ok(0) => return Ok(true),
                    Ok(n) => {
                        return Err(format!(
                            "{n} bytes after the last exchange, where the end of stream was due"
                        ))
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(format!("waiting for the end of stream: {e}")),
                },
            }
            if !moved {
                return Ok(false);
            }
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A [`Net`] that can name a connection's addresses (for messages).
trait Named: Net {
    fn addresses(&self, s: &Self::Sock) -> String;
}

impl Named for MtcpNet {
    fn addresses(&self, s: &Fd) -> String {
        match (self.ctx.local_addr(*s), self.ctx.peer_addr(*s)) {
            (Ok(l), Ok(p)) => format!("{l}->{p}"),
            _ => "(not connected)".into(),
        }
    }
}

impl Named for LinuxNet {
    fn addresses(&self, s: &OwnedFd) -> String {
        use nix::sys::socket::{getpeername, getsockname, SockaddrIn};
        match (
            getsockname::<SockaddrIn>(s.as_raw_fd()),
            getpeername::<SockaddrIn>(s.as_raw_fd()),
        ) {
            (Ok(l), Ok(p)) => format!("{l}->{p}"),
            (Ok(l), Err(_)) => format!("{l}->(not connected)"),
            _ => "(no address)".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The event loops
// ---------------------------------------------------------------------------------------------

/// Which stack a side runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Ours = 0,
    Linux = 1,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Ours => "ours",
            Who::Linux => "linux",
        }
    }

    fn other(self) -> Who {
        match self {
            Who::Ours => Who::Linux,
            Who::Linux => Who::Ours,
        }
    }
}

/// What both loops share: progress flags and the tally.
#[derive(Debug, Default)]
struct Shared {
    /// Per side: its clients have all ended after the end of the soak.
    clients_done: [AtomicBool; 2],
    /// Per side: its loop has returned.
    finished: [AtomicBool; 2],
    /// Connections done, per client side and kind (0 short, 1 long).
    done: [[AtomicU64; 2]; 2],
    /// Exchanges done (clients' count).
    exchanges: AtomicU64,
    /// Payload bytes of the connections done, both ways.
    bytes: AtomicU64,
    /// Failed connections (either end's failure counts).
    errors: AtomicU64,
    /// The first [`MESSAGES`] failures.
    messages: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut m = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() < MESSAGES {
            m.push(msg);
        }
    }
}

/// Marks a side finished (and its clients done) however its loop ends.
struct Finish<'a>(&'a Shared, Who);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.clients_done[self.1 as usize].store(true, Ordering::Release);
        self.0.finished[self.1 as usize].store(true, Ordering::Release);
    }
}

struct Conn<S> {
    sock: S,
    party: Party,
    /// 0 short, 1 long.
    kind: usize,
    id: u64,
    last_move: Instant,
    moved: u64,
}

struct Slot<S> {
    generation: u32,
    conn: Option<Conn<S>>,
}

/// One side's event loop: its server, its clients, one epoll instance.
struct Side<N: Named> {
    net: N,
    who: Who,
    /// The other side's server.
    peer: SocketAddrV4,
    listener: N::Sock,
    slots: Vec<Slot<N::Sock>>,
    free: Vec<usize>,
    live: usize,
    /// Our clients in flight, short and long.
    clients: [usize; 2],
    shape: Shape,
    rng: Rng,
    next_id: u64,
    buf: Vec<u8>,
    ready: Vec<Ready>,
    shared: Arc<Shared>,
}

impl<N: Named> Side<N> {
    fn new(
        mut net: N,
        who: Who,
        shape: Shape,
        seed: u64,
        shared: Arc<Shared>,
    ) -> io::Result<Side<N>> {
        let (port, peer) = match who {
            Who::Ours => (OUR_PORT, SocketAddrV4::new(LINUX, KERNEL_PORT)),
            Who::Linux => (KERNEL_PORT, SocketAddrV4::new(OURS, OUR_PORT)),
        };
        let listener = net.listen(port, BACKLOG, LISTENER)?;
        Ok(Side {
            net,
            who,
            peer,
            listener,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            clients: [0; 2],
            shape,
            rng: Rng(seed ^ (who as u64 + 1).wrapping_mul(0x736f_616b)),
            next_id: 0,
            buf: vec![0; READ],
            ready: Vec::new(),
            shared,
        })
    }

    fn token(&self, i: usize) -> u64 {
        u64::from(self.slots[i].generation) << 32 | i as u64
    }

    fn alloc(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                conn: None,
            });
            self.slots.len() - 1
        })
    }

    fn release(&mut self, i: usize) {
        self.slots[i].generation = self.slots[i].generation.wrapping_add(1);
        self.free.push(i);
    }

    fn add(&mut self, i: usize, sock: N::Sock, party: Party, kind: usize) {
        self.next_id += 1;
        self.live += 1;
        self.slots[i].conn = Some(Conn {
            sock,
            party,
            kind,
            id: self.next_id,
            last_move: Instant::now(),
            moved: 0,
        });
        // Edge-triggered: what was ready before the registration is taken now.
        self.drive(i);
    }

    /// Starts a client connection of `kind` (0 short, 1 long).
    fn open(&mut self, kind: usize, end: Instant) {
        let i = self.alloc();
        let script = if kind == 0 {
            Script::Once(self.rng.short_plan())
        } else {
            Script::Long {
                rng: Rng(self.rng.next()),
                bytes: self.shape.long_exchange,
                left: self.shape.long_exchanges,
                end,
            }
        };
        match self.net.connect(self.peer, self.token(i)) {
            Ok(sock) => {
                self.clients[kind] += 1;
                self.add(i, sock, Party::client(script), kind);
            }
            Err(e) => {
                self.release(i);
                self.shared
                    .fail(format!("{} connect to {}: {e}", self.who.name(), self.peer));
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let i = self.alloc();
            match self.net.accept(&self.listener, self.token(i)) {
                Ok(Some(sock)) => self.add(i, sock, Party::server(), 0),
                Ok(None) => {
                    self.release(i);
                    return;
                }
                Err(e) => {
                    self.release(i);
                    self.shared.fail(format!("{} accept: {e}", self.who.name()));
                    return;
                }
            }
        }
    }

    fn drive(&mut self, i: usize) {
        let Some(mut c) = self.slots[i].conn.take() else {
            return;
        };
        let r = c.party.step(&mut self.net, &c.sock, &mut self.buf);
        if c.party.moved != c.moved {
            c.moved = c.party.moved;
            c.last_move = Instant::now();
        }
        match r {
            Ok(false) => self.slots[i].conn = Some(c),
            Ok(true) => self.end(i, c, None),
            Err(e) => self.end(i, c, Some(e)),
        }
    }

    /// Ends connection `c` of slot `i`: closes it, or resets it after `error`, and counts it.
    fn end(&mut self, i: usize, c: Conn<N::Sock>, error: Option<String>) {
        let addresses = self.net.addresses(&c.sock);
        self.live -= 1;
        self.release(i);
        let client = c.party.end == End::Client;
        if client {
            self.clients[c.kind] -= 1;
        }
        let (who, kind) = (self.who.name(), ["short", "long"][c.kind]);
        let role = if client { "client" } else { "server" };
        match error {
            None => {
                if let Err(e) = self.net.close(c.sock) {
                    self.shared
                        .fail(format!("{who} {role} #{} {addresses}: close: {e}", c.id));
                } else if client {
                    let s = &self.shared;
                    s.done[self.who as usize][c.kind].fetch_add(1, Ordering::Relaxed);
                    s.exchanges.fetch_add(c.party.exchanges, Ordering::Relaxed);
                    s.bytes.fetch_add(c.party.bytes, Ordering::Relaxed);
                }
            }
            Some(e) => {
                let _ = self.net.abort(c.sock);
                let kind = if client { kind } else { "" };
                self.shared
                    .fail(format!("{who} {kind} {role} #{} {addresses}: {e}", c.id));
            }
        }
    }

    /// Fails every connection that has not moved for [`STALL`], or all of them.
    fn sweep(&mut self, all: Option<&str>) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let stalled = match &self.slots[i].conn {
                Some(c) => all.is_some() || now.duration_since(c.last_move) > STALL,
                None => false,
            };
            if stalled {
                let c = self.slots[i].conn.take().expect("a connection");
                let why = match all {
                    Some(why) => why.to_string(),
                    None => format!("no progress for {} s", STALL.as_secs()),
                };
                let why = format!("{why} ({})", c.party.progress());
                self.end(i, c, Some(why));
            }
        }
    }

    /// Runs until `end`, then until everything in flight has finished (at most [`DRAIN`]).
    /// `tick` runs about every 100 ms.
    fn run(&mut self, end: Instant, mut tick: impl FnMut(&mut N)) {
        let me = self.who as usize;
        let other = self.who.other() as usize;
        let shared = self.shared.clone();
        let _finish = Finish(&shared, self.who);
        let drain_until = end + DRAIN;
        let (mut last_tick, mut last_sweep) = (Instant::now(), Instant::now());
        loop {
            let now = Instant::now();
            let over = now >= end || shared.finished[other].load(Ordering::Acquire);
            if !over {
                for kind in 0..2 {
                    let want = [self.shape.short, self.shape.long][kind];
                    while self.clients[kind] < want {
                        let before = self.shared.errors.load(Ordering::Relaxed);
                        self.open(kind, end);
                        if self.shared.errors.load(Ordering::Relaxed) != before {
                            break;
                        }
                    }
                }
            } else {
                if self.clients == [0, 0] {
                    shared.clients_done[me].store(true, Ordering::Release);
                }
                let others_done = shared.clients_done[other].load(Ordering::Acquire);
                // Our stack moves only while we call it: ours keeps running until the
                // kernel's side has seen everything through.
                let other_finished =
                    self.who == Who::Linux || shared.finished[other].load(Ordering::Acquire);
                if self.live == 0 && others_done && other_finished {
                    break;
                }
                if now >= drain_until {
                    let why = format!("still open {} s after the end", DRAIN.as_secs());
                    self.sweep(Some(&why));
                    break;
                }
            }
            let mut ready = std::mem::take(&mut self.ready);
            if let Err(e) = self.net.wait(&mut ready, 10) {
                self.shared
                    .fail(format!("{} epoll_wait: {e}", self.who.name()));
                self.sweep(Some("the event loop failed"));
                break;
            }
            for r in &ready {
                if r.token == LISTENER {
                    self.accept_all();
                    continue;
                }
                let (i, generation) = ((r.token & 0xffff_ffff) as usize, (r.token >> 32) as u32);
                if self
                    .slots
                    .get(i)
                    .is_some_and(|s| s.generation == generation)
                {
                    self.drive(i);
                }
            }
            self.ready = ready;
            if now.duration_since(last_sweep) >= Duration::from_millis(500) {
                last_sweep = now;
                self.sweep(None);
            }
            if now.duration_since(last_tick) >= Duration::from_millis(100) {
                last_tick = now;
                tick(&mut self.net);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// Resident memory now, after returning free heap pages to the kernel.
fn rss_trimmed() -> u64 {
    trim_heap();
    vm_rss().unwrap_or(0)
}

fn mib(n: u64) -> f64 {
    n as f64 / f64::from(1 << 20)
}

fn kib(n: u64) -> f64 {
    n as f64 / 1024.0
}

/// Scenario 8: the soak, for `duration` (see the module doc). Figure: duration, connections
/// done (short and long), bytes moved, errors, open connections before and after, resident
/// memory before, at the peak and after.
pub fn soak(duration: Duration, seed: u64) -> Record {
    soak_with(duration, Shape::DEFAULT, seed, None)
}

/// [`soak`] with another shape of traffic, and the relay's captures in `pcap_dir` (about
/// 45 MB per second of soak).
pub fn soak_with(duration: Duration, shape: Shape, seed: u64, pcap_dir: Option<&Path>) -> Record {
    Record::from_result("soak", soak_inner(duration, shape, seed, pcap_dir))
}

fn soak_inner(duration: Duration, shape: Shape, seed: u64, pcap_dir: Option<&Path>) -> Outcome {
    let fail = |e: String| (format!("failed: {e}"), String::new());
    let mut lab =
        Lab::new("soak", LinkKind::Lossy, seed, pcap_dir).map_err(|e| fail(e.to_string()))?;
    // Kernel clients in TIME-WAIT hold their ports for 60 s: give them room for ten minutes.
    lab.linux_sysctl("net/ipv4/ip_local_port_range", "10000 60999")
        .map_err(|e| fail(e.to_string()))?;
    let tcp = "send_buffer = 262144\nrecv_buffer = 262144";
    let config = lab.our_config(seed, tcp).map_err(fail)?;
    let ctx = {
        let _inside = netns::enter(lab.ours_ns()).map_err(|e| fail(e.to_string()))?;
        Context::run_to_completion(&config, 0).map_err(|e| fail(format!("our stack: {e}")))?
    };
    let shared = Arc::new(Shared::default());
    let net = MtcpNet::new(ctx, 4096).map_err(|e| fail(format!("epoll_create: {e}")))?;
    let mut ours = Side::new(net, Who::Ours, shape, seed, shared.clone())
        .map_err(|e| fail(format!("our server: {e}")))?;

    // The kernel's side: its loop thread waits for the start time once it listens.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx) = mpsc::channel::<Instant>();
    let linux_shared = shared.clone();
    let linux = netns::spawn_in(lab.linux_ns(), move || {
        let _finish = Finish(&linux_shared, Who::Linux);
        let side = LinuxNet::new()
            .and_then(|net| Side::new(net, Who::Linux, shape, seed, linux_shared.clone()));
        let mut side = match side {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("linux server: {e}")));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        if let Ok(end) = go_rx.recv() {
            side.run(end, |_| {});
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(fail("the linux side did not start".into())),
    }

    // Before.
    let stats_before = ours.net.ctx.stats().unwrap_or_default();
    let open_before = stats_before.open;
    let stack_before = ours.net.ctx.memory_usage().unwrap_or(0) as u64;
    let rss_before = rss_trimmed();
    // Resets VmHWM to the current RSS (proc(5), clear_refs).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let linux_rtx_before = lab.linux_tcp_counter("RetransSegs").unwrap_or(0);

    let start = Instant::now();
    let end = start + duration;
    let _ = go_tx.send(end);
    let mut stack_peak = stack_before;
    let mut open_peak = open_before;
    ours.run(end, |net: &mut MtcpNet| {
        stack_peak = stack_peak.max(net.ctx.memory_usage().unwrap_or(0) as u64);
        open_peak = open_peak.max(net.ctx.stats().unwrap_or_default().open);
    });
    let traffic = start.elapsed();
    let rss_peak = proc_kb("/proc/self/status", "VmHWM:").unwrap_or(0);
    let linux_ok = linux
        .join()
        .map_err(|_| "panicked")
        .and_then(|r| r.map_err(|_| "could not enter the namespace"));
    if let Err(e) = linux_ok {
        shared.fail(format!("the linux side's thread {e}"));
    }

    // After: TIME-WAIT and the last retransmitted FINs.
    let settle_start = Instant::now();
    let mut ready = Vec::new();
    while ours.net.ctx.stats().unwrap_or_default().open > open_before
        && settle_start.elapsed() < SETTLE
    {
        if ours.net.wait(&mut ready, 20).is_err() {
            break;
        }
    }
    let settled = settle_start.elapsed();
    let stats_after = ours.net.ctx.stats().unwrap_or_default();
    let stack_after = ours.net.ctx.memory_usage().unwrap_or(0) as u64;
    let rss_after = rss_trimmed();
    let linux_rtx = lab
        .linux_tcp_counter("RetransSegs")
        .unwrap_or(0)
        .saturating_sub(linux_rtx_before);
    drop(ours);
    let relay = lab.stop_relay();

    // The figures.
    let done = |who: Who, kind: usize| shared.done[who as usize][kind].load(Ordering::Relaxed);
    let short = done(Who::Ours, 0) + done(Who::Linux, 0);
    let long = done(Who::Ours, 1) + done(Who::Linux, 1);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let figure = format!(
        "{} s lossy: {short} short + {long} long connections, {:.2} GB checked, {errors} errors; \
         open {open_before} -> {}; RSS {:.1}/{:.1}/{:.1} MiB (before/peak/after)",
        duration.as_secs(),
        bytes as f64 / 1e9,
        stats_after.open,
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
    );
    let mut detail = vec![
        format!(
            "shape: {} short connections in flight from each side, {} long from each side \
             ({} duplex exchanges of {} each way)",
            shape.short,
            shape.long,
            shape.long_exchanges,
            super::size_text(shape.long_exchange)
        ),
        format!(
            "connections done: ours->linux {} short {} long, linux->ours {} short {} long; \
             {} exchanges; traffic {:.1} s (drain included), table settled {:.1} s later",
            done(Who::Ours, 0),
            done(Who::Ours, 1),
            done(Who::Linux, 0),
            done(Who::Linux, 1),
            shared.exchanges.load(Ordering::Relaxed),
            traffic.as_secs_f64(),
            settled.as_secs_f64()
        ),
        format!(
            "goodput {:.1} Mbit/s (both ways, checked payload over the traffic time)",
            bytes as f64 * 8.0 / traffic.as_secs_f64().max(1e-9) / 1e6
        ),
        format!(
            "our table: open {open_before} before, peak {open_peak} (sampled every 100 ms), \
             {} after",
            stats_after.open
        ),
        format!(
            "our stack's heap (tcp-core's table and buffers): {:.1} KiB before, peak {:.1} KiB, \
             {:.1} KiB after (bound: before + {:.0} KiB)",
            kib(stack_before),
            kib(stack_peak),
            kib(stack_after),
            kib(STACK_SLACK)
        ),
        format!(
            "process RSS after malloc_trim: {:.1} MiB before, {:.1} MiB after (bound: before + \
             {:.0} MiB); peak (VmHWM{}) {:.1} MiB",
            mib(rss_before),
            mib(rss_after),
            mib(RSS_SLACK),
            if hwm_reset {
                ", reset at the start"
            } else {
                ", could not be reset: the process's lifetime peak"
            },
            mib(rss_peak)
        ),
        format!(
            "retransmits ours {} linux {linux_rtx}; our endpoint: {} connections opened, {} \
             timeouts, {} aborts, {} RSTs received, {} RSTs sent",
            stats_after.retransmits - stats_before.retransmits,
            stats_after.endpoint.connections_opened - stats_before.endpoint.connections_opened,
            stats_after.endpoint.timeouts - stats_before.endpoint.timeouts,
            stats_after.endpoint.aborts - stats_before.endpoint.aborts,
            stats_after.endpoint.rst_received - stats_before.endpoint.rst_received,
            stats_after.rst_sent - stats_before.rst_sent,
        ),
        format!("our stack: {stats_after}"),
    ];
    match &relay {
        Ok(r) => detail.push(format!(
            "relay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => detail.push(format!("relay failed: {e}")),
    }
    let messages = shared
        .messages
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for m in &messages {
        detail.push(format!("error: {m}"));
    }

    let mut problems = Vec::new();
    if errors > 0 {
        problems.push(format!("{errors} failed connections"));
    }
    for (who, kind) in [
        (Who::Ours, 0),
        (Who::Ours, 1),
        (Who::Linux, 0),
        (Who::Linux, 1),
    ] {
        if done(who, kind) == 0 {
            problems.push(format!(
                "no {} connection from {} done",
                ["short", "long"][kind],
                who.name()
            ));
        }
    }
    if stats_after.open != open_before {
        problems.push(format!(
            "{} connections open after {} s, {open_before} before",
            stats_after.open,
            SETTLE.as_secs()
        ));
    }
    if stack_after > stack_before + STACK_SLACK {
        problems.push(format!(
            "our stack holds {:.1} KiB, {:.1} KiB before",
            kib(stack_after),
            kib(stack_before)
        ));
    }
    if rss_after > rss_before + RSS_SLACK {
        problems.push(format!(
            "RSS {:.1} MiB after, {:.1} MiB before",
            mib(rss_after),
            mib(rss_before)
        ));
    }
    if let Err(e) = &relay {
        problems.push(format!("relay: {e}"));
    }
    verdict(figure, detail.join("\n"), &problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        for last in [None, Some(End::Client), Some(End::Server)] {
            for duplex in [false, true] {
                let p = Plan {
                    seed: 0x0123_4567_89ab_cdef,
                    request: 7,
                    response: 1 << 20,
                    duplex,
                    last,
                };
                assert_eq!(Plan::decode(&p.encode()), Ok(p));
            }
        }
        assert!(Plan::decode(&[0u8; HEADER]).is_err());
        let mut h = Rng(1).short_plan().encode();
        h[16..24].copy_from_slice(&(MAX_MESSAGE + 1).to_be_bytes());
        assert!(Plan::decode(&h).is_err());
    }

    #[test]
    fn a_stream_is_the_same_however_it_is_cut() {
        let mut whole = vec![0u8; 100_000];
        Pattern::new(9).fill(&mut whole);
        let mut s = Stream::new(9);
        let mut got = Vec::new();
        let mut left = whole.len() as u64;
        let mut cut = Rng(3);
        while left > 0 {
            let max = 1 + cut.below(left.min(40_000));
            let piece = s.peek(max).to_vec();
            assert!(!piece.is_empty() && piece.len() as u64 <= max);
            got.extend_from_slice(&piece);
            s.consume(piece.len());
            left -= piece.len() as u64;
        }
        assert!(got == whole);

        let mut inc = Incoming::new(9, whole.len() as u64);
        assert_eq!(inc.check(&whole[..5000]), Ok(()));
        let mut bad = whole[5000..6000].to_vec();
        bad[123] ^= 1;
        assert_eq!(inc.check(&bad), Err(5123));
    }

    /// Two ends joined by two bounded byte queues: `Net` without sockets.
    struct Wire {
        /// Bytes travelling towards end 0 and end 1.
        towards: [std::collections::VecDeque<u8>; 2],
        fin: [bool; 2],
        /// Flip the bits of the byte with this index of what end 1 receives.
        corrupt_at: Option<usize>,
        to_1: usize,
    }

    impl Net for Wire {
        type Sock = usize;
        fn listen(&mut self, _: u16, _: usize, _: u64) -> io::Result<usize> {
            unimplemented!()
        }
        fn accept(&mut self, _: &usize, _: u64) -> io::Result<Option<usize>> {
            unimplemented!()
        }
        fn connect(&mut self, _: SocketAddrV4, _: u64) -> io::Result<usize> {
            unimplemented!()
        }
        fn take_error(&mut self, _: &usize) -> io::Result<Option<io::Error>> {
            Ok(None)
        }
        fn read(&mut self, s: &usize, buf: &mut [u8]) -> io::Result<usize> {
            let q = &mut self.towards[*s];
            if q.is_empty() {
                return if self.fin[*s] {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = q.len().min(buf.len());
            for (i, b) in q.drain(..n).enumerate() {
                buf[i] = b;
            }
            Ok(n)
        }
        fn write(&mut self, s: &usize, data: &[u8]) -> io::Result<usize> {
            let to = 1 - *s;
            let n = (5000 - self.towards[to].len()).min(data.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            for &b in &data[..n] {
                let b = if to == 1 && self.corrupt_at == Some(self.to_1) {
                    b ^ 0xff
                } else {
                    b
                };
                self.to_1 += usize::from(to == 1);
                self.towards[to].push_back(b);
            }
            Ok(n)
        }
        fn close(&mut self, s: usize) -> io::Result<()> {
            self.fin[1 - s] = true;
            Ok(())
        }
        fn abort(&mut self, s: usize) -> io::Result<()> {
            self.close(s)
        }
        fn wait(&mut self, _: &mut Vec<Ready>, _: u16) -> io::Result<()> {
            Ok(())
        }
    }

    /// How each end ended, in order of closing.
    type Closes = Vec<(End, Result<(), String>)>;

    /// Runs a client (end 0) and a server (end 1) over a [`Wire`] until both are done or
    /// one fails; each closes its end when it is done. Returns both outcomes, in order of
    /// closing, and both parties.
    fn converse(script: Script, corrupt_at: Option<usize>) -> (Closes, Party, Party) {
        let mut wire = Wire {
            towards: Default::default(),
            fin: [false; 2],
            corrupt_at,
            to_1: 0,
        };
        let mut parties = [Some(Party::client(script)), Some(Party::server())];
        let mut done = Vec::new();
        let mut ended: [Option<Party>; 2] = [None, None];
        let mut buf = vec![0u8; 3000];
        for _ in 0..100_000 {
            for end in 0..2 {
                let Some(p) = parties[end].as_mut() else {
                    continue;
                };
                match p.step(&mut wire, &end, &mut buf) {
                    Ok(false) => continue,
                    Ok(true) => done.push((p.end, Ok(()))),
                    Err(e) => done.push((p.end, Err(e))),
                }
                wire.close(end).unwrap();
                ended[end] = parties[end].take();
            }
            if parties.iter().all(Option::is_none) {
                let [c, s] = ended;
                return (done, c.unwrap(), s.unwrap());
            }
        }
        panic!("the conversation did not end: {done:?}");
    }

    #[test]
    fn a_party_pair_runs_exchanges_and_closes_in_the_order_announced() {
        for closer in [End::Client, End::Server] {
            let plan = Plan {
                last: Some(closer),
                ..Rng(7).short_plan()
            };
            let (done, c, s) = converse(Script::Once(plan), None);
            assert_eq!(done[0], (closer, Ok(())), "{done:?}");
            assert!(done[1].1.is_ok(), "{done:?}");
            assert_eq!((c.exchanges, s.exchanges), (1, 1));
            assert_eq!(c.bytes, plan.request + plan.response);
        }
        let long = Script::Long {
            rng: Rng(8),
            bytes: 40_000,
            left: 3,
            end: Instant::now() + Duration::from_secs(3600),
        };
        let (done, c, s) = converse(long, None);
        assert!(done.iter().all(|d| d.1.is_ok()), "{done:?}");
        assert_eq!((c.exchanges, s.exchanges), (3, 3));
        assert_eq!(c.bytes, 6 * 40_000);
    }

    #[test]
    fn a_changed_byte_fails_the_connection() {
        let plan = Plan {
            request: 20_000,
            ..Rng(9).short_plan()
        };
        // The server receives the 32-byte header, then the request: byte 1000 of it.
        let (done, _, _) = converse(Script::Once(plan), Some(HEADER + 1000));
        let (end, r) = &done[0];
        assert_eq!(*end, End::Server);
        assert!(
            r.as_ref().is_err_and(|e| e.contains("byte 1000 differs")),
            "{done:?}"
        );
    }

    #[test]
    fn short_plans_mix_sizes_and_closers() {
        let mut rng = Rng(5);
        let plans: Vec<Plan> = (0..1000).map(|_| rng.short_plan()).collect();
        let medium = plans.iter().filter(|p| p.request > 1024).count();
        let server_first = plans.iter().filter(|p| p.last == Some(End::Server)).count();
        assert!((200..400).contains(&medium), "{medium}");
        assert!((400..600).contains(&server_first), "{server_first}");
        assert!(plans
            .iter()
            .all(|p| (1..=64 * 1024).contains(&p.request) && !p.duplex));
    }
}
