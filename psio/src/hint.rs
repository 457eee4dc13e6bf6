//! CPU assists for embedders of tcp-core, which has no `unsafe` code and is built for the
//! baseline target, so it can neither issue a prefetch instruction nor pick vector units at
//! run time itself: a cache prefetch hint (`tcp_core::Prefetch`) and a checksum sum that uses
//! AVX2 where the CPU has it (`tcp_core::ChecksumAccel`).

/// Cache line size assumed by [`prefetch`].
const LINE: usize = 64;

/// Asks the CPU to bring the cache lines holding the `len` bytes at `p` into all cache
/// levels, and returns at once. Only a hint: nothing is read or written, and any address
/// (stale, dangling, null) is allowed. On targets other than x86-64 it does nothing.
#[inline]
pub fn prefetch(p: *const u8, len: usize) {
    let first = p as usize & !(LINE - 1);
    let end = (p as usize).saturating_add(len.max(1));
    let mut line = first;
    while line < end {
        hint_line(p.wrapping_add(line.wrapping_sub(p as usize)));
        line = match line.checked_add(LINE) {
            Some(next) => next,
            None => break,
        };
    }
}

/// One line's prefetch instruction.
#[inline(always)]
fn hint_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect and never faults, whatever the address
    // (Intel SDM vol. 2, PREFETCHh: "does not affect program behavior"); SSE, which the
    // intrinsic requires, is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The 16-bit one's-complement sum of RFC 1071 over `data` (big-endian 16-bit words, an odd
/// last byte padded with zero, end-around carry; not complemented), as
/// `tcp_core::ChecksumAccel` expects. Uses AVX2 when the CPU has it (checked once, then
/// cached by the standard library), the portable loop otherwise.
pub fn checksum_sum(data: &[u8]) -> u16 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: `sum_avx2` only needs AVX2, which the CPU was just found to have.
        return unsafe { sum_avx2(data) };
    }
    sum_words(data)
}

/// [`sum_words`] compiled with AVX2, whose 256-bit adds the compiler then uses for the lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(data: &[u8]) -> u16 {
    sum_words(data)
}

/// The sum, portably: native-endian 32-bit words added into sixteen 64-bit lanes (no carry
/// to propagate: a lane cannot overflow below 2^32 words), which the compiler vectorizes;
/// then the lanes and the last words folded, swapped to network order once (RFC 1071 §2 (B),
/// (C)), and the last 2 and 1 bytes added.
#[inline(always)]
fn sum_words(data: &[u8]) -> u16 {
    let mut lanes = [0u64; 16];
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    let mut native: u64 = lanes.iter().sum();
    let mut words = blocks.remainder().chunks_exact(4);
    for w in &mut words {
        native += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut acc = u64::from(u16::from_be(fold(native)));
    let rest = words.remainder();
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
    }
    if rest.len() % 2 == 1 {
        acc += u64::from(rest[rest.len() - 1]) << 8;
    }
    fold(acc)
}

/// `acc` folded to 16 bits with end-around carry.
#[inline(always)]
fn fold(acc: u64) -> u16 {
    let (x, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let x = x + u32::from(c);
    let (y, c) = (x as u16).overflowing_add((x >> 16) as u16);
    y + u16::from(c)
}

#[cfg(test)]
mod tests {
    use super::{checksum_sum, prefetch, sum_words};
    use proptest::prelude::*;

    /// RFC 1071's reference loop: 16-bit big-endian words with end-around carry.
    fn rfc1071(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Either representation of one's-complement zero.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    #[test]
    fn known_sums() {
        // RFC 1071 §3's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let example = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_sum(&example), 0xddf2);
        assert_eq!(sum_words(&example), 0xddf2);
        assert_eq!(checksum_sum(&[]), 0);
        assert_eq!(checksum_sum(&[0xab]), 0xab00);
        assert!(same(checksum_sum(&[0xff; 1500]), 0xffff));
    }

    proptest! {
        #[test]
        fn matches_rfc1071_at_every_length_and_alignment(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            skip in 0usize..8,
        ) {
            let d = &data[skip.min(data.len())..];
            prop_assert!(same(checksum_sum(d), rfc1071(d)));
            prop_assert!(same(sum_words(d), rfc1071(d)));
        }
    }

    #[test]
    fn any_address_is_a_valid_hint() {
        let v = vec![7u8; 256];
        prefetch(v.as_ptr(), v.len());
        prefetch(v.as_ptr().wrapping_add(1 << 40), 4096);
        prefetch(core::ptr::null(), 0);
        prefetch(usize::MAX as *const u8, usize::MAX);
        assert_eq!(v[0], 7);
    }
}
