//! # Conformance: packetdrill scripts against tcp-core
//!
//! Runs the scripts of a packetdrill corpus (`../shared/conformance/`, the FreeBSD TCP test
//! suite) against one tcp-core `Endpoint` each, on a virtual clock, through a small socket
//! shim (issue 7, part 1).
//!
//! - [`parse`]: the script format, as far as the corpus uses it.
//! - [`frame`]: frames built and parsed byte by byte (independently of tcp-core's wire code).
//! - [`profile`]: how FreeBSD's defaults are read for our stack; every translation is listed
//!   there.
//! - [`runner`]: one script, one endpoint: the comparison rules.
//!
//! Each script ends `passed`, `failed` (first mismatching line, expected vs actual),
//! `not_applicable` (the reason: a socket call, option or feature we do not offer), or
//! `differs`: it failed, and `tests/conformance-differs.txt` names it with the RFC choice
//! that explains the difference. A listed script that passes is reported as passed (the
//! list entry is then stale).
//!
//! What it does not do: IPv6, ECN, TCP-MD5, UDP encapsulation, `poll`/`epoll`, more than one
//! connection under test at a time, Python blocks (`%{ }%`, skipped) and shell commands other
//! than `sysctl` (skipped; `sysctl` lines configure the endpoint through the profile).

pub mod frame;
pub mod parse;
pub mod profile;
pub mod runner;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use profile::Profile;
pub use runner::Outcome;

/// The result class of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Every line matched.
    Passed,
    /// A line did not match.
    Failed,
    /// Failed, and listed as a documented RFC choice.
    Differs,
    /// Needs something not offered.
    NotApplicable,
}

impl Class {
    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Class::Passed => "passed",
            Class::Failed => "failed",
            Class::Differs => "differs",
            Class::NotApplicable => "not_applicable",
        }
    }
}

/// The result of one script.
#[derive(Debug, Clone)]
pub struct ScriptResult {
    /// Path relative to the corpus directory, with `/`.
    pub script: String,
    /// Its class.
    pub class: Class,
    /// Why (failure detail, reason, or the RFC choice plus the failure).
    pub detail: String,
}

/// The checked-in list of scripts whose failure is a documented RFC choice: one
/// `path<whitespace>reason` per line, `#` comments.
pub fn parse_differs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((p, r)) => (p.to_string(), r.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// Runs one script's text.
pub fn run_text(text: &str, profile: &Profile) -> Outcome {
    match parse::parse(text, profile.defines) {
        Ok(script) => runner::run(&script, profile),
        Err(e) => Outcome::NotApplicable(format!("cannot parse {e}")),
    }
}

/// Every `*.pkt` under `dir`, sorted.
pub fn find_scripts(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "pkt") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs every script under `dir` whose relative path contains `only` (if given).
pub fn run_corpus(
    dir: &Path,
    profile: &Profile,
    differs: &BTreeMap<String, String>,
    only: Option<&str>,
) -> std::io::Result<Vec<ScriptResult>> {
    let mut results = Vec::new();
    for path in find_scripts(dir)? {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if only.is_some_and(|o| !rel.contains(o)) {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
        let outcome = run_text(&text, profile);
        results.push(classify(rel, outcome, differs));
    }
    Ok(results)
}

fn classify(script: String, outcome: Outcome, differs: &BTreeMap<String, String>) -> ScriptResult {
    let (class, detail) = match outcome {
        Outcome::Passed => (Class::Passed, String::new()),
        Outcome::NotApplicable(why) => (Class::NotApplicable, why),
        Outcome::Failed { line, detail } => {
            let detail = format!("line {line}: {detail}");
            match differs.get(&script) {
                Some(reason) => (Class::Differs, format!("{reason} [{detail}]")),
                None => (Class::Failed, detail),
            }
        }
    };
    ScriptResult {
        script,
        class,
        detail,
    }
}

/// The directory a script is counted under: its first two path components
/// (`state-event-engine/rcv-rst-listen`), or the first for scripts one level deep.
pub fn group_of(script: &str) -> String {
    let parts: Vec<&str> = script.split('/').collect();
    match parts.len() {
        0 | 1 => ".".to_string(),
        2 => parts[0].to_string(),
        _ => format!("{}/{}", parts[0], parts[1]),
    }
}

/// Counts per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Differs.
    pub differs: usize,
    /// Not applicable.
    pub not_applicable: usize,
}

impl Counts {
    fn add(&mut self, c: Class) {
        match c {
            Class::Passed => self.passed += 1,
            Class::Failed => self.failed += 1,
            Class::Differs => self.differs += 1,
            Class::NotApplicable => self.not_applicable += 1,
        }
    }

    /// All scripts.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.differs + self.not_applicable
    }
}

/// Totals over `results`.
pub fn totals(results: &[ScriptResult]) -> Counts {
    let mut c = Counts::default();
    for r in results {
        c.add(r.class);
    }
    c
}

/// A table of counts by directory, and the totals.
pub fn summary(results: &[ScriptResult]) -> String {
    let mut groups: BTreeMap<String, Counts> = BTreeMap::new();
    for r in results {
        groups.entry(group_of(&r.script)).or_default().add(r.class);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<52} {:>6} {:>6} {:>7} {:>6} {:>6}",
        "directory", "passed", "failed", "differs", "n/a", "total"
    );
    let mut row = |name: &str, c: &Counts| {
        let _ = writeln!(
            s,
            "{:<52} {:>6} {:>6} {:>7} {:>6} {:>6}",
            name,
            c.passed,
            c.failed,
            c.differs,
            c.not_applicable,
            c.total()
        );
    };
    for (g, c) in &groups {
        row(g, c);
    }
    row("TOTAL", &totals(results));
    s
}

/// One JSON record per script, as an array.
pub fn to_json(results: &[ScriptResult]) -> String {
    let records: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "script": r.script,
                "result": r.class.name(),
                "detail": r.detail,
            })
        })
        .collect();
    serde_json::to_string_pretty(&records).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: &str = "--tolerance_usecs=10000
0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0 fcntl(3, F_SETFL, O_RDWR | O_NONBLOCK) = 0
+0 setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0 bind(3, ..., ...) = 0
+0 listen(3, 1) = 0
+0 < S 0:0(0) win 65535 <mss 1460,sackOK,eol,eol>
+0 > S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,eol,eol>
+0.01 < . 1:1(0) ack 1 win 65535
+0 accept(3, ..., ...) = 4
+0 getsockopt(4, SOL_SOCKET, SO_RCVBUF, [65700], [4]) = 0
+0 recv(4, ..., 100, 0) = -1 EAGAIN (Resource temporarily unavailable)
+0.1 < F. 1:1(0) ack 1 win 65535
+0 > . 1:1(0) ack 2 win 65535
+0 recv(4, ..., 100, 0) = 0
+0 close(4) = 0
+0 > F. 1:1(0) ack 2 win 65535
+0.01 < . 2:2(0) ack 2 win 65535
";

    #[test]
    fn a_correct_script_passes_and_every_mutation_of_an_expectation_fails() {
        assert_eq!(run_text(HANDSHAKE, &profile::FREEBSD), Outcome::Passed);
        for (from, to) in [
            ("> S. 0:0(0) ack 1", "> S. 0:0(0) ack 2"),
            ("> S. 0:0(0) ack 1", "> S 0:0(0) ack 1"),
            (
                "<mss 1460,sackOK,eol,eol>\n+0.01",
                "<mss 1400,sackOK,eol,eol>\n+0.01",
            ),
            ("> . 1:1(0) ack 2", "> . 1:2(1) ack 2"),
            ("> . 1:1(0) ack 2 win 65535", "> . 1:1(0) ack 2 win 60000"),
            ("+0 > F. 1:1(0)", "+0.5 > F. 1:1(0)"),
            ("[65700]", "[65536]"),
            ("= -1 EAGAIN", "= 0"),
            ("recv(4, ..., 100, 0) = 0", "recv(4, ..., 100, 0) = 1"),
            ("accept(3, ..., ...) = 4", "accept(3, ..., ...) = 5"),
            (
                "+0 close(4) = 0\n",
                "+0 close(4) = 0\n+0 > R 2:2(0) win 0\n",
            ),
            ("+0 > . 1:1(0) ack 2 win 65535\n", ""),
            ("O_RDWR | O_NONBLOCK", "O_RDWR"),
        ] {
            assert!(HANDSHAKE.contains(from), "{from}");
            let mutated = HANDSHAKE.replacen(from, to, 1);
            let got = run_text(&mutated, &profile::FREEBSD);
            assert!(
                matches!(got, Outcome::Failed { .. }),
                "mutation {from:?} -> {to:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn truncated_and_garbled_scripts_never_panic() {
        for n in 0..HANDSHAKE.len() {
            if HANDSHAKE.is_char_boundary(n) {
                let _ = run_text(&HANDSHAKE[..n], &profile::FREEBSD);
            }
        }
        let garbled = HANDSHAKE
            .replace("0:0(0)", "...(0)")
            .replace("ack", "ack ack");
        assert!(matches!(
            run_text(&garbled, &profile::FREEBSD),
            Outcome::NotApplicable(_)
        ));
    }
}
