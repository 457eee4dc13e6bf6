//! The in-memory link both stacks run over: two bounded queues of fixed-size frame slots.
//!
//! ```text
//!            a_to_b: [slot][slot][slot] ...  (LINK_SLOTS × FRAME_SLOT bytes, allocated once)
//!   side A  ─────────────────────────────────►  side B
//!   (client)◄─────────────────────────────────  (server)
//!            b_to_a: [slot][slot][slot] ...
//! ```
//!
//! A sender writes straight into the next free slot ([`FrameQueue::free_slot`]) and then
//! commits the length; the receiver reads the oldest frame in place ([`FrameQueue::front`])
//! and pops it. Nothing is allocated per frame, nothing is ever dropped: a full queue makes
//! the sender stop (tcp-core keeps its frames, smoltcp retries on its next poll), which is the
//! queue's overflow behaviour. [`SmolPort`] is the smoltcp `phy::Device` view of one side, so
//! both stacks cross the very same queues.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// Bytes per slot: one Ethernet frame at MTU 1500 without FCS.
pub const FRAME_SLOT: usize = 1514;

/// Frames each direction holds at most.
pub const LINK_SLOTS: usize = 1024;

/// A bounded FIFO of frames in fixed-size slots, allocated once.
#[derive(Debug)]
pub struct FrameQueue {
    bytes: Vec<u8>,
    lens: Vec<u16>,
    head: usize,
    len: usize,
    pushed: u64,
}

impl FrameQueue {
    /// A queue of `slots` slots of [`FRAME_SLOT`] bytes, every page touched now.
    pub fn new(slots: usize) -> FrameQueue {
        assert!(slots > 0, "a frame queue needs at least one slot");
        let mut bytes = vec![0u8; slots * FRAME_SLOT];
        // Touch every page now, so that resident memory measured later does not grow with it.
        bytes.iter_mut().step_by(4096).for_each(|b| *b = 1);
        FrameQueue {
            bytes,
            lens: vec![0; slots],
            head: 0,
            len: 0,
            pushed: 0,
        }
    }

    /// `i` (below twice the capacity) as a slot index: no division on the per-frame path.
    #[inline]
    fn wrap(&self, i: usize) -> usize {
        if i >= self.lens.len() {
            i - self.lens.len()
        } else {
            i
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No frame waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every slot holds a frame.
    pub fn is_full(&self) -> bool {
        self.len == self.lens.len()
    }

    /// Slots in the queue.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Frames committed since creation.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The next free slot (all [`FRAME_SLOT`] bytes), or `None` when the queue is full. What
    /// is written there becomes a frame only by [`commit`](Self::commit).
    pub fn free_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let tail = self.wrap(self.head + self.len);
        Some(&mut self.bytes[tail * FRAME_SLOT..(tail + 1) * FRAME_SLOT])
    }

    /// Makes the first `len` bytes of the slot returned by [`free_slot`](Self::free_slot) the
    /// newest frame.
    ///
    /// # Panics
    /// If the queue is full or `len` exceeds [`FRAME_SLOT`]: a bug of the caller.
    pub fn commit(&mut self, len: usize) {
        assert!(!self.is_full() && len <= FRAME_SLOT, "bad commit of {len}");
        let tail = self.wrap(self.head + self.len);
        self.lens[tail] = len as u16;
        self.len += 1;
        self.pushed += 1;
    }

    /// The oldest frame, if any.
    pub fn front(&self) -> Option<&[u8]> {
        if self.is_empty() {
            return None;
        }
        let start = self.head * FRAME_SLOT;
        Some(&self.bytes[start..start + usize::from(self.lens[self.head])])
    }

    /// The waiting frames, oldest first (they stay queued; see [`clear`](Self::clear)).
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + Clone {
        (0..self.len).map(move |i| {
            let at = self.wrap(self.head + i);
            &self.bytes[at * FRAME_SLOT..at * FRAME_SLOT + usize::from(self.lens[at])]
        })
    }

    /// Removes every waiting frame.
    pub fn clear(&mut self) {
        self.head = self.wrap(self.head + self.len);
        self.len = 0;
    }

    /// Removes the oldest frame (nothing if empty).
    pub fn pop(&mut self) {
        if self.len > 0 {
            self.head = self.wrap(self.head + 1);
            self.len -= 1;
        }
    }
}

/// The two directions of the link.
#[derive(Debug)]
pub struct Link {
    /// Frames from side A (the client) to side B (the server).
    pub a_to_b: FrameQueue,
    /// Frames from side B to side A.
    pub b_to_a: FrameQueue,
}

impl Link {
    /// A link of [`LINK_SLOTS`] slots each way.
    pub fn new() -> Link {
        Link {
            a_to_b: FrameQueue::new(LINK_SLOTS),
            b_to_a: FrameQueue::new(LINK_SLOTS),
        }
    }

    /// Frames sent either way since creation.
    pub fn frames(&self) -> u64 {
        self.a_to_b.pushed() + self.b_to_a.pushed()
    }

    /// Side A's smoltcp device: receives from `b_to_a`, sends into `a_to_b`.
    pub fn port_a(&mut self) -> SmolPort<'_> {
        let tx_limit = self.a_to_b.capacity() / 2;
        SmolPort {
            rx: &mut self.b_to_a,
            tx: &mut self.a_to_b,
            tx_limit,
        }
    }

    /// Side B's smoltcp device: receives from `a_to_b`, sends into `b_to_a`.
    pub fn port_b(&mut self) -> SmolPort<'_> {
        let tx_limit = self.b_to_a.capacity() / 2;
        SmolPort {
            rx: &mut self.a_to_b,
            tx: &mut self.b_to_a,
            tx_limit,
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::new()
    }
}

/// One side of a [`Link`] as a smoltcp device (medium Ethernet, MTU 1500, checksums in
/// software: smoltcp's default capabilities).
#[derive(Debug)]
pub struct SmolPort<'a> {
    rx: &'a mut FrameQueue,
    tx: &'a mut FrameQueue,
    /// `transmit` (new frames, not answers to received ones) stops once this many frames
    /// wait in `tx`, so that receiving always has room for answers: with both directions
    /// filled by new frames, neither side could receive (a receive needs room for an answer)
    /// and the link would deadlock.
    tx_limit: usize,
}

/// Receive token of [`SmolPort`]: the oldest frame of its queue, popped once consumed.
#[derive(Debug)]
pub struct SmolRx<'a>(&'a mut FrameQueue);

/// Transmit token of [`SmolPort`]: the next free slot of its queue.
#[derive(Debug)]
pub struct SmolTx<'a>(&'a mut FrameQueue);

impl SmolPort<'_> {
    /// Whether `transmit` would still give a token: after an egress loop, that it ended for
    /// lack of frames to send rather than for lack of room.
    pub fn has_room(&self) -> bool {
        self.tx.len() < self.tx_limit
    }
}

impl phy::Device for SmolPort<'_> {
    type RxToken<'b>
        = SmolRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = SmolTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(SmolRx<'_>, SmolTx<'_>)> {
        // A frame may need an answer at once, so receive only when the answer has room.
        if self.rx.is_empty() || self.tx.is_full() {
            return None;
        }
        Some((SmolRx(self.rx), SmolTx(self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<SmolTx<'_>> {
        (self.tx.len() < self.tx_limit).then_some(SmolTx(self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU of an Ethernet device.
        caps.max_transmission_unit = FRAME_SLOT;
        caps
    }
}

impl phy::RxToken for SmolRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(self
            .0
            .front()
            .expect("receive() checked that a frame waits"));
        self.0.pop();
        r
    }
}

impl phy::TxToken for SmolTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let slot = self.0.free_slot().expect("transmit() checked for room");
        let r = f(&mut slot[..len]);
        self.0.commit(len);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_and_a_full_queue_refuses_more() {
        let mut q = FrameQueue::new(2);
        for (i, len) in [60usize, 1514].into_iter().enumerate() {
            let slot = q.free_slot().unwrap();
            slot[0] = i as u8;
            q.commit(len);
        }
        assert!(q.is_full() && q.free_slot().is_none());
        assert_eq!(q.front().map(|f| (f.len(), f[0])), Some((60, 0)));
        q.pop();
        assert_eq!(q.front().map(|f| (f.len(), f[0])), Some((1514, 1)));
        q.pop();
        assert!(q.is_empty() && q.front().is_none());
        assert_eq!(q.pushed(), 2);
    }
}
