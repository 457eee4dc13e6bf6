//! Compiles `src/shim.c`: packetdrill's `fcntl` and `ioctl` slots are C-variadic functions,
//! which stable Rust can call but not define; the shim reads the optional argument and calls
//! the crate's non-variadic Rust functions.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    cc::Build::new()
        .file("src/shim.c")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("mtcp_packetdrill_shim");
}
