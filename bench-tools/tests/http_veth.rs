//! `epserver` and `epwget` against Linux over a veth pair (root): our side runs on
//! AF_PACKET (`afpacket:<veth end>`) in one network namespace, the kernel's TCP in the
//! other, with 10.0.0.1 on its end.
//!
//! - `linux_clients_against_epserver`: curl (bodies byte for byte, sha256; keep-alive;
//!   HEAD; 404; 405), wrk, ab (with and without keep-alive) and h2load (`--h1`) against
//!   epserver. wrk, ab and h2load do not keep bodies: they check counts, lengths and
//!   statuses; curl checks bytes.
//! - `epwget_against_nginx`: nginx on the kernel side serves the same files; epwget fetches
//!   each with `-o` and `--verify` (sha256 of the first body, every further body compared
//!   with it), with and without keep-alive, and counts a 404.
//!
//! Without root these print `skipped: needs root` and pass; a missing tool (curl, wrk, ab,
//! h2load: `apt-get install curl wrk apache2-utils nghttp2-client nginx`) skips its part
//! with a note. Namespaces (and the veth) are deleted, children killed and files removed
//! when a test ends, passed or not.

mod common;

use bench_tools::netns::{self, Namespaces, VethPair};
use common::{await_listening, run_to_end, sha256, write_www, FILES};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 8080;
const OURS: &str = "10.0.0.2";
const LINUX: &str = "10.0.0.1";

fn installed(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        println!("skipped part: {tool} is not installed");
    }
    found
}

/// A child process killed (SIGTERM, then SIGKILL after 5 s) on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !std::thread::panicking() && self.name == "epserver" {
                    assert!(status.success(), "{} exited with {status}", self.name);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces joined by a veth pair, the document root and our stack's configuration
/// (on `ns_a`, at 10.0.0.2); the kernel has 10.0.0.1 on `ns_b`'s end. Field order is drop
/// order: processes first, then files, then the namespaces.
struct Lab {
    procs: Vec<Proc>,
    dir: TempDir,
    pair: VethPair,
    _lab: Namespaces,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Lab {
    fn new(tag: &str, dev_a: &str, dev_b: &str) -> Lab {
        let mut lab = Namespaces::new(tag);
        let pair = lab.veth_pair(dev_a, dev_b).expect("veth pair");
        for (ns, dev) in [(&pair.ns_a, &pair.dev_a), (&pair.ns_b, &pair.dev_b)] {
            lab.disable_offloads(ns, dev).expect("offloads off");
        }
        lab.add_address(&pair.ns_b, &pair.dev_b, &format!("{LINUX}/24"))
            .expect("address");
        let mac = |ns: &str, dev: &str| {
            lab.mac(ns, dev)
                .expect("MAC")
                .map(|b| format!("{b:02x}"))
                .join(":")
        };
        let (mac_a, mac_b) = (mac(&pair.ns_a, &pair.dev_a), mac(&pair.ns_b, &pair.dev_b));
        let dir = std::env::temp_dir().join(format!("http-veth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dir = TempDir(dir);
        write_www(&dir.0.join("www"));
        std::fs::write(
            dir.0.join("mtcp.toml"),
            format!(
                "port = \"afpacket:{}\"\npin_threads = false\n\
                 [interface]\nmac = \"{mac_a}\"\naddress = \"{OURS}/24\"\n\
                 [[arp]]\nip = \"{LINUX}\"\nmac = \"{mac_b}\"\n\
                 [tcp]\ntime_wait_ms = 500\n",
                pair.dev_a
            ),
        )
        .unwrap();
        Lab {
            procs: Vec::new(),
            dir,
            pair,
            _lab: lab,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// A command run inside namespace `ns`.
    fn cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Runs `cmd` to the end (killed after 60 s): (success, stdout).
    fn run(&self, cmd: Command) -> (bool, String) {
        let line = format!("{cmd:?}");
        let (status, out) = run_to_end(cmd, &line);
        (status.success(), out)
    }

    /// Starts epserver in `ns_a` and waits for it to listen.
    fn start_epserver(&mut self) {
        let mut cmd = self.cmd(&self.pair.ns_a, env!("CARGO_BIN_EXE_epserver"));
        cmd.arg("-p")
            .arg(self.path("www"))
            .arg("-f")
            .arg(self.path("mtcp.toml"))
            .args(["--port", &PORT.to_string()])
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("start epserver");
        let stdout = child.stdout.take().unwrap();
        self.procs.push(Proc {
            child,
            name: "epserver",
        });
        await_listening(stdout);
    }

    fn curl(&self, args: &[&str]) -> (bool, String) {
        let mut c = self.cmd(&self.pair.ns_b, "curl");
        c.args(["-sS", "--http1.1", "--max-time", "20"]).args(args);
        self.run(c)
    }
}

fn url(host: &str, path: &str) -> String {
    format!("http://{host}:{PORT}{path}")
}

fn file(www: &Path, name: &str) -> Vec<u8> {
    std::fs::read(www.join(name)).unwrap()
}

#[test]
fn linux_clients_against_epserver() {
    if netns::skip_unless_root("epserver against Linux clients over veth") || !installed("curl") {
        return;
    }
    let mut lab = Lab::new("httpsrv", "hs-mtcp", "hs-linux");
    lab.start_epserver();
    let www = lab.path("www");

    // curl: every file, byte for byte.
    for &(name, _) in FILES {
        let out = lab.path(&format!("curl-{name}"));
        let (ok, _) = lab.curl(&[
            "--fail",
            "-o",
            out.to_str().unwrap(),
            &url(OURS, &format!("/{name}")),
        ]);
        assert!(ok, "curl {name}");
        assert_eq!(
            sha256(&std::fs::read(&out).unwrap()),
            sha256(&file(&www, name)),
            "{name}"
        );
    }
    // Keep-alive: two transfers, one connection.
    let (o1, o2) = (lab.path("ka1"), lab.path("ka2"));
    let (ok, out) = lab.curl(&[
        "-w",
        "%{num_connects} ",
        "-o",
        o1.to_str().unwrap(),
        "-o",
        o2.to_str().unwrap(),
        &url(OURS, "/100k.bin"),
        &url(OURS, "/1k.bin"),
    ]);
    assert!(ok);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1", "0"],
        "second transfer reconnected"
    );
    assert_eq!(
        sha256(&std::fs::read(&o1).unwrap()),
        sha256(&file(&www, "100k.bin"))
    );
    assert_eq!(
        sha256(&std::fs::read(&o2).unwrap()),
        sha256(&file(&www, "1k.bin"))
    );
    // Statuses and HEAD.
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        lab.curl(&a).1
    };
    assert_eq!(code(&[&url(OURS, "/missing")]), "404");
    assert_eq!(
        code(&["-X", "POST", "-d", "abc", &url(OURS, "/1k.bin")]),
        "405"
    );
    assert_eq!(
        code(&["-H", "Connection: close", &url(OURS, "/one.bin")]),
        "200"
    );
    let (ok, head) = lab.curl(&["-I", &url(OURS, "/5m.bin")]);
    assert!(
        ok && head
            .to_ascii_lowercase()
            .contains("content-length: 5242880"),
        "{head}"
    );

    if installed("wrk") {
        let mut c = lab.cmd(&lab.pair.ns_b, "wrk");
        c.args([
            "-t1",
            "-c8",
            "-d1s",
            "--timeout",
            "5s",
            &url(OURS, "/1k.bin"),
        ]);
        let (ok, out) = lab.run(c);
        assert!(ok, "wrk");
        assert!(
            !out.contains("Socket errors") && !out.contains("Non-2xx"),
            "{out}"
        );
        assert!(out.contains("requests in"), "{out}");
    }
    if installed("ab") {
        for keep_alive in [false, true] {
            let mut c = lab.cmd(&lab.pair.ns_b, "ab");
            c.args(["-q", "-n", "200", "-c", "8", "-s", "10"]);
            if keep_alive {
                c.arg("-k");
            }
            c.arg(url(OURS, "/100k.bin"));
            let (ok, out) = lab.run(c);
            assert!(ok, "ab");
            assert!(out.contains("Complete requests:      200"), "{out}");
            assert!(out.contains("Failed requests:        0"), "{out}");
            assert!(
                out.contains("Document Length:        102400 bytes"),
                "{out}"
            );
            assert!(!out.contains("Non-2xx"), "{out}");
        }
    }
    if installed("h2load") {
        let mut c = lab.cmd(&lab.pair.ns_b, "h2load");
        c.args(["--h1", "-n", "200", "-c", "8", &url(OURS, "/1k.bin")]);
        let (ok, out) = lab.run(c);
        assert!(ok, "h2load");
        assert!(out.contains("200 succeeded, 0 failed, 0 errored"), "{out}");
    }
}

#[test]
fn epwget_against_nginx() {
    if netns::skip_unless_root("epwget against nginx over veth")
        || !installed("nginx")
        || !installed("curl")
    {
        return;
    }
    let mut lab = Lab::new("httpcli", "hc-mtcp", "hc-linux");
    let dir = lab.dir.0.clone();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n sendfile on;\n keepalive_requests 100000;\n\
             client_body_temp_path {d}/t-body;\n proxy_temp_path {d}/t-proxy;\n\
             fastcgi_temp_path {d}/t-fcgi;\n uwsgi_temp_path {d}/t-uwsgi;\n\
             scgi_temp_path {d}/t-scgi;\n\
             server {{ listen {LINUX}:{PORT}; root {d}/www; }}\n}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut c = lab.cmd(&lab.pair.ns_b, "nginx");
    c.arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"));
    let child = c.stdin(Stdio::null()).spawn().expect("start nginx");
    lab.procs.push(Proc {
        child,
        name: "nginx",
    });
    // Ready when the kernel side itself can fetch a file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab
        .curl(&["--fail", "-o", "/dev/null", &url(LINUX, "/one.bin")])
        .0
    {
        assert!(Instant::now() < deadline, "nginx did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let www = lab.path("www");
    let epwget = |path: &str, requests: u64, args: &[&str]| {
        let mut c = lab.cmd(&lab.pair.ns_a, env!("CARGO_BIN_EXE_epwget"));
        c.arg(format!("{LINUX}:{PORT}{path}"))
            .arg(requests.to_string())
            .arg("-f")
            .arg(lab.path("mtcp.toml"))
            .args(["--timeout", "30"])
            .args(args);
        lab.run(c)
    };
    let field = |out: &str, name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name:?} in epwget's output"))
    };
    for keep_alive in [false, true] {
        for &(name, len) in FILES {
            let out = lab.path(&format!("epwget-{name}"));
            let mut args = vec!["-o", out.to_str().unwrap(), "--verify", "-c", "2"];
            if keep_alive {
                args.push("--keep-alive");
            }
            let (ok, text) = epwget(&format!("/{name}"), 4, &args);
            assert!(ok, "epwget {name}");
            assert_eq!(field(&text, "status 200"), 4);
            assert_eq!(field(&text, "body bytes"), 4 * len as u64);
            assert_eq!(
                sha256(&std::fs::read(&out).unwrap()),
                sha256(&file(&www, name)),
                "{name}"
            );
        }
    }
    let (ok, text) = epwget("/missing", 2, &[]);
    assert!(ok);
    assert_eq!(field(&text, "status 404"), 2);
}
