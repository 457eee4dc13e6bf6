//! `epserver -p <www_dir> -f <config> [-N cores] [-b backlog] [--port P] [--rtc]`: a
//! static-file HTTP/1.1 server on mtcp-api, after mTCP's `epserver`.
//!
//! ## Design
//! One application thread per core, each with its own context, its own listener on the same
//! port (per-core listeners, as mTCP: a connection belongs to the core its packets reach),
//! one epoll instance and its own file cache; nothing is shared between cores. By default
//! each core has a stack thread (`mtcp_api::init`); `--rtc` runs each core's stack in its
//! application thread instead (`Context::run_to_completion_cores`: half the threads, no
//! queues between them, much less CPU per request).
//!
//! Connections are registered edge-triggered for `IN|OUT`, so every event makes the
//! connection go as far as it can: read request heads (at most [`http::MAX_HEAD`] bytes
//! buffered), answer them one at a time in order (pipelined requests wait in the buffer),
//! write until the socket refuses. A connection gets at most [`BUDGET`] responses per turn;
//! one that has more to do is put back on a queue for the next turn, so no client holds the
//! core.
//!
//! Responses: `GET`/`HEAD` of a regular file under the document root (a path ending in `/`
//! means its `index.html`), with `Content-Length` always and `Connection: keep-alive` or
//! `close` as the request asked (HTTP/1.1 keeps alive by default). Errors: 400 (malformed,
//! over-long head, `..` in the path, a request body), 404 (no such file, or outside the root
//! through a symbolic link), 405 (other methods), 505 (other versions); after 400, 405 and
//! 505 the connection is closed *lingering* (as Apache and nginx do): the server shuts its
//! sending side down, then reads and discards what the client still sends for up to
//! [`LINGER`] (or [`LINGER_BYTES`]) before closing, so that the client's unread request
//! bytes do not make the close a reset that would destroy the error response in flight.
//!
//! Files up to [`CACHE_FILE_MAX`] bytes are read whole at their first request and kept
//! in the core's cache (at most [`CACHE_BYTES`] in all; files that do not fit are read
//! again each time). The cache is keyed by request path and never invalidated: restart the
//! server after changing files. Larger files are sent from an open file as the socket
//! takes them (`EPOLLOUT`), never waiting on the peer: each write reads up to [`CHUNK`]
//! bytes at the connection's offset into one scratch buffer of the core (`pread`, from the
//! page cache once the file is warm) and advances by what the socket took, so a connection
//! holds no buffer of its own — the sendfile-like path. Reading the file blocks only on a
//! cold page cache.
//!
//! `SIGINT`/`SIGTERM` stop it: connections are closed, each core's counts are printed (with
//! `--rtc`, its stack's counters too).

use crate::{apps, http};
use mtcp_api::{Config, Context, EpollEvent, EpollOp, Error, Events, Fd, Shutdown};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: epserver -p <www_dir> -f <config> [-N cores] [-b backlog] [--port P] [--rtc]
  -p DIR     document root
  -f FILE    mtcp-api configuration (TOML)
  -N CORES   cores (default: the configuration's); sets the port's queue count on shm/afpacket
  -b N       listen backlog per core (default 4096)
  --port P   TCP port (default 80)
  --rtc      run-to-completion: each core's stack runs in its application thread
Stops on SIGINT or SIGTERM.";

/// Largest file kept in the cache.
pub const CACHE_FILE_MAX: u64 = 64 * 1024;
/// Most bytes a core's cache holds.
pub const CACHE_BYTES: usize = 64 << 20;
/// Read size for files sent from disk (one scratch buffer per core).
pub const CHUNK: usize = 64 * 1024;
/// Responses one connection gets per turn of the loop.
pub const BUDGET: u32 = 16;
/// Longest a refused connection lingers (see the module doc).
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes a lingering connection discards before it is closed anyway.
pub const LINGER_BYTES: usize = 1 << 20;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Token of the listener.
const LISTENER: u64 = u64::MAX;

struct Args {
    www: PathBuf,
    config: PathBuf,
    cores: Option<usize>,
    backlog: usize,
    port: u16,
    rtc: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut www = None;
    let mut config = None;
    let mut cores = None;
    let mut backlog = 4096;
    let mut port = 80;
    let mut rtc = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" => www = it.next().map(PathBuf::from),
            "-f" => config = it.next().map(PathBuf::from),
            "-N" => cores = Some(apps::number("-N", it.next())?),
            "-b" => backlog = apps::number("-b", it.next())?,
            "--port" => port = apps::number("--port", it.next())?,
            "--rtc" => rtc = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(www), Some(config)) = (www, config) else {
        return Err(format!("-p and -f are required\n{USAGE}"));
    };
    if cores == Some(0) || backlog == 0 {
        return Err("-N and -b must be at least 1".into());
    }
    Ok(Args {
        www,
        config,
        cores,
        backlog,
        port,
        rtc,
    })
}

/// `epserver` with its command-line arguments (without the program name); the process's
/// exit status.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epserver: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    let mut config = Config::from_file(&args.config).map_err(|e| e.to_string())?;
    if let Some(n) = args.cores {
        apps::set_cores(&mut config, n, false);
    }
    let stop = apps::stop_on_signals()?;
    let options = Serve {
        config,
        root: args.www,
        port: args.port,
        backlog: args.backlog,
        rtc: args.rtc,
    };
    serve(options, stop, || {})
}

/// What [`serve`] serves, and how.
#[derive(Debug, Clone)]
pub struct Serve {
    /// The stack's configuration (`-f`, with `-N` applied).
    pub config: Config,
    /// The document root (`-p`).
    pub root: PathBuf,
    /// The TCP port (`--port`).
    pub port: u16,
    /// The listen backlog per core (`-b`).
    pub backlog: usize,
    /// Run-to-completion (`--rtc`).
    pub rtc: bool,
}

/// Runs epserver in the calling process until `stop` is set: the body of the `epserver`
/// program without its argument parsing and signal handling, for callers that run it in a
/// thread (say, inside a network namespace the thread entered; the stack's port is opened
/// there). Calls `ready` once every core listens, and prints what the program prints.
pub fn serve(options: Serve, stop: Arc<AtomicBool>, ready: impl FnOnce()) -> Result<(), String> {
    let Serve {
        config,
        root,
        port,
        backlog,
        rtc,
    } = options;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    if !root.is_dir() {
        return Err(format!("{}: not a directory", root.display()));
    }
    let (contexts, mtcp) = if rtc {
        let c = Context::run_to_completion_cores(&config).map_err(|e| e.to_string())?;
        (c, None)
    } else {
        let mut m = mtcp_api::init(config.clone()).map_err(|e| e.to_string())?;
        let c = (0..m.cores()).filter_map(|i| m.context(i)).collect();
        (c, Some(m))
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for ctx in contexts {
        let core = ctx.core();
        let server = Server::new(ctx, root.clone(), stop.clone());
        let ready = ready_tx.clone();
        // Every connection the core may hold, and the listener.
        let registrations = config.tcp.max_concurrency + 1;
        let t = std::thread::Builder::new()
            .name(format!("epserver-{core}"))
            .spawn(move || server.run(port, backlog, registrations, &ready))
            .map_err(|e| format!("starting core {core}: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut result = Ok(());
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                result = Err(e);
                stop.store(true, Ordering::Release);
                break;
            }
            Err(_) => break,
        }
    }
    if result.is_ok() {
        println!(
            "epserver: listening on {}:{} ({} cores{}), serving {}",
            config.interface.address.0,
            port,
            threads.len(),
            if rtc { ", run-to-completion" } else { "" },
            root.display()
        );
        ready();
    }
    for t in threads {
        match t.join() {
            Ok(Ok(c)) => {
                println!(
                    "epserver: core {}: {} connections, {} requests, {} errors answered, {} \
                     body bytes",
                    c.core, c.connections, c.requests, c.errors, c.body_bytes
                );
                if let Some(s) = c.stack {
                    print_stack(c.core, &s);
                }
            }
            Ok(Err(e)) => {
                if result.is_ok() {
                    result = Err(e);
                }
                stop.store(true, Ordering::Release);
            }
            Err(_) => result = Err("an application thread panicked".into()),
        }
    }
    if let Some(m) = mtcp {
        for (core, s) in m.destroy().into_iter().enumerate() {
            if let Ok(s) = s {
                print_stack(core, &s);
            }
        }
    }
    result
}

/// The stack's statistics of a core as the program's last lines: mTCP's one-line summary,
/// then every counter of the endpoint (`name: value`, as `{:?}` writes them), which
/// `mtcp-bench interop`'s SYN flood reads (`syn_cookies_sent`).
fn print_stack(core: usize, s: &mtcp_api::StackStats) {
    println!("epserver: core {core} stack: {s}");
    println!("epserver: core {core} counters: {:?}", s.endpoint);
}

/// What a core did.
#[derive(Debug, Default)]
struct Counts {
    core: usize,
    connections: u64,
    requests: u64,
    errors: u64,
    body_bytes: u64,
    /// The stack's statistics at the end (run-to-completion only: otherwise the stack
    /// thread's come from `Mtcp::destroy`).
    stack: Option<mtcp_api::StackStats>,
}

/// Where the rest of a response body comes from.
enum Body {
    None,
    /// Cached (or small) file contents, and how much of it is sent.
    Mem(Arc<[u8]>, usize),
    /// A large file: the next offset to send and the end. Nothing is buffered per
    /// connection: each write reads a chunk into the core's scratch buffer.
    File {
        file: File,
        next: u64,
        end: u64,
    },
}

/// A response being written.
struct Out {
    head: Vec<u8>,
    head_sent: usize,
    body: Body,
}

/// One connection.
struct Conn {
    fd: Fd,
    generation: u32,
    /// Received bytes not yet parsed (at most `MAX_HEAD`).
    inbuf: Vec<u8>,
    out: Option<Out>,
    /// Close once `out` is written.
    close_after: bool,
    /// Linger before closing (after a refusal).
    linger_after: bool,
    /// Lingering: bytes discarded so far.
    lingering: Option<usize>,
    /// Already on the queue of connections to drive again.
    queued: bool,
}

/// What a turn on a connection ended with.
enum Turn {
    /// Wait for the next event.
    Wait,
    /// Budget spent with work left: drive again next turn.
    Again,
    /// Close it.
    Close,
    /// Its sending side is shut down: linger, then close.
    Linger,
}

/// One core's server.
struct Server {
    ctx: Context,
    root: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    generations: Vec<u32>,
    cache: HashMap<Vec<u8>, (Arc<[u8]>, &'static str)>,
    cache_bytes: usize,
    again: VecDeque<usize>,
    /// Lingering connections by deadline (all lingers last [`LINGER`], so it is sorted).
    lingering: VecDeque<(Instant, usize, u32)>,
    counts: Counts,
    readbuf: Box<[u8]>,
    /// Scratch for large files ([`CHUNK`] bytes), shared by the core's connections.
    chunk: Box<[u8]>,
}

fn token(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

impl Server {
    fn new(ctx: Context, root: PathBuf, stop: Arc<AtomicBool>) -> Server {
        let core = ctx.core();
        Server {
            ctx,
            root,
            stop,
            conns: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            cache: HashMap::new(),
            cache_bytes: 0,
            again: VecDeque::new(),
            lingering: VecDeque::new(),
            counts: Counts {
                core,
                ..Counts::default()
            },
            readbuf: vec![0; http::MAX_HEAD].into_boxed_slice(),
            chunk: vec![0; CHUNK].into_boxed_slice(),
        }
    }

    /// Listens, tells `ready`, and serves until the stop flag.
    fn run(
        mut self,
        port: u16,
        backlog: usize,
        registrations: usize,
        ready: &mpsc::Sender<Result<(), String>>,
    ) -> Result<Counts, String> {
        let core = self.ctx.core();
        let setup = (|| -> Result<(Fd, Fd), Error> {
            let l = self.ctx.socket()?;
            self.ctx
                .bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
            self.ctx.listen(l, backlog)?;
            let ep = self.ctx.epoll_create(registrations)?;
            self.ctx
                .epoll_ctl(ep, EpollOp::Add, l, Events::IN, LISTENER)?;
            Ok((l, ep))
        })();
        let (l, ep) = match setup {
            Ok(x) => {
                let _ = ready.send(Ok(()));
                x
            }
            Err(e) => {
                let msg = format!("core {core}: listening on port {port}: {e}");
                let _ = ready.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        let mut events = vec![EpollEvent::default(); EVENTS];
        let result = loop {
            if self.stop.load(Ordering::Acquire) {
                break Ok(());
            }
            let timeout = if self.again.is_empty() { 50 } else { 0 };
            let n = match self.ctx.epoll_wait(ep, &mut events, timeout) {
                Ok(n) => n,
                Err(Error::ContextGone) => break Ok(()),
                Err(e) => break Err(format!("core {core}: epoll_wait: {e}")),
            };
            for e in &events[..n] {
                if e.data == LISTENER {
                    self.accept_all(l, ep);
                } else {
                    let slot = (e.data & 0xffff_ffff) as usize;
                    let generation = (e.data >> 32) as u32;
                    if self.generations.get(slot) == Some(&generation) {
                        self.drive(slot);
                    }
                }
            }
            let now = Instant::now();
            while let Some(&(deadline, slot, generation)) = self.lingering.front() {
                if deadline > now {
                    break;
                }
                self.lingering.pop_front();
                if self.generations[slot] == generation {
                    self.close(slot);
                }
            }
            for _ in 0..self.again.len() {
                let Some(slot) = self.again.pop_front() else {
                    break;
                };
                if let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                    c.queued = false;
                    self.drive(slot);
                }
            }
        };
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.close(slot);
            }
        }
        let _ = self.ctx.close(l);
        if self.ctx.stats().is_some() {
            // Run-to-completion: nobody else moves this stack, so give the FINs a moment.
            let end = Instant::now() + Duration::from_millis(200);
            while Instant::now() < end {
                if !self.ctx.poll().unwrap_or(false) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        self.counts.stack = self.ctx.stats();
        result.map(|()| self.counts)
    }

    fn accept_all(&mut self, l: Fd, ep: Fd) {
        loop {
            let fd = match self.ctx.accept(l) {
                Ok((fd, _)) => fd,
                Err(Error::WouldBlock) => return,
                // A connection reset before it was taken, a full table: keep serving.
                Err(_) => return,
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.generations.push(0);
                self.conns.len() - 1
            });
            self.generations[slot] = self.generations[slot].wrapping_add(1);
            let generation = self.generations[slot];
            // As nginx's `tcp_nodelay on`: the last, partial segment of a response goes
            // out at once instead of waiting (Nagle) for the peer's possibly delayed ACK,
            // which would cost keep-alive clients up to a delayed-ACK time per response.
            let _ = self.ctx.set_nodelay(fd, true);
            let interest = Events::IN | Events::OUT | Events::ET;
            if self
                .ctx
                .epoll_ctl(ep, EpollOp::Add, fd, interest, token(slot, generation))
                .is_err()
            {
                let _ = self.ctx.close(fd);
                self.free.push(slot);
                continue;
            }
            self.counts.connections += 1;
            self.conns[slot] = Some(Conn {
                fd,
                generation,
                inbuf: Vec::new(),
                out: None,
                close_after: false,
                linger_after: false,
                lingering: None,
                queued: false,
            });
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].take() {
            let _ = self.ctx.close(c.fd);
            self.generations[slot] = c.generation.wrapping_add(1);
            self.free.push(slot);
        }
    }

    fn drive(&mut self, slot: usize) {
        let Some(mut c) = self.conns[slot].take() else {
            return;
        };
        let turn = self.turn(&mut c);
        let queued = c.queued;
        self.conns[slot] = Some(c);
        match turn {
            Turn::Wait => {}
            Turn::Again => {
                if !queued {
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.queued = true;
                    }
                    self.again.push_back(slot);
                }
            }
            Turn::Close => self.close(slot),
            Turn::Linger => {
                let generation = self.generations[slot];
                self.lingering
                    .push_back((Instant::now() + LINGER, slot, generation));
            }
        }
    }

    /// Moves a connection as far as it goes: write, parse, read, in a loop.
    fn turn(&mut self, c: &mut Conn) -> Turn {
        if c.lingering.is_some() {
            return self.discard(c);
        }
        let mut budget = BUDGET;
        loop {
            if c.out.is_some() {
                match self.flush(c) {
                    Ok(true) => {
                        c.out = None;
                        if c.close_after && c.linger_after {
                            if self.ctx.shutdown(c.fd, Shutdown::Write).is_err() {
                                return Turn::Close;
                            }
                            c.inbuf = Vec::new();
                            c.lingering = Some(0);
                            return match self.discard(c) {
                                Turn::Wait => Turn::Linger,
                                t => t,
                            };
                        }
                        if c.close_after {
                            return Turn::Close;
                        }
                    }
                    Ok(false) => return Turn::Wait,
                    Err(()) => return Turn::Close,
                }
            }
            if budget == 0 {
                return Turn::Again;
            }
            match http::parse_request(&c.inbuf) {
                Ok(Some((req, used))) => {
                    c.inbuf.drain(..used);
                    budget -= 1;
                    self.respond(c, &req);
                    continue;
                }
                Err(e) => {
                    c.inbuf.clear();
                    budget -= 1;
                    self.error(c, e.status(), false);
                    continue;
                }
                Ok(None) => {}
            }
            let room = http::MAX_HEAD - c.inbuf.len();
            match self.ctx.read(c.fd, &mut self.readbuf[..room]) {
                Ok(0) => return Turn::Close,
                Ok(n) => c.inbuf.extend_from_slice(&self.readbuf[..n]),
                Err(Error::WouldBlock) => return Turn::Wait,
                Err(_) => return Turn::Close,
            }
        }
    }

    /// Reads and drops what a lingering connection receives: `Wait` for more, or `Close`.
    fn discard(&mut self, c: &mut Conn) -> Turn {
        let Some(discarded) = c.lingering.as_mut() else {
            return Turn::Close;
        };
        loop {
            match self.ctx.read(c.fd, &mut self.readbuf) {
                Ok(n) if n > 0 && *discarded + n <= LINGER_BYTES => *discarded += n,
                Err(Error::WouldBlock) => return Turn::Wait,
                // End of stream, an error, or enough: close.
                _ => return Turn::Close,
            }
        }
    }

    /// An error response; the connection closes after it unless `keep_alive`.
    fn error(&mut self, c: &mut Conn, status: u16, keep_alive: bool) {
        self.counts.requests += 1;
        self.counts.errors += 1;
        let body = format!("{status} {}\n", http::reason(status));
        let mut head = Vec::with_capacity(160 + body.len());
        http::write_head(
            &mut head,
            status,
            Some("text/plain"),
            body.len() as u64,
            keep_alive,
        );
        head.extend_from_slice(body.as_bytes());
        c.close_after = !keep_alive;
        c.linger_after = !keep_alive;
        c.out = Some(Out {
            head,
            head_sent: 0,
            body: Body::None,
        });
    }

    fn respond(&mut self, c: &mut Conn, req: &http::Request) {
        let head_only = req.method == http::Method::Head;
        let (body, len, ctype) = match self.lookup(&req.path) {
            Ok(x) => x,
            Err(status) => return self.error(c, status, req.keep_alive && status == 404),
        };
        self.counts.requests += 1;
        let mut head = Vec::with_capacity(192);
        http::write_head(&mut head, 200, Some(ctype), len, req.keep_alive);
        c.close_after = !req.keep_alive;
        c.out = Some(Out {
            head,
            head_sent: 0,
            body: if head_only { Body::None } else { body },
        });
    }

    /// The body of the file at `path`, its length and type, or the status to answer.
    fn lookup(&mut self, path: &[u8]) -> Result<(Body, u64, &'static str), u16> {
        if let Some((data, ctype)) = self.cache.get(path) {
            return Ok((Body::Mem(data.clone(), 0), data.len() as u64, ctype));
        }
        let full = http::resolve(&self.root, path).map_err(|e| e.status())?;
        let ctype = http::content_type(&full);
        let file = File::open(&full).map_err(|_| 404u16)?;
        let len = file.metadata().map_err(|_| 404u16)?.len();
        if len <= CACHE_FILE_MAX {
            let data: Arc<[u8]> = read_all(&file, len).map_err(|_| 500u16)?.into();
            if self.cache_bytes + data.len() <= CACHE_BYTES {
                self.cache_bytes += data.len();
                self.cache.insert(path.to_vec(), (data.clone(), ctype));
            }
            return Ok((Body::Mem(data, 0), len, ctype));
        }
        Ok((
            Body::File {
                file,
                next: 0,
                end: len,
            },
            len,
            ctype,
        ))
    }

    /// Writes what the socket takes: `Ok(true)` when the response is all written.
    fn flush(&mut self, c: &mut Conn) -> Result<bool, ()> {
        let Some(out) = c.out.as_mut() else {
            return Ok(true);
        };
        loop {
            let head = &out.head[out.head_sent..];
            let written = match &mut out.body {
                Body::None | Body::File { .. } if !head.is_empty() => {
                    self.ctx.write(c.fd, head).map(|n| (n, 0))
                }
                Body::None => return Ok(true),
                Body::Mem(data, sent) => {
                    let rest = &data[*sent..];
                    if head.is_empty() && rest.is_empty() {
                        return Ok(true);
                    }
                    self.ctx
                        .writev(c.fd, &[head, rest])
                        .map(|n| (n.min(head.len()), n.saturating_sub(head.len())))
                }
                Body::File { file, next, end } => {
                    if *next == *end {
                        return Ok(true);
                    }
                    // Read a chunk and write what the socket takes; the part it does not
                    // take is read again next time (from the page cache), which costs less
                    // than a buffer per connection.
                    let want = CHUNK.min((*end - *next) as usize);
                    let chunk = &mut self.chunk[..want];
                    let got = match file.read_at(chunk, *next) {
                        // The file shrank under us: the response cannot be completed.
                        Ok(0) | Err(_) => return Err(()),
                        Ok(n) => n,
                    };
                    self.ctx.write(c.fd, &chunk[..got]).map(|n| (0, n))
                }
            };
            match written {
                // A socket that takes nothing without saying WouldBlock: try again later.
                Ok((0, 0)) => return Ok(false),
                Ok((h, b)) => {
                    out.head_sent += h;
                    self.counts.body_bytes += b as u64;
                    match &mut out.body {
                        Body::Mem(_, sent) => *sent += b,
                        Body::File { next, .. } => *next += b as u64,
                        Body::None => {}
                    }
                }
                Err(Error::WouldBlock) => return Ok(false),
                Err(_) => return Err(()),
            }
        }
    }
}

/// Reads a whole (small) file.
fn read_all(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0; len as usize];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}
