//! Scripted segment tests in smoltcp's style: the test is the peer, it sends one segment at
//! a time at an explicit virtual time and expects exactly these segments back. One test per
//! behaviour, named after it; the state × segment-kind matrix is table driven
//! (`state_machine`). The harness is in `scripted/harness.rs`.

#[path = "scripted/blind_attacks.rs"]
mod blind_attacks;
#[path = "scripted/bounds.rs"]
mod bounds;
#[path = "scripted/congestion.rs"]
mod congestion;
#[path = "scripted/counters.rs"]
mod counters;
#[path = "scripted/harness.rs"]
mod harness;
#[path = "scripted/next_hop.rs"]
mod next_hop;
#[path = "scripted/options.rs"]
mod options;
#[path = "scripted/rto.rs"]
mod rto;
#[path = "scripted/state_machine.rs"]
mod state_machine;
#[path = "scripted/syn_flood.rs"]
mod syn_flood;
#[path = "scripted/timers.rs"]
mod timers;
#[path = "scripted/transmit_order.rs"]
mod transmit_order;
