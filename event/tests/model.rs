//! `Epoll` against a plain oracle: random sequences of add/modify/delete/notify/wait over a
//! few keys (some out of range, more than the registration limit) must give identical
//! results, wait outputs and observable state after every step.
//!
//! The oracle restates epoll(7)'s rules with a `Vec` of registrations and a `VecDeque` ready
//! list, searching linearly; it shares no code with the crate.

use std::collections::VecDeque;

use event::{CtlError, Epoll, EpollEvent, Events};
use proptest::prelude::*;

const KEY_LIMIT: u32 = 8;
/// Keys drawn include two at or above the limit.
const KEYS: u32 = KEY_LIMIT + 2;
const MAX_REGISTRATIONS: usize = 6;

#[derive(Debug, Clone)]
struct ModelReg {
    key: u32,
    interest: Events,
    data: u64,
    disabled: bool,
}

/// The oracle.
#[derive(Debug, Default)]
struct Model {
    regs: Vec<ModelReg>,
    ready: VecDeque<u32>,
}

impl Model {
    fn find(&self, key: u32) -> Option<&ModelReg> {
        self.regs.iter().find(|r| r.key == key)
    }

    fn find_mut(&mut self, key: u32) -> Option<&mut ModelReg> {
        self.regs.iter_mut().find(|r| r.key == key)
    }

    /// The bits a registration cares about: its interest without ET/ONESHOT, plus ERR, HUP.
    fn wanted(interest: Events) -> Events {
        let mut wanted = interest;
        wanted.remove(Events::ET);
        wanted.remove(Events::ONESHOT);
        wanted.insert(Events::ERR);
        wanted.insert(Events::HUP);
        wanted
    }

    fn queue(&mut self, key: u32) {
        if !self.ready.contains(&key) {
            self.ready.push_back(key);
        }
    }

    fn add(
        &mut self,
        key: u32,
        interest: Events,
        data: u64,
        level: Events,
    ) -> Result<(), CtlError> {
        if key >= KEY_LIMIT {
            return Err(CtlError::KeyOutOfRange);
        }
        if self.find(key).is_some() {
            return Err(CtlError::Exists);
        }
        if self.regs.len() == MAX_REGISTRATIONS {
            return Err(CtlError::Full);
        }
        self.regs.push(ModelReg {
            key,
            interest,
            data,
            disabled: false,
        });
        if !(level & Self::wanted(interest)).is_empty() {
            self.queue(key);
        }
        Ok(())
    }

    fn modify(
        &mut self,
        key: u32,
        interest: Events,
        data: u64,
        level: Events,
    ) -> Result<(), CtlError> {
        if key >= KEY_LIMIT {
            return Err(CtlError::KeyOutOfRange);
        }
        let Some(reg) = self.find_mut(key) else {
            return Err(CtlError::NotFound);
        };
        reg.interest = interest;
        reg.data = data;
        reg.disabled = false;
        if !(level & Self::wanted(interest)).is_empty() {
            self.queue(key);
        }
        Ok(())
    }

    fn delete(&mut self, key: u32) -> Result<(), CtlError> {
        if key >= KEY_LIMIT {
            return Err(CtlError::KeyOutOfRange);
        }
        let Some(pos) = self.regs.iter().position(|r| r.key == key) else {
            return Err(CtlError::NotFound);
        };
        self.regs.remove(pos);
        self.ready.retain(|&k| k != key);
        Ok(())
    }

    fn notify(&mut self, key: u32, flags: Events) {
        let Some(reg) = self.find(key) else { return };
        if reg.disabled {
            return;
        }
        if !(flags & Self::wanted(reg.interest)).is_empty() {
            self.queue(key);
        }
    }

    fn wait(&mut self, room: usize, levels: &[Events]) -> Vec<EpollEvent> {
        let mut out = Vec::new();
        if room == 0 {
            return out;
        }
        // Take the whole list; whatever is not examined goes back in front, in order.
        let mut batch: VecDeque<u32> = std::mem::take(&mut self.ready);
        let mut again = Vec::new();
        while out.len() < room {
            let Some(key) = batch.pop_front() else { break };
            let reg = self
                .find_mut(key)
                .expect("ready list holds registered keys only");
            let events = levels[key as usize] & Self::wanted(reg.interest);
            if events.is_empty() {
                continue;
            }
            out.push(EpollEvent {
                events,
                data: reg.data,
            });
            if reg.interest.contains(Events::ONESHOT) {
                reg.disabled = true;
            } else if !reg.interest.contains(Events::ET) {
                again.push(key);
            }
        }
        self.ready = batch;
        self.ready.extend(again);
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        key: u32,
        interest: Events,
        data: u64,
    },
    Modify {
        key: u32,
        interest: Events,
        data: u64,
    },
    Delete {
        key: u32,
    },
    Notify {
        key: u32,
        flags: Events,
    },
    SetLevel {
        key: u32,
        level: Events,
    },
    Wait {
        room: usize,
    },
}

/// A subset of `flags`, picked by the low bits of `bits`.
fn pick(flags: &[Events], bits: u16) -> Events {
    flags
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(Events::empty(), |acc, (_, &f)| acc | f)
}

fn interest() -> impl Strategy<Value = Events> {
    const FLAGS: [Events; 8] = [
        Events::IN,
        Events::OUT,
        Events::RDHUP,
        Events::PRI,
        Events::ERR,
        Events::HUP,
        Events::ET,
        Events::ONESHOT,
    ];
    any::<u16>().prop_map(|b| pick(&FLAGS, b))
}

fn readiness() -> impl Strategy<Value = Events> {
    const FLAGS: [Events; 7] = [
        Events::IN,
        Events::OUT,
        Events::RDHUP,
        Events::PRI,
        Events::ERR,
        Events::HUP,
        Events::RDNORM,
    ];
    // Mostly few bits: ERR and HUP would otherwise be set half the time.
    (any::<u16>(), any::<u16>()).prop_map(|(a, b)| pick(&FLAGS, a & b))
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    prop_oneof![
        3 => (key.clone(), interest(), 0..4u64)
            .prop_map(|(key, interest, data)| Op::Add { key, interest, data }),
        2 => (key.clone(), interest(), 0..4u64)
            .prop_map(|(key, interest, data)| Op::Modify { key, interest, data }),
        1 => key.clone().prop_map(|key| Op::Delete { key }),
        4 => (key.clone(), readiness()).prop_map(|(key, flags)| Op::Notify { key, flags }),
        3 => (key, readiness()).prop_map(|(key, level)| Op::SetLevel { key, level }),
        3 => (0..5usize).prop_map(|room| Op::Wait { room }),
    ]
}

proptest! {
    #[test]
    fn epoll_matches_oracle(ops in prop::collection::vec(op(), 1..120)) {
        let mut epoll = Epoll::new(MAX_REGISTRATIONS, KEY_LIMIT);
        let mut model = Model::default();
        // Each socket's readiness, as its poll would answer (keys beyond the limit included).
        let mut levels = [Events::empty(); KEYS as usize];
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Add { key, interest, data } => {
                    let level = levels[key as usize];
                    prop_assert_eq!(
                        epoll.add(key, interest, data, level),
                        model.add(key, interest, data, level),
                        "step {}", step
                    );
                }
                Op::Modify { key, interest, data } => {
                    let level = levels[key as usize];
                    prop_assert_eq!(
                        epoll.modify(key, interest, data, level),
                        model.modify(key, interest, data, level),
                        "step {}", step
                    );
                }
                Op::Delete { key } => {
                    prop_assert_eq!(epoll.delete(key), model.delete(key), "step {}", step);
                }
                Op::Notify { key, flags } => {
                    epoll.notify(key, flags);
                    model.notify(key, flags);
                }
                Op::SetLevel { key, level } => levels[key as usize] = level,
                Op::Wait { room } => {
                    let mut out = vec![EpollEvent::default(); room];
                    let mut polled = Vec::new();
                    let n = epoll.wait(&mut out, |key| {
                        polled.push(key);
                        levels[key as usize]
                    });
                    prop_assert_eq!(&out[..n], &model.wait(room, &levels)[..], "step {}", step);
                    polled.sort_unstable();
                    let before = polled.len();
                    polled.dedup();
                    prop_assert_eq!(before, polled.len(), "a key polled twice in one wait");
                }
            }
            prop_assert_eq!(epoll.has_ready(), !model.ready.is_empty(), "step {}", step);
            prop_assert_eq!(epoll.len(), model.regs.len());
            prop_assert_eq!(epoll.is_empty(), model.regs.is_empty());
            for key in 0..KEYS {
                prop_assert_eq!(epoll.contains(key), model.find(key).is_some());
                prop_assert_eq!(
                    epoll.registration(key),
                    model.find(key).map(|r| (r.interest, r.data))
                );
            }
        }
    }
}
