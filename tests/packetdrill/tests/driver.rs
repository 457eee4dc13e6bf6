//! The adapter from C, loaded the way packetdrill loads it: compiles `tests/c/driver.c` with
//! the system C compiler and runs it on the `libmtcp_packetdrill.so` cargo built beside this
//! test. The program `dlopen`s the library, calls `packetdrill_interface_init`, and drives a
//! passive open, data both ways, a retransmission on the virtual clock, a close and a few
//! errno cases with IPv4/TCP packets it builds and checks itself. Skipped, and passing, when
//! no C compiler is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C compiler: `$CC`, else `cc`, if it runs.
fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(cc)
}

/// `libmtcp_packetdrill.so` of this build. Cargo builds the library's every crate type for
/// the tests into the `deps/` directory holding this test binary; `cargo build` also copies
/// it one level up, where it is looked for second.
fn shared_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe
        .parent()
        .expect("test binary in <target>/<profile>/deps");
    let name = "libmtcp_packetdrill.so";
    let candidates = [deps.join(name), deps.join("..").join(name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found in {}", deps.display()))
        .clone()
}

#[test]
fn c_driver_runs_a_connection_through_the_interface() {
    let Some(cc) = compiler() else {
        println!("skipped: no C compiler");
        return;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pd-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let exe = work.join("driver");
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(crate_dir.join("tests/c/driver.c"))
        .arg("-ldl")
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C compiler");
    assert!(
        out.status.success(),
        "compiling driver.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = Command::new(&exe)
        .arg(shared_lib())
        .output()
        .expect("run driver");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(run.status.success(), "driver failed ({})", run.status);
    assert!(stdout.lines().last() == Some("driver ok"), "{stdout}");
    let _ = std::fs::remove_dir_all(&work);
}
