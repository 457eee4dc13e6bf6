//! `mtcp-conformance <corpus-dir> [--json PATH] [--verbose] [--only SUBSTR] [--profile NAME]`
//!
//! Runs every `*.pkt` under the corpus directory against tcp-core (see
//! `mtcp_tests::conformance`), prints one line per script that did not pass (every script
//! with `--verbose`) and a summary by directory; `--json` writes one record per script.
//! The list of scripts whose difference is a documented RFC choice is read from
//! `tests/conformance-differs.txt` (or `--differs PATH`). Exits 0 whatever the results.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use mtcp_tests::conformance::{self, Class, Profile};

const USAGE: &str = "usage: mtcp-conformance <corpus-dir> [--json PATH] [--verbose] \
                     [--only SUBSTR] [--profile freebsd] [--differs PATH]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut json = None;
    let mut verbose = false;
    let mut only = None;
    let mut profile = "freebsd".to_string();
    let mut differs_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance-differs.txt");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = args.next().map(PathBuf::from),
            "--verbose" | "-v" => verbose = true,
            "--only" => only = args.next(),
            "--profile" => profile = args.next().unwrap_or_default(),
            "--differs" => differs_path = args.next().map(PathBuf::from).unwrap_or_default(),
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if dir.is_none() && !a.starts_with("--") => dir = Some(PathBuf::from(a)),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(profile) = Profile::by_name(&profile) else {
        eprintln!("unknown profile `{profile}` (known: freebsd)");
        return ExitCode::from(2);
    };
    let differs = match std::fs::read_to_string(&differs_path) {
        Ok(t) => conformance::parse_differs(&t),
        Err(e) => {
            eprintln!("{}: {e} (no differs list used)", differs_path.display());
            Default::default()
        }
    };
    let results = match conformance::run_corpus(&dir, &profile, &differs, only.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    for r in &results {
        if verbose || r.class != Class::Passed {
            println!("{:<15} {}  {}", r.class.name(), r.script, r.detail);
        }
    }
    println!();
    print!("{}", conformance::summary(&results));
    if let Some(path) = json {
        if let Err(e) = std::fs::write(&path, conformance::to_json(&results)) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
