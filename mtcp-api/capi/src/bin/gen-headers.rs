//! Writes `include/mtcp_api.h` and `include/mtcp_epoll.h` with cbindgen, from `src/api.rs`
//! and `src/epoll.rs` and the settings in `cbindgen-api.toml`/`cbindgen-epoll.toml`:
//!
//! ```sh
//! cargo run -p mtcp-capi --features gen-headers --bin gen-headers            # write
//! cargo run -p mtcp-capi --features gen-headers --bin gen-headers -- --check # compare
//! ```

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = false;
    for (config, src, out) in [
        ("cbindgen-api.toml", "src/api.rs", "include/mtcp_api.h"),
        (
            "cbindgen-epoll.toml",
            "src/epoll.rs",
            "include/mtcp_epoll.h",
        ),
    ] {
        let result = cbindgen::Config::from_file(dir.join(config))
            .map_err(|e| e.to_string())
            .and_then(|c| {
                cbindgen::Builder::new()
                    .with_config(c)
                    .with_src(dir.join(src))
                    .generate()
                    .map_err(|e| e.to_string())
            });
        let bindings = match result {
            Ok(b) => b,
            Err(e) => {
                eprintln!("gen-headers: {src}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let path = dir.join(out);
        if check {
            let mut now = Vec::new();
            bindings.write(&mut now);
            if std::fs::read(&path).ok().as_deref() != Some(&now[..]) {
                eprintln!("gen-headers: {out} is out of date");
                stale = true;
            }
        } else {
            bindings.write_to_file(&path);
            println!("wrote {}", path.display());
        }
    }
    if stale {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
