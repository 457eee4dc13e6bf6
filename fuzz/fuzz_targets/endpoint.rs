//! One endpoint opposite a scripted peer, driven by the fuzzer's bytes.
//!
//! `tcp_core::testing::run_fuzz_input` reads a setup from the first bytes (which of the
//! eleven states to bring a connection into, the peer's options, buffer contents, checksum
//! verification on or off), then a sequence of operations: hostile segments aimed relative to
//! the connection's sequence numbers, mangled and raw frames, time advances and socket calls.
//! After every operation it checks that each frame sent parses, that no RST answers a RST,
//! and the connection invariants (SND.UNA ≤ SND.NXT ≤ SND.MAX, buffers within bounds,
//! cwnd ≥ SMSS); at the end it releases everything and checks that the endpoint falls quiet.
//! A panic inside tcp-core or a broken rule is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = tcp_core::testing::run_fuzz_input(data) {
        panic!("{violation}");
    }
});
