//! The conformance ratchet: runs the whole packetdrill corpus against tcp-core (virtual clock,
//! well under a second) and fails if fewer scripts pass than `tests/conformance-passed.txt`
//! records. The number only goes up: raise it when more scripts pass.
//!
//! The corpus is `$MTCP_CONFORMANCE_CORPUS`, or the copy in `tests/conformance/` (of the
//! project's `../shared/conformance/`, so that a clean checkout has it).

use std::path::PathBuf;

use mtcp_tests::conformance::{self, profile::FREEBSD};

fn corpus() -> PathBuf {
    if let Some(p) = std::env::var_os("MTCP_CONFORMANCE_CORPUS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/freebsd-tcp-testsuite")
}

#[test]
fn pass_count_does_not_drop() {
    let dir = corpus();
    assert!(
        dir.is_dir(),
        "conformance corpus not found at {} (set MTCP_CONFORMANCE_CORPUS)",
        dir.display()
    );
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let differs = conformance::parse_differs(
        &std::fs::read_to_string(manifest.join("conformance-differs.txt")).unwrap(),
    );
    let recorded: usize = std::fs::read_to_string(manifest.join("conformance-passed.txt"))
        .unwrap()
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .and_then(|l| l.trim().parse().ok())
        .expect("conformance-passed.txt holds the recorded pass count");
    let results = conformance::run_corpus(&dir, &FREEBSD, &differs, None).unwrap();
    let summary = conformance::summary(&results);
    println!("{summary}");
    let totals = conformance::totals(&results);
    assert!(
        totals.passed >= recorded,
        "{} scripts pass, {recorded} recorded in conformance-passed.txt\n{summary}",
        totals.passed
    );
    // Every listed `differs` script must exist (a renamed script must not hide a failure).
    for script in differs.keys() {
        assert!(
            results.iter().any(|r| &r.script == script),
            "conformance-differs.txt names {script}, which is not in the corpus"
        );
    }
}
