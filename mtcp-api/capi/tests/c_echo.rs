//! The C ABI from C: compiles `tests/c/echo.c` with `cc` against `include/` and the
//! `libmtcp.a` that cargo built beside this test, and runs it (an epoll echo server in a
//! forked process and a client, over a shared-memory link). Skipped, and passing, when no C
//! compiler is installed.

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

/// `libmtcp.a` of this build. Cargo builds the library's every crate type for the tests
/// into the `deps/` directory holding this test binary (whatever the target directory);
/// `cargo build` also copies it one level up, where it is looked for second.
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe
        .parent()
        .expect("test binary in <target>/<profile>/deps");
    let candidates = [deps.join("libmtcp.a"), deps.join("../libmtcp.a")];
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libmtcp.a not found in {}", deps.display()))
        .clone()
}

#[test]
fn c_epoll_echo_over_shm() {
    let Some(cc) = compiler() else {
        println!("skipped: no C compiler");
        return;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let exe = work.join("echo");
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c/echo.c"))
        .arg(static_lib())
        // What Rust's standard library needs from the system (rustc --print
        // native-static-libs on linux-gnu).
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C compiler");
    assert!(
        out.status.success(),
        "compiling echo.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let link = format!("capi-echo-{}", std::process::id());
    let run = Command::new(&exe)
        .arg(&link)
        .arg(&work)
        .output()
        .expect("run echo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "echo failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(stdout.contains("echo ok"), "{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A program that only includes the headers, compiled as C++ too when `c++` exists: the
/// `extern "C"` guards and the types must suit both (mTCP applications exist in both).
#[test]
fn headers_compile_alone() {
    let Some(cc) = compiler() else {
        println!("skipped: no C compiler");
        return;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-h-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let src = work.join("h.c");
    std::fs::write(
        &src,
        "#include <mtcp_epoll.h>\n#include <mtcp_api.h>\n\
         int main(void) { struct mtcp_epoll_event e; e.events = MTCP_EPOLLIN; \
         e.data.u64 = 1; return (int)e.events - 1 + (int)sizeof(mctx_t) - (int)sizeof(void *); }\n",
    )
    .unwrap();
    let out = Command::new(&cc)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(crate_dir.join("include"))
        .arg(&src)
        .output()
        .expect("run the C compiler");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&work);
}
