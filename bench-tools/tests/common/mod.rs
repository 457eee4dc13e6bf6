//! What the HTTP tests share: the document root they serve, sha256, running a client.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Test files: name and size; contents from a fixed seed.
pub const FILES: &[(&str, usize)] = &[
    ("empty.bin", 0),
    ("one.bin", 1),
    ("1k.bin", 1024),
    ("100k.bin", 100 * 1024),
    ("5m.bin", 5 << 20),
];

/// `len` pseudo-random bytes from `seed` (xorshift).
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Creates `www` with [`FILES`] and `sub/index.html`.
pub fn write_www(www: &Path) {
    std::fs::create_dir_all(www.join("sub")).unwrap();
    for (i, &(name, len)) in FILES.iter().enumerate() {
        std::fs::write(www.join(name), seeded_bytes(len, 1 + i as u64)).unwrap();
    }
    std::fs::write(www.join("sub/index.html"), b"<h1>sub</h1>\n").unwrap();
}

/// Runs `cmd` to the end with its output captured; kills it (and fails the test) after 60 s.
/// Prints both outputs under `what`. Returns (status, stdout).
pub fn run_to_end(mut cmd: Command, what: &str) -> (ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("[{what}] {}\n{stdout}", out.status);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status, stdout)
}

/// Echoes epserver's output (`stdout`) and returns once it says it is listening; fails the
/// test after 10 s.
pub fn await_listening(stdout: ChildStdout) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[epserver] {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening") => return,
            Ok(_) => {}
            Err(_) => panic!("epserver did not start listening"),
        }
    }
}
