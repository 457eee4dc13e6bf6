//! `epserver` and `epwget` against each other over a shared-memory link (no root): both run
//! as child processes, each test with its own link name, document root and configurations
//! in a temporary directory. Bodies are checked byte for byte (sha256 of the file against
//! sha256 of what `epwget -o` wrote, and `--verify` for every further body); error
//! statuses, keep-alive, pipelining and `Connection: close` are checked with a raw client
//! in this process (a run-to-completion context on the same link).
//!
//! Every child is killed and every file removed when a test ends, passed or not (the
//! guards' `Drop`); every wait has a deadline.

mod common;

use bench_tools::http;
use common::{await_listening, run_to_end, sha256, write_www, FILES};
use mtcp_api::{Config, Context, Error, Fd};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 8080;

/// A configuration file for one side of link `link`.
fn config_text(link: &str, me: Ipv4Addr, peer: Ipv4Addr) -> String {
    let mac = |ip: Ipv4Addr| format!("02:00:00:00:00:{:02x}", ip.octets()[3]);
    format!(
        "port = \"shm:{link}\"\npin_threads = false\n\
         [interface]\nmac = \"{}\"\naddress = \"{me}/24\"\n\
         [[arp]]\nip = \"{peer}\"\nmac = \"{}\"\n\
         [tcp]\ntime_wait_ms = 500\n",
        mac(me),
        mac(peer)
    )
}

/// A temporary directory with a document root and both configurations, plus a running
/// `epserver`; all of it goes away on drop.
struct Setup {
    dir: PathBuf,
    link: String,
    server: Option<Child>,
}

impl Setup {
    fn start(tag: &str, server_args: &[&str]) -> Setup {
        let link = format!("http-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("epserver-test-{link}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut setup = Setup {
            dir: dir.clone(),
            link: link.clone(),
            server: None,
        };
        write_www(&dir.join("www"));
        std::fs::write(dir.join("server.toml"), config_text(&link, SERVER, CLIENT)).unwrap();
        std::fs::write(dir.join("client.toml"), config_text(&link, CLIENT, SERVER)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_epserver"))
            .arg("-p")
            .arg(dir.join("www"))
            .arg("-f")
            .arg(dir.join("server.toml"))
            .args(["--port", &PORT.to_string()])
            .args(server_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start epserver");
        let stdout = child.stdout.take().unwrap();
        setup.server = Some(child);
        await_listening(stdout);
        setup
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("www").join(name)).unwrap()
    }

    /// Runs `epwget` on `path` with `args`; its output (killed after 60 s).
    fn epwget(&self, path: &str, requests: u64, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_epwget"));
        cmd.arg(format!("{SERVER}:{PORT}{path}"))
            .arg(requests.to_string())
            .arg("-f")
            .arg(self.dir.join("client.toml"))
            .args(["--timeout", "30"])
            .args(args);
        let (status, out) = run_to_end(cmd, &format!("epwget {path} {args:?}"));
        (status.success(), out)
    }

    /// A run-to-completion context on the client side of the link.
    fn raw_client(&self) -> Context {
        let mut c = Config::shm_host(&self.link, CLIENT, SERVER);
        c.pin_threads = false;
        c.tcp.time_wait_ms = 500;
        Context::run_to_completion(&c, 0).expect("attach to the link")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = true;
                    // Only a clean exit counts, unless the test failed already.
                    if !std::thread::panicking() {
                        assert!(status.success(), "epserver exited with {status}");
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // A killed process leaves its side of the link behind.
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            let prefix = format!("psio-{}.", self.link);
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// A value from epwget's summary (`name: value`).
fn field(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in epwget's output"))
}

/// Every file, `requests` times each, through `epwget -o --verify`: same bytes.
fn fetch_all_files(setup: &Setup, requests: u64, args: &[&str]) {
    for &(name, len) in FILES {
        let out_file = setup.dir.join(format!("out-{name}"));
        let mut a = vec!["-o", out_file.to_str().unwrap(), "--verify"];
        a.extend_from_slice(args);
        let (ok, out) = setup.epwget(&format!("/{name}"), requests, &a);
        assert!(ok, "epwget failed for {name}");
        assert_eq!(field(&out, "requests"), requests, "{name}");
        assert_eq!(field(&out, "errors"), 0, "{name}");
        assert_eq!(field(&out, "status 200"), requests, "{name}");
        assert_eq!(field(&out, "body bytes"), requests * len as u64, "{name}");
        let got = std::fs::read(&out_file).unwrap();
        assert_eq!(
            sha256(&got),
            sha256(&setup.file(name)),
            "{name}: the body differs from the file"
        );
    }
}

#[test]
fn files_byte_exact_new_connection_per_request() {
    let setup = Setup::start("newconn", &[]);
    fetch_all_files(&setup, 3, &["-c", "2"]);
}

#[test]
fn files_byte_exact_keep_alive_run_to_completion() {
    let setup = Setup::start("keepalive", &["--rtc"]);
    fetch_all_files(&setup, 4, &["--keep-alive", "-c", "2", "--rtc"]);
}

#[test]
fn two_cores_each_side() {
    let setup = Setup::start("twocores", &["-N", "2"]);
    let (ok, out) = setup.epwget("/100k.bin", 40, &["-N", "2", "-c", "8", "--verify"]);
    assert!(ok);
    assert_eq!(field(&out, "status 200"), 40);
    assert_eq!(field(&out, "body bytes"), 40 * 100 * 1024);
}

#[test]
fn epwget_counts_statuses_and_connect_failures() {
    let setup = Setup::start("statuses", &[]);
    let (ok, out) = setup.epwget("/missing.html", 3, &[]);
    assert!(ok, "a 404 is a completed request");
    assert_eq!(field(&out, "status 404"), 3);
    // Nobody listens on port 9: every request fails, and epwget says so.
    let child = Command::new(env!("CARGO_BIN_EXE_epwget"))
        .arg(format!("{SERVER}:9/"))
        .args(["2", "-f"])
        .arg(setup.dir.join("client.toml"))
        .args(["--timeout", "20"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(!child.status.success());
    assert_eq!(field(&out, "errors"), 2);
}

/// One response as the raw client saw it.
#[derive(Debug)]
struct Response {
    status: u16,
    close: bool,
    content_length: Option<u64>,
    head: String,
    body: Vec<u8>,
}

/// Sends `request` on a new connection and reads `expect` responses (`head_only[i]`: the
/// i-th answers a HEAD); then whether the server closed the connection within 300 ms.
fn exchange(ctx: &mut Context, request: &[u8], head_only: &[bool]) -> (Vec<Response>, bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let fd = ctx.socket().unwrap();
    match ctx.connect(fd, SocketAddrV4::new(SERVER, PORT)) {
        Ok(()) | Err(Error::InProgress) => {}
        Err(e) => panic!("connect: {e}"),
    }
    let mut sent = 0;
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut eof = false;
    let mut chunk = vec![0u8; 65536];
    let mut close_deadline = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "no answer in 10 s: {responses:?}"
        );
        ctx.poll().unwrap();
        if sent < request.len() {
            match ctx.write(fd, &request[sent..]) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock | Error::NotConnected) => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        match ctx.read(fd, &mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Error::WouldBlock | Error::NotConnected) => {}
            // A server closing with our request bytes unread resets (as Linux does).
            Err(Error::ConnectionReset) => eof = true,
            Err(e) => panic!("read: {e}"),
        }
        // Take every complete response.
        while responses.len() < head_only.len() {
            let Some(h) = http::parse_response_head(&buf).expect("bad response head") else {
                break;
            };
            let len = if head_only[responses.len()] {
                0
            } else {
                h.content_length.expect("Content-Length") as usize
            };
            if buf.len() < h.head_len + len {
                break;
            }
            responses.push(Response {
                status: h.status,
                close: h.close,
                content_length: h.content_length,
                head: String::from_utf8_lossy(&buf[..h.head_len]).into_owned(),
                body: buf[h.head_len..h.head_len + len].to_vec(),
            });
            buf.drain(..h.head_len + len);
        }
        if responses.len() == head_only.len() {
            assert!(buf.is_empty(), "bytes after the last response: {buf:?}");
            let d = *close_deadline.get_or_insert(Instant::now() + Duration::from_millis(300));
            if eof || Instant::now() > d {
                break;
            }
        } else if eof {
            panic!("connection ended after {responses:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    close(ctx, fd);
    (responses, eof)
}

fn close(ctx: &mut Context, fd: Fd) {
    let _ = ctx.close(fd);
    for _ in 0..20 {
        let _ = ctx.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn raw_requests_statuses_keep_alive_and_close() {
    let setup = Setup::start("raw", &[]);
    let mut ctx = setup.raw_client();
    let k1 = setup.file("1k.bin");
    let k100 = setup.file("100k.bin");

    // Keep-alive: four pipelined requests on one connection, which stays open.
    let req = b"GET /1k.bin HTTP/1.1\r\nHost: x\r\n\r\n\
                HEAD /1k.bin HTTP/1.1\r\nHost: x\r\n\r\n\
                GET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
                GET /100k.bin HTTP/1.1\r\nHost: x\r\n\r\n";
    let (r, eof) = exchange(&mut ctx, req, &[false, true, false, false]);
    assert!(!eof, "the server closed a keep-alive connection");
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 404, 200]
    );
    assert!(r.iter().all(|r| !r.close), "{r:?}");
    assert!(
        r[0].head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        r[0].head
    );
    assert_eq!(sha256(&r[0].body), sha256(&k1));
    assert_eq!(r[1].content_length, Some(1024));
    assert!(r[1].body.is_empty());
    assert_eq!(sha256(&r[3].body), sha256(&k100));

    // Connection: close, and a directory's index.html.
    let (r, eof) = exchange(
        &mut ctx,
        b"GET /sub/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        &[false],
    );
    assert!(eof && r[0].close);
    assert_eq!(r[0].body, b"<h1>sub</h1>\n");
    assert!(r[0].head.contains("Content-Type: text/html\r\n"));

    // HTTP/1.0 closes by default; asked, it keeps alive.
    let (r, eof) = exchange(&mut ctx, b"GET /one.bin HTTP/1.0\r\n\r\n", &[false]);
    assert!(eof && r[0].close && r[0].status == 200);
    let (r, eof) = exchange(
        &mut ctx,
        b"GET /one.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        &[false],
    );
    assert!(!eof && !r[0].close);

    // Refusals: the status, then the connection closes.
    let refusals: &[(&[u8], u16)] = &[
        (
            b"POST /1k.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            405,
        ),
        (b"DELETE /1k.bin HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
        (b"GET /1k.bin HTTP/1.1\r\n\r\n", 400),
        (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    ];
    for &(req, status) in refusals {
        let (r, eof) = exchange(&mut ctx, req, &[false]);
        assert_eq!(r[0].status, status, "{}", String::from_utf8_lossy(req));
        assert!(eof && r[0].close, "{}", String::from_utf8_lossy(req));
    }
    // A head over 8 KiB.
    let mut long = b"GET /1k.bin HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9000));
    let (r, eof) = exchange(&mut ctx, &long, &[false]);
    assert!(eof && r[0].status == 400);

    // The server still serves after all that.
    let (r, _) = exchange(
        &mut ctx,
        b"GET /1k.bin HTTP/1.1\r\nHost: x\r\n\r\n",
        &[false],
    );
    assert_eq!(sha256(&r[0].body), sha256(&k1));
    drop(ctx);
}
