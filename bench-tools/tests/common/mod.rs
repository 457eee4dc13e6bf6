//! What the HTTP tests share: the document root they serve and sha256.

use sha2::{Digest, Sha256};
use std::path::Path;

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
