//! Scenario 6 of issue 6, SYN flood: our raw sender ([`super::rawsend`]) floods epserver
//! with SYNs from spoofed sources at its maximum rate while curl, from the kernel's
//! 10.0.0.1, makes legitimate requests.
//!
//! ## The design
//! ```text
//!   ns "ours"                          ns "mid"         ns "linux"
//!   epserver (child process) ◀─ SYNs ── relay ◀──────── flooder: AF_PACKET on io-linux
//!     SYN-ACKs (cookies) ─────────────▶ relay ────────▶ io-linux: dropped (not our MAC)
//!     HTTP ◀──────────────────────────────────────────▶ curl, 10.0.0.1
//! ```
//! - The spoofed SYNs come from random addresses of 198.18.0.0/15 (RFC 2544's benchmarking
//!   range, routed nowhere) and random ports, with a locally administered source MAC that
//!   no interface has. Our stack answers a SYN for no connection to the MAC it came from, so
//!   its SYN-ACKs cross the link to `io-linux`, where the kernel drops them as addressed to
//!   another host before IP ever sees them: nobody answers them, nothing is forwarded (the
//!   namespace forwards nothing anyway), no RST comes back.
//! - epserver runs as a child process (`mtcp-bench epserver`, or any executable that runs
//!   it with the same arguments) in our namespace, so that its peak resident set
//!   (`VmHWM` of `/proc/PID/status`) is the stack's and the server's alone: read once it
//!   listens, and again after the flood. Its last lines print every counter of its
//!   endpoint; SYN cookies sent and accepted are read from them.
//! - The flooder writes batches of 64 frames with `sendmmsg` until curl is done (and for
//!   [`MIN_FLOOD`] at least); the flood starts half a second before the first request, so
//!   every request meets a full SYN queue (beyond it, our stack answers with SYN cookies).
//! - curl makes `requests` requests, [`PARALLEL`] at a time, each on a new connection
//!   (`Connection: close`), with generous time limits: the relay, a single thread, drops
//!   frames when the flood fills its rings (legitimate ones too), and the kernel then
//!   retransmits its SYN after 1 s, 3 s, 7 s, … (30 s allow five tries).
//!
//! Passes when at least 90 % of the requests return the whole file with status 200, our
//! stack sent SYN cookies (else the flood did not flood) and epserver's peak resident set
//! grew by less than [`RSS_GROWTH_BOUND`]. Figure: success rate, flood rate, cookies, peak
//! RSS.
//!
//! ## What it does not do
//! No rate assertions: the flood rate depends on the machine and is printed. One flooder
//! thread; no fragment or ACK floods.

use super::rawsend::{RawSocket, Tcp4, SYN};
use super::{verdict, Lab, LinkKind, Outcome, Pattern, Record, TempDir, DEV_LINUX, OURS};
use crate::netns;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The port epserver listens on.
pub const PORT: u16 = 8080;
/// Size of the file the legitimate requests fetch.
pub const FILE_BYTES: usize = 4096;
/// Most the epserver process's peak resident set may grow during the flood: the stack's
/// tables are bounded (a SYN queue, then stateless cookies) and its rings allocated at
/// start (though touched lazily: two 8 MiB rings may become resident under load); a
/// per-SYN leak of 100 bytes would pass this after a few hundred thousand SYNs.
pub const RSS_GROWTH_BOUND: u64 = 64 << 20;
/// The flood lasts at least this long, however quickly curl is done.
pub const MIN_FLOOD: Duration = Duration::from_secs(3);
/// The share of legitimate requests that must succeed.
pub const MIN_SUCCESS: f64 = 0.9;
/// The source MAC of the spoofed SYNs (locally administered, owned by no interface).
pub const FLOOD_MAC: [u8; 6] = [0x02, 0x66, 0x6c, 0x6f, 0x6f, 0x64];
/// Requests curl runs at once (each on its own connection).
pub const PARALLEL: usize = 8;
/// Frames per `sendmmsg`.
const BATCH: usize = 64;

/// Scenario 6: `epserver` is the command that runs epserver (program and leading
/// arguments, as `[mtcp-bench, epserver]`; `-p`, `-f` and `--port` are appended); curl
/// makes `requests` requests during the flood.
pub fn syn_flood(epserver: &[OsString], requests: usize, seed: u64) -> Record {
    Record::from_result("syn-flood", flood_inner(epserver, requests, seed))
}

/// What the flooder did.
#[derive(Debug, Clone, Copy, Default)]
struct FloodStats {
    sent: u64,
    refused: u64,
    elapsed: Duration,
}

/// The flooder: SYN batches from random sources until `stop`.
fn flood(
    raw: RawSocket,
    ours_mac: [u8; 6],
    seed: u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<FloodStats> {
    let mut rng = Pattern::new(seed);
    let mut word = [0u8; 8];
    let mut stats = FloodStats::default();
    let start = Instant::now();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        for _ in 0..BATCH {
            rng.fill(&mut word);
            let r = u64::from_le_bytes(word);
            let src = Ipv4Addr::new(198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8);
            let port = 1024 + ((r >> 24) as u16 % 64_000);
            let mut s = Tcp4::new(
                FLOOD_MAC,
                ours_mac,
                src,
                OURS,
                port,
                PORT,
                (r >> 32) as u32,
                0,
                SYN,
            );
            s.tcp_options = vec![2, 4, 0x05, 0xb4]; // MSS 1460, as a real SYN
            s.ident = r as u16;
            batch.push(s.frame());
        }
        let mut at = 0;
        while at < batch.len() {
            match raw.send_batch(&batch[at..]) {
                Ok(n) => {
                    stats.sent += n as u64;
                    at += n.max(1);
                }
                // The veth's peer backlog is full: that frame is lost; go on.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    stats.refused += 1;
                    at += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// The epserver child: SIGTERM then SIGKILL on drop; its output collected.
struct Server {
    child: Child,
    out: Option<JoinHandle<Vec<String>>>,
}

impl Server {
    /// Stops it (SIGTERM, then SIGKILL after 5 s) and returns what it printed.
    fn stop(&mut self) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.out
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `VmHWM` (peak resident set) of process `pid`, bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// The sum over cores of counter `name` in epserver's `counters: Counters { … }` lines.
fn printed_counter(lines: &[String], name: &str) -> Option<u64> {
    let key = format!(" {name}: ");
    let mut found = None;
    for l in lines.iter().filter(|l| l.contains(" counters: ")) {
        let v = l.split(&key).nth(1)?;
        let v: u64 = v
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        found = Some(found.unwrap_or(0) + v);
    }
    found
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

fn flood_inner(epserver: &[OsString], requests: usize, seed: u64) -> Outcome {
    let fail = |e: String| (format!("failed: {e}"), String::new());
    if !netns::is_root() {
        return Err(fail(netns::skip_message("SYN flood against epserver")));
    }
    let (program, leading) = epserver
        .split_first()
        .ok_or_else(|| fail("no epserver command".into()))?;
    let dir = std::env::temp_dir().join(format!("mtcp-interop-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = TempDir(dir);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).map_err(|e| fail(e.to_string()))?;
    let mut body = vec![0u8; FILE_BYTES];
    Pattern::new(seed).fill(&mut body);
    std::fs::write(www.join("file.bin"), &body).map_err(|e| fail(e.to_string()))?;

    let mut lab =
        Lab::new("flood", LinkKind::Clean, seed, None).map_err(|e| fail(e.to_string()))?;
    let conf = dir.0.join("mtcp.toml");
    std::fs::write(&conf, lab.our_config_text(seed, "")).map_err(|e| fail(e.to_string()))?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.ours_ns()])
        .arg(program)
        .args(leading)
        .arg("-p")
        .arg(&www)
        .arg("-f")
        .arg(&conf)
        .args(["--port", &PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("starting epserver ({program:?}): {e}")))?;
    let stdout = child.stdout.take();
    let (ready_tx, ready_rx) = mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(s) = stdout {
            for l in BufReader::new(s).lines().map_while(Result::ok) {
                if l.contains("listening on") {
                    let _ = ready_tx.send(());
                }
                lines.push(l);
            }
        }
        lines
    });
    let mut server = Server {
        child,
        out: Some(out),
    };
    let pid = server.child.id();
    if ready_rx.recv_timeout(Duration::from_secs(15)).is_err() {
        let lines = server.stop();
        return Err(("failed: epserver did not start".into(), lines.join("\n")));
    }
    let rss_start = peak_rss(pid).unwrap_or(0);

    // The flooder, in the kernel's namespace, until curl is done.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let ours_mac = lab.ours_mac;
    let flood_start = Instant::now();
    let flooder = netns::spawn_in(lab.linux_ns(), move || {
        RawSocket::sender(DEV_LINUX).and_then(|raw| flood(raw, ours_mac, seed, flag))
    });
    std::thread::sleep(Duration::from_millis(500));

    let url = format!("http://{OURS}:{PORT}/file.bin");
    let mut curl = Command::new("ip");
    curl.args(["netns", "exec", lab.linux_ns(), "curl", "-sS", "--http1.1"])
        .args(["--parallel", "--parallel-max", &PARALLEL.to_string()])
        .args(["-H", "Connection: close", "--connect-timeout", "30"])
        .args(["--max-time", "45"])
        .args(["-w", "%{http_code} %{size_download} %{time_connect}\\n"]);
    for _ in 0..requests {
        curl.args(["-o", "/dev/null", &url]);
    }
    let start = Instant::now();
    let curl_out = curl.stderr(Stdio::null()).output();
    let curl_time = start.elapsed();
    std::thread::sleep(MIN_FLOOD.saturating_sub(flood_start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder
        .join()
        .map_err(|_| "the flooder panicked".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .and_then(|r| r.map_err(|e| format!("flooder: {e}")));
    let rss_peak = peak_rss(pid).unwrap_or(0);
    let lines = server.stop();
    drop(server);
    let relay = lab.stop_relay();

    let mut detail = Vec::new();
    let mut problems = Vec::new();
    let ok = match &curl_out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let want = format!("200 {FILE_BYTES} ");
            let ok = text.lines().filter(|l| l.starts_with(&want)).count();
            let others: Vec<&str> = text.lines().filter(|l| !l.starts_with(&want)).collect();
            if !others.is_empty() {
                detail.push(format!("curl, other outcomes: {others:?}"));
            }
            let slowest = text
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
                .fold(0.0, f64::max);
            detail.push(format!(
                "curl: slowest connect {slowest:.1} s (SYN retransmissions: the relay drops \
                 frames when the flood fills its rings)"
            ));
            ok
        }
        Err(e) => {
            problems.push(format!("curl: {e} (apt-get install curl)"));
            0
        }
    };
    let f = match flooded {
        Ok(f) => f,
        Err(e) => {
            problems.push(e);
            FloodStats::default()
        }
    };
    let rate = f.sent as f64 / f.elapsed.as_secs_f64().max(1e-9);
    let cookies = printed_counter(&lines, "syn_cookies_sent");
    let accepted = printed_counter(&lines, "syn_cookies_accepted").unwrap_or(0);
    let frames_in = printed_counter(&lines, "frames_in").unwrap_or(0);
    let queue_full = printed_counter(&lines, "syn_queue_full").unwrap_or(0);
    let share = ok as f64 / requests.max(1) as f64;
    let figure = format!(
        "{ok}/{requests} requests ok ({:.0} %) in {:.1} s under {:.0} k SYN/s ({} spoofed \
         SYNs), {} SYN cookies sent, {accepted} accepted; epserver peak RSS {} ({} before)",
        share * 100.0,
        curl_time.as_secs_f64(),
        rate / 1e3,
        f.sent,
        cookies.map_or("?".to_string(), |c| c.to_string()),
        mib(rss_peak),
        mib(rss_start)
    );
    detail.push(format!(
        "flooder: {} frames in {:.1} s, {} refused (ENOBUFS); our stack took {frames_in} frames \
         in, SYN queue full {queue_full} times",
        f.sent,
        f.elapsed.as_secs_f64(),
        f.refused
    ));
    match relay {
        Ok(r) => detail.push(format!(
            "relay ours->linux: {}; linux->ours: {}",
            r.a_to_b, r.b_to_a
        )),
        Err(e) => problems.push(format!("relay: {e}")),
    }
    detail.extend(lines.iter().filter(|l| l.contains("stack:")).cloned());
    if share < MIN_SUCCESS {
        problems.push(format!(
            "only {ok} of {requests} requests succeeded (need {:.0} %)",
            MIN_SUCCESS * 100.0
        ));
    }
    match cookies {
        Some(0) => problems.push("no SYN cookie sent: the flood did not fill the SYN queue".into()),
        None => problems.push("epserver printed no counters".into()),
        Some(_) => {}
    }
    if rss_peak == 0 || rss_peak > rss_start + RSS_GROWTH_BOUND {
        problems.push(format!(
            "epserver peak RSS {} grew more than {} during the flood",
            mib(rss_peak),
            mib(RSS_GROWTH_BOUND)
        ));
    }
    verdict(figure, detail.join("\n"), &problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_epserver_lines() {
        let lines = vec![
            "epserver: core 0: 3 connections".to_string(),
            "epserver: core 0 counters: Counters { frames_in: 10, syn_cookies_sent: 7, \
             syn_cookies_accepted: 2 }"
                .to_string(),
            "epserver: core 1 counters: Counters { frames_in: 5, syn_cookies_sent: 1, \
             syn_cookies_accepted: 0 }"
                .to_string(),
        ];
        assert_eq!(printed_counter(&lines, "syn_cookies_sent"), Some(8));
        assert_eq!(printed_counter(&lines, "frames_in"), Some(15));
        assert_eq!(printed_counter(&lines, "nope"), None);
        assert_eq!(printed_counter(&lines[..1], "frames_in"), None);
    }
}
