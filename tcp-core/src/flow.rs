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

/// One cell of the table: the tuple packed as [`FourTuple::words`] gives it, and the slot
/// plus one (0: empty). 16 bytes, aligned so that four share a cache line and none straddles
/// two: a lookup that hits its home cell reads one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(16))]
struct Cell {
    a: u64,
    b: u32,
    slot_plus_one: u32,
}

impl Cell {
    #[inline]
    fn is_empty(&self) -> bool {
        self.slot_plus_one == 0
    }

    #[inline]
    fn holds(&self, (a, b): (u64, u64)) -> bool {
        self.a == a && u64::from(self.b) == b
    }

    fn tuple(&self) -> FourTuple {
        FourTuple {
            local_addr: Ipv4Addr::from((self.a >> 32) as u32),
            local_port: (self.b >> 16) as u16,
            remote_addr: Ipv4Addr::from(self.a as u32),
            remote_port: self.b as u16,
        }
    }
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The tuple is already in the table (with this slot).
    Exists(u32),
    /// The table holds its maximum number of flows (or the slot is `u32::MAX`, which the
    /// table cannot hold).
    Full,
}

/// A bounded map from [`FourTuple`] to connection slot.
#[derive(Debug, Clone)]
pub struct FlowTable {
    cells: Vec<Cell>,
    mask: usize,
    len: usize,
    max: usize,
    /// The most cells the table grows to: twice `max`, rounded up to a power of two.
    max_cells: usize,
    key: (u64, u64),
}

/// Cells of a new table (it doubles as flows come, up to its bound).
const INITIAL_CELLS: usize = 64;

#[inline]
fn fold(x: u64, k: u64) -> u64 {
    // A 64×64→128 multiply folded to 64 bits (the wyhash/folded-multiply mixer).
    let m = u128::from(x ^ k).wrapping_mul(u128::from(k.rotate_left(29) | 1));
    (m as u64) ^ ((m >> 64) as u64)
}

impl FlowTable {
    /// A table for at most `max_flows` flows, keyed by `secret`.
    ///
    /// The array of cells (a power of two) starts small and doubles whenever the flows would
    /// fill more than half of it, up to twice `max_flows`: memory stays bounded by
    /// `max_flows`, and a core serving few connections keeps its whole table in cache
    /// (a table sized for the maximum spreads even a few flows over many cache lines).
    pub fn new(max_flows: usize, secret: [u8; 16]) -> FlowTable {
        let max_cells = (max_flows.max(1) * 2).next_power_of_two();
        let cells = INITIAL_CELLS.min(max_cells);
        let k0 = u64::from_le_bytes(secret[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(secret[8..].try_into().expect("8 bytes"));
        FlowTable {
            cells: vec![Cell::default(); cells],
            mask: cells - 1,
            len: 0,
            max: max_flows,
            max_cells,
            key: (k0 ^ 0x9e37_79b9_7f4a_7c15, k1 ^ 0xd6e8_feb8_6659_fd93),
        }
    }

    /// Doubles the array (while below its bound) and puts every flow back in place.
    fn grow(&mut self) {
        let cells = (self.cells.len() * 2).min(self.max_cells);
        if cells == self.cells.len() {
            return;
        }
        let old = core::mem::replace(&mut self.cells, vec![Cell::default(); cells]);
        self.mask = cells - 1;
        for c in old.into_iter().filter(|c| !c.is_empty()) {
            let (i, _) = self.find((c.a, u64::from(c.b)));
            self.cells[i] = c;
        }
    }

    /// The home cell: the two halves of the tuple mixed with a key each, independently (two
    /// multiplies side by side rather than one after the other: the lookup of every
    /// received frame waits for this), then combined.
    #[inline]
    fn home_of(&self, (a, b): (u64, u64)) -> usize {
        ((fold(a, self.key.0) ^ fold(b, self.key.1).rotate_left(32)) as usize) & self.mask
    }

    /// Passes the address of `t`'s home cell (where its lookup starts) to `hint`.
    #[inline]
    pub fn prefetch(&self, t: &FourTuple, hint: crate::config::Prefetch) {
        if let Some(c) = self.cells.get(self.home_of(t.words())) {
            (hint.0)(
                (c as *const Cell).cast::<u8>(),
                core::mem::size_of::<Cell>(),
            );
        }
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

    /// The cell holding `w`, or the empty cell ending its probe chain.
    #[inline]
    fn find(&self, w: (u64, u64)) -> (usize, bool) {
        let mut i = self.home_of(w);
        loop {
            let c = &self.cells[i];
            if c.is_empty() {
                return (i, false);
            }
            if c.holds(w) {
                return (i, true);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot of `t`'s connection.
    #[inline]
    pub fn get(&self, t: &FourTuple) -> Option<u32> {
        match self.find(t.words()) {
            (i, true) => Some(self.cells[i].slot_plus_one - 1),
            _ => None,
        }
    }

    /// Adds `t → slot`.
    pub fn insert(&mut self, t: FourTuple, slot: u32) -> Result<(), InsertError> {
        let w = t.words();
        let (i, found) = self.find(w);
        if found {
            return Err(InsertError::Exists(self.cells[i].slot_plus_one - 1));
        }
        let Some(slot_plus_one) = slot.checked_add(1) else {
            return Err(InsertError::Full);
        };
        if self.len >= self.max {
            return Err(InsertError::Full);
        }
        let i = if (self.len + 1) * 2 > self.cells.len() && self.cells.len() < self.max_cells {
            self.grow();
            self.find(w).0
        } else {
            i
        };
        self.cells[i] = Cell {
            a: w.0,
            b: w.1 as u32,
            slot_plus_one,
        };
        self.len += 1;
        Ok(())
    }

    /// Points `t`, which must be in the table, at `slot` instead; returns the slot it had.
    /// `None` (and no change) if `t` is not in the table or `slot` is `u32::MAX`.
    pub fn replace(&mut self, t: &FourTuple, slot: u32) -> Option<u32> {
        let slot_plus_one = slot.checked_add(1)?;
        match self.find(t.words()) {
            (i, true) => {
                Some(core::mem::replace(&mut self.cells[i].slot_plus_one, slot_plus_one) - 1)
            }
            _ => None,
        }
    }

    /// Removes `t` if it maps to `slot` (one lookup); returns whether it did.
    pub fn remove_if(&mut self, t: &FourTuple, slot: u32) -> bool {
        match self.find(t.words()) {
            (i, true) if self.cells[i].slot_plus_one == slot.wrapping_add(1) => {
                self.remove_at(i);
                true
            }
            _ => false,
        }
    }

    /// Removes `t`; returns its slot.
    pub fn remove(&mut self, t: &FourTuple) -> Option<u32> {
        let (i, found) = self.find(t.words());
        if !found {
            return None;
        }
        Some(self.remove_at(i))
    }

    /// Empties cell `i` (which holds a flow) and closes the gap; returns the flow's slot.
    fn remove_at(&mut self, i: usize) -> u32 {
        let slot = self.cells[i].slot_plus_one - 1;
        self.cells[i] = Cell::default();
        self.len -= 1;
        // Backward-shift deletion: move later members of the probe chain into the hole when
        // their home position does not lie cyclically in (hole, j].
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        while !self.cells[j].is_empty() {
            let c = self.cells[j];
            let home = self.home_of((c.a, u64::from(c.b)));
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.cells[hole] = c;
                self.cells[j] = Cell::default();
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        slot
    }

    /// Every flow, in table order (for diagnostics and tests).
    pub fn iter(&self) -> impl Iterator<Item = (FourTuple, u32)> + '_ {
        self.cells
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| (c.tuple(), c.slot_plus_one - 1))
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
