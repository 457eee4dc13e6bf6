//! TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 §3.4).
//!
//! Never compare raw `u32`s: `a < b` means "b is ahead of a by less than 2^31".

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A sequence number with wrapping arithmetic and modular ordering.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The later of two sequence numbers.
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self > other {
            self
        } else {
            other
        }
    }

    /// The earlier of two sequence numbers.
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self < other {
            self
        } else {
            other
        }
    }

    /// `lo <= self < hi` in sequence space (an empty range if `lo == hi`).
    pub fn in_range(self, lo: SeqNumber, hi: SeqNumber) -> bool {
        lo <= self && self < hi
    }
}

impl PartialOrd for SeqNumber {
    /// RFC 1982 serial-number order: `self < other` when `other - self`, as a signed 32-bit
    /// distance, is positive. Numbers exactly 2^31 apart are unordered (`None`: neither `<`
    /// nor `>` holds), so no pair is ever both less and greater than the other. There is no
    /// `Ord`: the order is not transitive around the circle.
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        match self.0.wrapping_sub(other.0) {
            0 => Some(Ordering::Equal),
            0x8000_0000 => None,
            d if d < 0x8000_0000 => Some(Ordering::Greater),
            _ => Some(Ordering::Less),
        }
    }

    // The comparisons as `partial_cmp` defines them, each one compare of the distance
    // `d = self - other` (the default methods go through `Option<Ordering>`, a few more
    // instructions each, and the state machine compares sequence numbers ~70 times per
    // short connection).

    /// `Less`: `d` in `2^31 + 1 ..= 2^32 - 1`.
    #[inline]
    fn lt(&self, other: &SeqNumber) -> bool {
        self.0.wrapping_sub(other.0) > 0x8000_0000
    }

    /// `Less` or `Equal`: `d` is 0 or in `2^31 + 1 ..`, i.e. `d - (2^31 + 1)` wraps to at
    /// most `2^31 - 1`.
    #[inline]
    fn le(&self, other: &SeqNumber) -> bool {
        self.0.wrapping_sub(other.0).wrapping_sub(0x8000_0001) <= 0x7fff_ffff
    }

    /// `Greater`: `d` in `1 ..= 2^31 - 1`.
    #[inline]
    fn gt(&self, other: &SeqNumber) -> bool {
        self.0.wrapping_sub(other.0).wrapping_sub(1) < 0x7fff_ffff
    }

    /// `Greater` or `Equal`: `d` below `2^31`.
    #[inline]
    fn ge(&self, other: &SeqNumber) -> bool {
        self.0.wrapping_sub(other.0) < 0x8000_0000
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, n: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n as u32))
    }
}

impl AddAssign<u32> for SeqNumber {
    fn add_assign(&mut self, n: u32) {
        self.0 = self.0.wrapping_add(n);
    }
}

impl AddAssign<usize> for SeqNumber {
    fn add_assign(&mut self, n: usize) {
        self.0 = self.0.wrapping_add(n as u32);
    }
}

impl Sub<SeqNumber> for SeqNumber {
    /// Bytes from `rhs` to `self`; callers ensure `rhs <= self`.
    type Output = u32;
    fn sub(self, rhs: SeqNumber) -> u32 {
        self.0.wrapping_sub(rhs.0)
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The comparison operators answer as `partial_cmp` says, at every distance
        /// (edges around 0 and 2^31 weighted in).
        #[test]
        fn operators_agree_with_partial_cmp(
            a in any::<u32>(),
            d in prop_oneof![
                any::<u32>(),
                0u32..3,
                0x7fff_fffeu32..=0x8000_0002,
                u32::MAX - 2..=u32::MAX,
            ],
        ) {
            let (x, y) = (SeqNumber(a), SeqNumber(a.wrapping_add(d)));
            for (p, q) in [(x, y), (y, x)] {
                let c = p.partial_cmp(&q);
                prop_assert_eq!(p < q, c == Some(Ordering::Less));
                prop_assert_eq!(p <= q, matches!(c, Some(Ordering::Less | Ordering::Equal)));
                prop_assert_eq!(p > q, c == Some(Ordering::Greater));
                prop_assert_eq!(p >= q, matches!(c, Some(Ordering::Greater | Ordering::Equal)));
            }
        }
    }

    #[test]
    fn ordering_wraps_around() {
        let a = SeqNumber(u32::MAX - 10);
        let b = a + 20u32;
        assert_eq!(b.0, 9);
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b - a, 20);
        assert!(SeqNumber(5).in_range(a, b));
        assert!(!b.in_range(a, b));
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        // Exactly half the circle apart: unordered both ways, never both less and greater.
        let c = a + 0x8000_0000u32;
        assert_eq!(a.partial_cmp(&c), None);
        assert_eq!(c.partial_cmp(&a), None);
        assert_eq!([a < c, c < a, a > c, c > a], [false; 4]);
    }
}
