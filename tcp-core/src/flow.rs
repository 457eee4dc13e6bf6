//! The flow table: 4-tuple → connection slot, O(1), bounded, allocated once.
//!
//! Open addressing with linear probing over a power-of-two array at most half full, and
//! backward-shift deletion (no tombstones, so lookups never slow down as connections come and
//! go). The hash mixes a per-endpoint secret into the tuple, so a peer that chooses its ports
//! and addresses cannot aim for one probe chain without knowing the secret.
//!
//! ```text
//!   index = mix(tuple, secret) & (capacity - 1)
//!   ┌──────┬──────┬──────┬──────┬──────┬──────┐
//!   │ A:3  │ B:9  │  --  │ C:1  │  --  │ ...  │   entries: tuple → slot
//!   └──────┴──────┴──────┴──────┴──────┴──────┘
//!   A and B hashed to 0: B probed one step on. Deleting A shifts B back to 0.
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// A TCP connection's addresses, from our point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourTuple {
    /// Our address.
    pub local_addr: Ipv4Addr,
    /// Our port.
    pub local_port: u16,
    /// The peer's address.
    pub remote_addr: Ipv4Addr,
    /// The peer's port.
    pub remote_port: u16,
}

impl FourTuple {
    /// Packs the tuple into 96 bits (as two words) for hashing and comparison.
    #[inline]
    fn words(&self) -> (u64, u64) {
        let a =
            (u64::from(u32::from(self.local_addr)) << 32) | u64::from(u32::from(self.remote_addr));
        let b = (u64::from(self.local_port) << 16) | u64::from(self.remote_port);
        (a, b)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tuple: FourTuple,
    slot: u32,
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The tuple is already in the table (with this slot).
    Exists(u32),
    /// The table holds its maximum number of flows.
    Full,
}

/// A bounded map from [`FourTuple`] to connection slot.
#[derive(Debug, Clone)]
pub struct FlowTable {
    entries: Vec<Option<Entry>>,
    mask: usize,
    len: usize,
    max: usize,
    key: (u64, u64),
}

#[inline]
fn fold(x: u64, k: u64) -> u64 {
    // A 64×64→128 multiply folded to 64 bits (the wyhash/folded-multiply mixer).
    let m = u128::from(x ^ k).wrapping_mul(u128::from(k.rotate_left(29) | 1));
    (m as u64) ^ ((m >> 64) as u64)
}

impl FlowTable {
    /// A table for at most `max_flows` flows, keyed by `secret`. The array has at least twice
    /// as many cells as flows (a power of two), allocated now and never grown.
    pub fn new(max_flows: usize, secret: [u8; 16]) -> FlowTable {
        let cells = (max_flows.max(1) * 2).next_power_of_two();
        let k0 = u64::from_le_bytes(secret[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(secret[8..].try_into().expect("8 bytes"));
        FlowTable {
            entries: vec![None; cells],
            mask: cells - 1,
            len: 0,
            max: max_flows,
            key: (k0 ^ 0x9e37_79b9_7f4a_7c15, k1 ^ 0xd6e8_feb8_6659_fd93),
        }
    }

    #[inline]
    fn home(&self, t: &FourTuple) -> usize {
        let (a, b) = t.words();
        (fold(fold(a, self.key.0) ^ b, self.key.1) as usize) & self.mask
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no flow is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest number of flows the table accepts.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// The slot of `t`'s connection.
    #[inline]
    pub fn get(&self, t: &FourTuple) -> Option<u32> {
        let mut i = self.home(t);
        loop {
            match &self.entries[i] {
                None => return None,
                Some(e) if e.tuple == *t => return Some(e.slot),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    /// Adds `t → slot`.
    pub fn insert(&mut self, t: FourTuple, slot: u32) -> Result<(), InsertError> {
        let mut i = self.home(&t);
        loop {
            match &self.entries[i] {
                None => break,
                Some(e) if e.tuple == t => return Err(InsertError::Exists(e.slot)),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        if self.len >= self.max {
            return Err(InsertError::Full);
        }
        self.entries[i] = Some(Entry { tuple: t, slot });
        self.len += 1;
        Ok(())
    }

    /// Removes `t`; returns its slot.
    pub fn remove(&mut self, t: &FourTuple) -> Option<u32> {
        let mut i = self.home(t);
        loop {
            match &self.entries[i] {
                None => return None,
                Some(e) if e.tuple == *t => break,
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        let slot = self.entries[i].take().map(|e| e.slot);
        self.len -= 1;
        // Backward-shift deletion: move later members of the probe chain into the hole when
        // their home position does not lie cyclically in (hole, j].
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        while let Some(e) = self.entries[j] {
            let home = self.home(&e.tuple);
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.entries[hole] = Some(e);
                self.entries[j] = None;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        slot
    }

    /// Every flow, in table order (for diagnostics and tests).
    pub fn iter(&self) -> impl Iterator<Item = (FourTuple, u32)> + '_ {
        self.entries.iter().flatten().map(|e| (e.tuple, e.slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn tuple(n: u32) -> FourTuple {
        FourTuple {
            local_addr: Ipv4Addr::new(10, 0, 0, 1),
            local_port: 80,
            remote_addr: Ipv4Addr::from(0x0a00_0000 | (n >> 16)),
            remote_port: n as u16,
        }
    }

    #[test]
    fn insert_get_remove_and_bounds() {
        let mut t = FlowTable::new(3, [1; 16]);
        assert_eq!(t.insert(tuple(1), 10), Ok(()));
        assert_eq!(t.insert(tuple(1), 11), Err(InsertError::Exists(10)));
        assert_eq!(t.insert(tuple(2), 20), Ok(()));
        assert_eq!(t.insert(tuple(3), 30), Ok(()));
        assert_eq!(t.insert(tuple(4), 40), Err(InsertError::Full));
        assert_eq!(t.get(&tuple(2)), Some(20));
        assert_eq!(t.remove(&tuple(2)), Some(20));
        assert_eq!(t.get(&tuple(2)), None);
        assert_eq!(t.remove(&tuple(2)), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.insert(tuple(4), 40), Ok(()));
    }

    #[test]
    fn a_full_table_of_clients_from_one_host_stays_consistent() {
        let mut t = FlowTable::new(60_000, [7; 16]);
        for n in 0..60_000 {
            t.insert(tuple(n), n).unwrap();
        }
        for n in (0..60_000).step_by(2) {
            assert_eq!(t.remove(&tuple(n)), Some(n));
        }
        for n in 0..60_000 {
            let want = (n % 2 == 1).then_some(n);
            assert_eq!(t.get(&tuple(n)), want);
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec((0u8..3, 0u32..64), 0..400)) {
            let mut t = FlowTable::new(40, [3; 16]);
            let mut model: HashMap<FourTuple, u32> = HashMap::new();
            for (op, n) in ops {
                let k = tuple(n);
                match op {
                    0 => {
                        let r = t.insert(k, n);
                        match model.get(&k) {
                            Some(&s) => prop_assert_eq!(r, Err(InsertError::Exists(s))),
                            None if model.len() >= 40 => prop_assert_eq!(r, Err(InsertError::Full)),
                            None => { prop_assert_eq!(r, Ok(())); model.insert(k, n); }
                        }
                    }
                    1 => prop_assert_eq!(t.remove(&k), model.remove(&k)),
                    _ => prop_assert_eq!(t.get(&k), model.get(&k).copied()),
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(t.get(k), Some(*v));
            }
        }
    }
}
