//! The endpoint's connection table: sockets by handle, listeners, the accept path with SYN
//! queue and SYN cookies, the transmit queues and event delivery.

use super::*;
use crate::config::Keepalive;
use crate::conn::PeerSyn;
use crate::isn::{quantize_mss, CookieOptions, COOKIE_PERIOD};
use crate::state::SocketError;
use crate::timer::TimerKind;

/// With a prefetch hint and many flows, `connect` hints the flow cell of the port the
/// connect this many calls later will try first.
const CONNECT_PREFETCH_AHEAD: u32 = 8;

/// SYN cookies are accepted for this long after the last one was sent (ACKs completing a
/// cookie handshake come one RTT later; beyond that a cookie ACK is a guess).
const COOKIE_WINDOW: Duration = COOKIE_PERIOD.saturating_mul(2);

impl Endpoint {
    // -----------------------------------------------------------------------------------------
    // Slots
    // -----------------------------------------------------------------------------------------

    pub(super) fn slot_generation(&self, slot: u32) -> Option<u32> {
        self.slots.get(slot as usize).map(|s| s.generation)
    }

    /// A free slot for `body`, or `None` when `max_connections` slots are in use.
    fn alloc_slot(&mut self, body: Body) -> Option<u32> {
        if self.live >= self.config.max_connections {
            self.counters.table_full += 1;
            return None;
        }
        self.live += 1;
        let slot = self.take_slot();
        // A freed slot holds `Body::Free` already: writing it again would copy a whole slot's
        // worth of bytes.
        if !matches!(body, Body::Free) {
            self.slots[slot as usize].body = body;
        }
        Some(slot)
    }

    /// A free slot (holding `Body::Free`): a freed one, else a new one. Leaves `live` to the
    /// caller.
    fn take_slot(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        self.slots.push(Slot {
            generation: 0,
            body: Body::Free,
        });
        (self.slots.len() - 1) as u32
    }

    fn free_slot(&mut self, slot: u32) {
        if let Some(Slot {
            body: Body::Conn(tcb),
            ..
        }) = self.slots.get(slot as usize)
        {
            self.flows.remove_if(&tcb.tuple, slot);
        }
        self.release_slot(slot);
    }

    /// [`free_slot`](Self::free_slot) but for the flow table, which no longer names `slot`.
    fn release_slot(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if matches!(s.body, Body::Free) {
            return;
        }
        if let Body::Conn(tcb) = &mut s.body {
            tcb.send.clear_into(&mut self.storage);
            tcb.recv.clear_into(&mut self.storage);
        }
        s.body = Body::Free;
        s.generation = s.generation.wrapping_add(1);
        self.timers.cancel_all(slot);
        self.free.push(slot);
        self.live -= 1;
    }

    fn handle_of(&self, slot: u32) -> Handle {
        Handle {
            slot,
            generation: self.slot_generation(slot).unwrap_or(0),
        }
    }

    /// The TCB in `slot` with what it needs to process an input.
    pub(super) fn conn_env(
        &mut self,
        slot: u32,
        now: Instant,
    ) -> Option<(&mut Tcb, Env<'_>, &TcpConfig)> {
        let Endpoint {
            slots,
            timers,
            counters,
            challenge,
            config,
            storage,
            ..
        } = self;
        let Body::Conn(tcb) = &mut slots.get_mut(slot as usize)?.body else {
            return None;
        };
        let env = Env {
            now,
            key: slot,
            timers,
            counters,
            challenge,
            storage,
            time_wait: config.tcp.time_wait,
            fin_wait2_timeout: config.tcp.fin_wait2_timeout,
            idle_timeout: config.tcp.idle_timeout,
        };
        Some((tcb, env, &config.tcp))
    }

    /// Bookkeeping after anything touched the connection in `slot`: the accept queue, the
    /// event queue, the transmit queues, and freeing it once it is closed and released.
    pub(super) fn after(&mut self, slot: u32) {
        // Fast path: an open connection (not closing its slot, not leaving SYN-RECEIVED).
        let Endpoint {
            slots,
            timers,
            counters,
            challenge,
            ev_q,
            tx_q,
            now,
            storage,
            config:
                EndpointConfig {
                    compact_time_wait,
                    tcp,
                    ..
                },
            ..
        } = self;
        let Some(Slot {
            generation,
            body: Body::Conn(tcb),
        }) = slots.get_mut(slot as usize)
        else {
            return;
        };
        let generation = *generation;
        // Planned once for both the persist check and the transmit queues.
        let data = tcb.data_may_go(tcb.queued);
        if tcb.needs_maintenance() {
            let mut env = Env {
                now: *now,
                key: slot,
                timers,
                counters,
                challenge,
                storage,
                time_wait: tcp.time_wait,
                fin_wait2_timeout: tcp.fin_wait2_timeout,
                idle_timeout: tcp.idle_timeout,
            };
            tcb.maintain(data, &mut env);
        }
        let slow = (tcb.embryonic && tcb.state != State::SynReceived) || tcb.state == State::Closed;
        if !slow {
            // Events: the application's connections report everything; connections not yet
            // accepted only Accepted; orphans (closed by the application) nothing.
            let reportable = if tcb.app_owned {
                tcb.events
            } else if tcb.listener.is_some() {
                tcb.events & ev::ACCEPTED
            } else {
                tcb.events = 0;
                0
            };
            if reportable != 0 && tcb.queued & EV_QUEUED == 0 {
                tcb.queued |= EV_QUEUED;
                ev_q.push_back((slot, generation));
            }
            let new = tcb.wants_given(data) & !tcb.queued & 0b111;
            if new != 0 {
                tcb.queued |= new;
                for (class, q) in tx_q.iter_mut().enumerate() {
                    if new & (1 << class) != 0 {
                        q.push_back((slot, generation));
                    }
                }
            }
            // A TIME-WAIT connection the application let go, its last segment sent, goes
            // into the compact table.
            if tcb.queued == 0
                && tcb.state == State::TimeWait
                && !tcb.app_owned
                && *compact_time_wait
            {
                self.hibernate(slot);
            }
            return;
        }
        self.after_slow(slot, generation);
    }

    /// [`after`](Self::after) for connections changing hands: leaving SYN-RECEIVED, closed,
    /// or not (or no longer) the application's.
    #[cold]
    fn after_slow(&mut self, slot: u32, generation: u32) {
        let Some(Body::Conn(tcb)) = self.slots.get_mut(slot as usize).map(|s| &mut s.body) else {
            return;
        };
        // A passive open left SYN-RECEIVED: into the accept queue, or gone.
        let mut completed = None;
        if tcb.embryonic && tcb.state != State::SynReceived {
            tcb.embryonic = false;
            completed = tcb.listener.map(|l| (l, tcb.state != State::Closed));
        }
        if tcb.state == State::Closed {
            let tuple = tcb.tuple;
            self.flows.remove_if(&tuple, slot);
            self.remember_closed(tuple);
        }
        if let Some(((lslot, lgen), established)) = completed {
            let mut queued = false;
            let mut listener_alive = false;
            if let Some(Slot {
                generation,
                body: Body::Listener(l),
            }) = self.slots.get_mut(lslot as usize)
            {
                if *generation == lgen {
                    listener_alive = true;
                    l.half_open = l.half_open.saturating_sub(1);
                    if established && l.accept_q.len() < l.backlog {
                        l.accept_q.push_back(slot);
                        queued = true;
                    }
                }
            }
            if established && !queued {
                // The listener is gone (the application closed it: counted as an abort) or
                // its accept queue is full: refuse the connection.
                if listener_alive {
                    self.counters.accept_queue_full += 1;
                } else {
                    self.counters.aborts += 1;
                }
                if let Some((tcb, mut env, _)) = self.conn_env(slot, self.now) {
                    tcb.listener = None;
                    tcb.abort_with_rst(CloseReason::Aborted, &mut env);
                }
            }
        }
        let Some(Body::Conn(tcb)) = self.slots.get_mut(slot as usize).map(|s| &mut s.body) else {
            return;
        };
        // An unaccepted connection that closed leaves its listener's accept queue.
        if tcb.state == State::Closed && !tcb.app_owned {
            if let Some((lslot, lgen)) = tcb.listener.take() {
                if let Some(Slot {
                    generation,
                    body: Body::Listener(l),
                }) = self.slots.get_mut(lslot as usize)
                {
                    if *generation == lgen {
                        l.accept_q.retain(|&s| s != slot);
                    }
                }
            }
        }
        let Some(Body::Conn(tcb)) = self.slots.get_mut(slot as usize).map(|s| &mut s.body) else {
            return;
        };
        // Events: only for the application's connections (and Accepted for new ones).
        if !tcb.app_owned {
            tcb.events &= if tcb.listener.is_some() {
                !(ev::CLOSED | ev::RESET | ev::TIMED_OUT)
            } else {
                0
            };
        }
        let reportable = if tcb.app_owned {
            tcb.events
        } else {
            tcb.events & ev::ACCEPTED
        };
        if reportable != 0 && tcb.queued & EV_QUEUED == 0 {
            tcb.queued |= EV_QUEUED;
            self.ev_q.push_back((slot, generation));
        }
        let wants = tcb.wants_mask(tcb.queued);
        let new = wants & !tcb.queued & 0b111;
        if new != 0 {
            tcb.queued |= new;
            for class in 0..3 {
                if new & (1 << class) != 0 {
                    self.tx_q[class].push_back((slot, generation));
                }
            }
        }
        if tcb.state == State::Closed && !tcb.app_owned && wants & 1 == 0 {
            self.free_slot(slot);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Compact TIME-WAIT (the `timewait` module)
    // -----------------------------------------------------------------------------------------

    /// Moves the TIME-WAIT connection in `slot` (released by the application, its last
    /// segment sent) into the compact table and frees the slot, if the TCB allows it
    /// ([`Tcb::to_time_wait`]), TIME-WAIT's is its only timer, and its deadline keeps the
    /// table's FIFO in order (not earlier than the newest record's).
    #[cold]
    fn hibernate(&mut self, slot: u32) {
        if self.timers.armed_kinds(slot) != 1 << TimerKind::TimeWait.index() {
            return;
        }
        let Some(deadline) = self.timers.deadline(slot, TimerKind::TimeWait) else {
            return;
        };
        if self.tw.newest_deadline().is_some_and(|t| deadline < t) {
            return;
        }
        let Some(Body::Conn(tcb)) = self.slots.get(slot as usize).map(|s| &s.body) else {
            return;
        };
        let Some(state) = tcb.to_time_wait() else {
            return;
        };
        let tuple = state.tuple;
        let idx = self.tw.insert(state, deadline);
        match self.flows.replace(&tuple, TW_BIT | idx) {
            Some(old) if old == slot => {}
            other => {
                // Not this connection's flow (cannot happen): leave everything as it was.
                if let Some(old) = other {
                    self.flows.replace(&tuple, old);
                }
                self.tw.remove(idx);
                return;
            }
        }
        // The record takes the slot's place in `live` and in the flow table.
        self.release_slot(slot);
        self.live += 1;
    }

    /// A segment for the compact TIME-WAIT connection `idx`: processed by the TCB it stands
    /// for, rebuilt for the time of it (TIME-WAIT answers with at most an ACK, which goes
    /// out through the control queue). Returns true when the connection gave way to a new
    /// SYN (RFC 6191), which the caller then hands to the listener.
    ///
    /// Anything TIME-WAIT does not normally lead to (leaving TIME-WAIT, another timer, a
    /// segment other than a pure ACK to send) puts the TCB back in a slot in full, where
    /// the usual path takes over.
    pub(super) fn time_wait_segment(&mut self, now: Instant, idx: u32, f: &TcpFrame<'_>) -> bool {
        let Some((state, expires)) = self.tw.get(idx) else {
            return false;
        };
        let mut tcb = Tcb::from_time_wait(&self.config.tcp, state, now);
        let earlier = state.clone();
        let (tuple, dst_mac) = (state.tuple, state.dst_mac);
        let seg = &f.seg;
        if seg.flags.syn()
            && !seg.flags.ack()
            && !seg.flags.rst()
            && tcb.syn_may_reuse_time_wait(seg)
        {
            // RFC 6191: the TIME-WAIT connection gives way to the new incarnation.
            self.tw.remove(idx);
            self.flows.remove(&tuple);
            self.live -= 1;
            return true;
        }
        let Endpoint {
            tw_timers,
            counters,
            challenge,
            storage,
            config,
            ..
        } = self;
        // TIME-WAIT's timer as the record has it; the others are not armed.
        let _ = tw_timers.set(0, TimerKind::TimeWait, expires);
        let mut env = Env {
            now,
            key: 0,
            timers: tw_timers,
            counters,
            challenge,
            storage,
            time_wait: config.tcp.time_wait,
            fin_wait2_timeout: config.tcp.fin_wait2_timeout,
            idle_timeout: config.tcp.idle_timeout,
        };
        let reply = tcb.on_segment(&config.tcp, seg, &mut env);
        let wants = tcb.wants_mask(0);
        let mut ack = None;
        let simple = tcb.state == State::TimeWait && wants & !(1 << TxClass::Ack as u8) == 0;
        if simple && wants != 0 {
            let mut out = TcpSegmentOut::default();
            if tcb
                .next_segment(TxClass::Ack, &config.tcp, &mut env, &mut out)
                .is_some()
            {
                ack = Some(out);
            }
        }
        let deadlines = TimerKind::ALL.map(|k| tw_timers.deadline(0, k));
        tw_timers.cancel_all(0);
        if let Some(r) = reply {
            self.push_rst(f, r);
        }
        if let Some(seg) = ack {
            self.push(Control::TimeWaitAck {
                dst_mac,
                dst_ip: tuple.remote_addr,
                seg,
            });
        }
        let tw_deadline = deadlines[TimerKind::TimeWait.index()];
        let only_tw_timer = deadlines
            .iter()
            .enumerate()
            .all(|(i, d)| i == TimerKind::TimeWait.index() || d.is_none());
        if let (true, true, Some(d)) = (simple, only_tw_timer, tw_deadline) {
            let in_order = d == expires || self.tw.newest_deadline().is_none_or(|t| t <= d);
            if let (true, Some(mut state)) = (in_order, tcb.to_time_wait()) {
                state.keep_figures_of(&earlier);
                self.tw.update(idx, state, d);
                return false;
            }
        }
        // Back into a slot in full: the record's place in `live` passes to the slot.
        self.tw.remove(idx);
        let slot = self.take_slot();
        self.slots[slot as usize].body = Body::Conn(tcb);
        self.flows.replace(&tuple, slot);
        for (kind, d) in TimerKind::ALL.into_iter().zip(deadlines) {
            if let Some(at) = d {
                let _ = self.timers.set(slot, kind, at);
            }
        }
        self.after(slot);
        false
    }

    /// Builds the next segment of `class` for `slot` into `buf`. `None` if it had nothing to
    /// send, or if the frame went to the ARP queue instead.
    pub(super) fn transmit_conn(
        &mut self,
        now: Instant,
        slot: u32,
        class: TxClass,
        buf: &mut [u8],
    ) -> Option<usize> {
        let (local, checksum) = (self.local, self.checksum);
        let (tcb, mut env, cfg) = self.conn_env(slot, now)?;
        // Next hop cached in the TCB: the ARP entry it had when it was made, or what its first
        // transmission resolved (never the source of a frame received: see `install`).
        let Some(mac) = tcb.dst_mac else {
            return self.transmit_resolving(now, slot, class, buf);
        };
        build_frame(tcb, class, cfg, &mut env, (local, mac), checksum, buf)
    }

    /// [`transmit_conn`](Self::transmit_conn) for a connection whose next hop is not known
    /// yet: resolved through the routes and the ARP cache (the frame waits in the ARP queue
    /// while a request is out).
    fn transmit_resolving(
        &mut self,
        now: Instant,
        slot: u32,
        class: TxClass,
        buf: &mut [u8],
    ) -> Option<usize> {
        let (local, checksum) = (self.local, self.checksum);
        let remote = match self.slots.get(slot as usize).map(|s| &s.body) {
            Some(Body::Conn(tcb)) => tcb.tuple.remote_addr,
            _ => return None,
        };
        let hop = route::next_hop(&self.config.iface, remote)?;
        let mut pending_hop = None;
        let mac = match self.arp.lookup(hop, now) {
            Lookup::Found(mac) => mac,
            Lookup::Pending { send_request } => {
                if send_request {
                    self.push(arp_request(&local, hop));
                }
                pending_hop = Some(hop);
                EthernetAddress([0; 6])
            }
        };
        let (tcb, mut env, cfg) = self.conn_env(slot, now)?;
        if pending_hop.is_none() {
            tcb.dst_mac = Some(mac);
        }
        let n = build_frame(tcb, class, cfg, &mut env, (local, mac), checksum, buf)?;
        if let Some(hop) = pending_hop {
            if self.arp.enqueue(hop, &buf[..n], now).is_err() {
                self.counters.arp_dropped += 1;
            }
            return None;
        }
        Some(n)
    }

    // -----------------------------------------------------------------------------------------
    // Listeners (RFC 9293 §3.10.7.2)
    // -----------------------------------------------------------------------------------------

    pub(super) fn listener_segment(
        &mut self,
        now: Instant,
        lslot: u32,
        tuple: FourTuple,
        f: &TcpFrame<'_>,
    ) {
        let (eth, seg) = (f.eth, &f.seg);
        let fl = seg.flags;
        if fl.syn() && fl.fin() && self.config.tcp.drop_syn_fin {
            self.counters.syn_fin_dropped += 1;
            return;
        }
        // "first check for a RST: An incoming RST should be ignored."
        if fl.rst() {
            return;
        }
        // "second check for an ACK: Any acknowledgment is bad if it arrives on a connection
        // still in the LISTEN state. An acceptable reset segment should be formed for any
        // arriving ACK-bearing segment." — unless it completes a SYN-cookie handshake.
        if fl.ack() {
            if !fl.syn() && self.cookie_ack(now, lslot, tuple, eth, seg) {
                return;
            }
            if let Some(r) = RstReply::for_segment(seg) {
                self.push_rst(f, r);
            }
            return;
        }
        // "third check for a SYN"
        if !fl.syn() {
            // "fourth, other data or control: ... drop the segment and return."
            return;
        }
        // A new incarnation of a recently closed connection: its ACK is a cookie's again.
        if !self.closed_order.is_empty() {
            self.closed_recently.remove(&tuple);
        }
        let Some(Slot {
            generation: lgen,
            body: Body::Listener(l),
        }) = self.slots.get(lslot as usize)
        else {
            return;
        };
        let (lgen, buffers) = (*lgen, l.buffers);
        if l.accept_q.len() >= l.backlog {
            // Nobody accepts: drop the SYN (the peer retries), as Linux does.
            self.counters.accept_queue_full += 1;
            return;
        }
        let syn = PeerSyn {
            isn: seg.seq,
            mss: seg.options.mss,
            wscale: seg.options.wscale,
            sack: seg.options.sack_permitted,
            tsval: seg.options.timestamp.map(|t| t.0),
            window: seg.window,
        };
        if l.half_open >= self.config.syn_queue {
            self.counters.syn_queue_full += 1;
            self.send_cookie(now, tuple, eth, &syn);
            return;
        }
        let local = SocketAddrV4::new(tuple.local_addr, tuple.local_port);
        let remote = SocketAddrV4::new(tuple.remote_addr, tuple.remote_port);
        let (iss, ts_offset) = self.isn.isn_and_ts_offset(now, local, remote);
        let Some(slot) = self.alloc_slot(Body::Free) else {
            return;
        };
        let mut tcb = Tcb::accept_syn(&self.config.tcp, tuple, iss, ts_offset, &syn, now);
        if let Some((send, recv)) = buffers {
            tcb.set_buffer_sizes(send, recv);
        }
        self.install(slot, tcb, Some((lslot, lgen)), now, Some(eth.src));
        self.after(slot);
    }

    /// Puts a new TCB into `slot` and the flow table, counts it opened and, for a passive
    /// open, in its listener's SYN queue.
    ///
    /// The next hop's MAC is the ARP cache's, when it has a live entry for the route's next
    /// hop; otherwise the first transmission resolves it ([`transmit_resolving`]). It is not
    /// the Ethernet source of the segment that made the connection (`source`): no checksum
    /// covers the Ethernet header, and a source damaged on the way, once cached here, would
    /// send every segment of the connection to a host that is not there (the peer's
    /// interface drops them as addressed to another host; its SYN-SENT never ends). Linux
    /// answers a SYN through its neighbour table too: the SYN-ACK is routed like any packet.
    ///
    /// Only a peer we have no route to (no subnet, route or gateway covers its address) is
    /// answered at `source`, as a segment of no connection is: there is nothing else to go
    /// by. (Linux would drop its SYN; the spoofed SYN flood of the interop tests comes from
    /// such addresses.)
    ///
    /// [`transmit_resolving`]: Self::transmit_resolving
    fn install(
        &mut self,
        slot: u32,
        mut tcb: Tcb,
        listener: Option<(u32, u32)>,
        now: Instant,
        source: Option<EthernetAddress>,
    ) {
        let mac = match route::next_hop(&self.config.iface, tcb.tuple.remote_addr) {
            Some(hop) => self.arp.peek(hop, now),
            None => source,
        };
        // The tuple is free (the caller looked it up); a full table was checked by alloc_slot.
        let _ = self.flows.insert(tcb.tuple, slot);
        // Set before the move: read back right after the block copy that fills the slot, the
        // fields could not be forwarded from the copy's wide stores (a stall seen in perf).
        tcb.listener = listener;
        tcb.embryonic = listener.is_some() && tcb.state == State::SynReceived;
        tcb.dst_mac = mac;
        self.slots[slot as usize].body = Body::Conn(tcb);
        if let Some((lslot, _)) = listener {
            if let Some(Body::Listener(l)) = self.slots.get_mut(lslot as usize).map(|s| &mut s.body)
            {
                l.half_open += 1;
            }
        }
        self.counters.connections_opened += 1;
    }

    /// RFC 7323 §5.4: a per-connection offset for our timestamp clock.
    fn ts_offset(&self, t: &FourTuple) -> u32 {
        self.isn.ts_offset(
            SocketAddrV4::new(t.local_addr, t.local_port),
            SocketAddrV4::new(t.remote_addr, t.remote_port),
        )
    }

    /// A stateless SYN-ACK whose ISN is a SYN cookie (the SYN queue is full).
    fn send_cookie(&mut self, now: Instant, tuple: FourTuple, eth: EthInfo, syn: &PeerSyn) {
        let tcp = &self.config.tcp;
        let ts = tcp.timestamps && syn.tsval.is_some();
        // Without timestamps a cookie cannot carry window scale or SACK: do not offer them
        // (Linux does the same).
        let opts = CookieOptions {
            timestamps: ts,
            wscale: syn.wscale.filter(|_| ts && tcp.window_scaling),
            sack: ts && tcp.sack && syn.sack,
            ecn: false,
        };
        let local = SocketAddrV4::new(tuple.local_addr, tuple.local_port);
        let remote = SocketAddrV4::new(tuple.remote_addr, tuple.remote_port);
        let peer_mss = syn.mss.filter(|&m| m > 0).unwrap_or(536);
        let (iss, tsval) = self
            .cookies
            .encode(now, local, remote, syn.isn, peer_mss, opts);
        let mut options = TcpOptions {
            mss: Some(tcp.mss),
            sack_permitted: opts.sack,
            ..TcpOptions::default()
        };
        if let (Some(tsval), Some(peer)) = (tsval, syn.tsval) {
            options.timestamp = Some((tsval.wrapping_add(self.ts_offset(&tuple)), peer));
        }
        if opts.wscale.is_some() {
            options.wscale = Some(crate::conn::our_wscale(tcp));
        }
        let seg = TcpSegmentOut {
            src_port: tuple.local_port,
            dst_port: tuple.remote_port,
            seq: iss,
            ack: syn.isn + 1u32,
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: tcp.recv_buffer.min(usize::from(u16::MAX)) as u16,
            urgent: 0,
            options,
        };
        self.last_cookie = Some(now);
        self.counters.syn_cookies_sent += 1;
        self.push(Control::SynAck {
            dst_mac: eth.src,
            dst_ip: tuple.remote_addr,
            seg,
        });
    }

    /// An ACK to a listener: if it carries a valid SYN cookie, the connection is created in
    /// ESTABLISHED and the ACK processed on it. Returns whether it did.
    fn cookie_ack(
        &mut self,
        now: Instant,
        lslot: u32,
        tuple: FourTuple,
        eth: EthInfo,
        seg: &TcpSegment<'_>,
    ) -> bool {
        if self
            .last_cookie
            .is_none_or(|t| now.saturating_since(t) > COOKIE_WINDOW)
        {
            return false;
        }
        if self.closed_within_cookie_window(now, &tuple) {
            // A late segment of a connection closed meanwhile (e.g. the peer's last ACK
            // again, answering a retransmitted FIN): in an exchange with as many bytes each
            // way its ACK − SEQ is the handshake's, so the cookie arithmetic would accept it.
            // Dropped, as a segment for no connection that needs no answer.
            self.counters.out_of_window += 1;
            return true;
        }
        let Some(Slot {
            generation: lgen,
            body: Body::Listener(l),
        }) = self.slots.get(lslot as usize)
        else {
            return false;
        };
        if l.accept_q.len() >= l.backlog {
            return false;
        }
        let (lgen, buffers) = (*lgen, l.buffers);
        let ts_offset = self.ts_offset(&tuple);
        let tsecr = seg
            .options
            .timestamp
            .map(|(_, ecr)| ecr.wrapping_sub(ts_offset));
        let local = SocketAddrV4::new(tuple.local_addr, tuple.local_port);
        let remote = SocketAddrV4::new(tuple.remote_addr, tuple.remote_port);
        let Some(cookie) = self
            .cookies
            .decode(now, local, remote, seg.seq, seg.ack, tsecr)
        else {
            return false;
        };
        let syn = PeerSyn {
            isn: SeqNumber(seg.seq.0.wrapping_sub(1)),
            mss: Some(quantize_mss(cookie.mss)),
            wscale: cookie.wscale,
            sack: cookie.sack,
            tsval: seg.options.timestamp.map(|t| t.0),
            window: seg.window,
        };
        let Some(slot) = self.alloc_slot(Body::Free) else {
            return true; // counted as table_full; the ACK is dropped
        };
        let iss = SeqNumber(seg.ack.0.wrapping_sub(1));
        let mut tcb = Tcb::accept_syn(&self.config.tcp, tuple, iss, ts_offset, &syn, now);
        if let Some((send, recv)) = buffers {
            tcb.set_buffer_sizes(send, recv);
        }
        tcb.synack_sent_by_cookie();
        self.install(slot, tcb, Some((lslot, lgen)), now, Some(eth.src));
        self.counters.syn_cookies_accepted += 1;
        // The ACK itself completes the handshake (and may carry data).
        if let Some((tcb, mut env, cfg)) = self.conn_env(slot, now) {
            let _ = tcb.on_segment(cfg, seg, &mut env);
        }
        self.after(slot);
        true
    }

    /// Remembers that the connection of `tuple` closed, while SYN cookies are in use (else
    /// no late segment can be taken for a cookie ACK). Bounded: the oldest go first.
    fn remember_closed(&mut self, tuple: FourTuple) {
        let now = self.now;
        if self
            .last_cookie
            .is_none_or(|t| now.saturating_since(t) > COOKIE_WINDOW)
        {
            return;
        }
        let stamp = (now.micros() / 1000) as u32;
        if self.closed_recently.replace(&tuple, stamp).is_some() {
            return;
        }
        let cap = self.closed_recently.capacity();
        while self.closed_recently.len() >= cap || self.closed_order.len() >= cap {
            let Some(oldest) = self.closed_order.pop_front() else {
                break;
            };
            self.closed_recently.remove(&oldest);
        }
        if self.closed_recently.insert(tuple, stamp).is_ok() {
            self.closed_order.push_back(tuple);
        }
    }

    /// Whether the connection of `tuple` closed less than the cookie window ago.
    fn closed_within_cookie_window(&mut self, now: Instant, tuple: &FourTuple) -> bool {
        if self.closed_order.is_empty() {
            return false;
        }
        // Forget the entries older than the window (the order is by closing time).
        let now_ms = (now.micros() / 1000) as u32;
        let window_ms = (COOKIE_WINDOW.micros() / 1000) as u32;
        while let Some(oldest) = self.closed_order.front().copied() {
            match self.closed_recently.get(&oldest) {
                Some(at) if now_ms.wrapping_sub(at) <= window_ms => break,
                _ => {
                    self.closed_order.pop_front();
                    self.closed_recently.remove(&oldest);
                }
            }
        }
        self.closed_recently
            .get(tuple)
            .is_some_and(|at| now_ms.wrapping_sub(at) <= window_ms)
    }

    // -----------------------------------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------------------------------

    /// The next event for the layer above, or `None`. Several changes of one connection
    /// between two calls are reported once each (not once per segment). Call it until
    /// `None` after the `handle_*` calls and socket operations of a pass.
    #[must_use = "events not handled are lost"]
    pub fn poll_event(&mut self) -> Option<Event> {
        // Bounded: every iteration reports an event or drops a queue entry.
        while let Some(&(slot, generation)) = self.ev_q.front() {
            let handle = Handle { slot, generation };
            let listener_handle = match self.slots.get(slot as usize) {
                Some(Slot {
                    generation: g,
                    body: Body::Conn(tcb),
                }) if *g == generation => tcb.listener.map(|(s, g)| Handle {
                    slot: s,
                    generation: g,
                }),
                _ => {
                    self.ev_q.pop_front();
                    continue;
                }
            };
            let Some(Body::Conn(tcb)) = self.slots.get_mut(slot as usize).map(|s| &mut s.body)
            else {
                self.ev_q.pop_front();
                continue;
            };
            let allowed = if tcb.app_owned {
                tcb.events
            } else {
                tcb.events & ev::ACCEPTED
            };
            if allowed == 0 {
                tcb.queued &= !EV_QUEUED;
                self.ev_q.pop_front();
                continue;
            }
            let bit = allowed & allowed.wrapping_neg();
            tcb.events &= !bit;
            if allowed & !bit == 0 {
                tcb.queued &= !EV_QUEUED;
                self.ev_q.pop_front();
            }
            let reason = tcb.error.unwrap_or(CloseReason::Normal);
            return Some(match bit {
                ev::CONNECTED => Event::Connected(handle),
                ev::ACCEPTED => match listener_handle {
                    Some(listener) => Event::Accepted {
                        listener,
                        conn: handle,
                    },
                    None => continue,
                },
                ev::READABLE => Event::Readable(handle),
                ev::WRITABLE => Event::Writable(handle),
                ev::PEER_CLOSED => Event::PeerClosed(handle),
                ev::RESET => Event::Reset(handle),
                ev::TIMED_OUT => Event::TimedOut(handle),
                _ => Event::Closed(handle, reason),
            });
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Socket operations
    // -----------------------------------------------------------------------------------------

    fn tcb(&self, h: Handle) -> Result<&Tcb, SocketError> {
        match self.slots.get(h.slot as usize) {
            Some(Slot {
                generation,
                body: Body::Conn(tcb),
            }) if *generation == h.generation && tcb.app_owned => Ok(tcb),
            Some(Slot {
                generation,
                body: Body::Listener(_),
            }) if *generation == h.generation => Err(SocketError::InvalidOperation),
            _ => Err(SocketError::BadHandle),
        }
    }

    fn tcb_mut(&mut self, h: Handle) -> Result<&mut Tcb, SocketError> {
        self.tcb(h)?;
        match self.slots.get_mut(h.slot as usize).map(|s| &mut s.body) {
            Some(Body::Conn(tcb)) => Ok(tcb),
            _ => Err(SocketError::BadHandle),
        }
    }

    fn is_listener(&self, h: Handle) -> bool {
        matches!(self.slots.get(h.slot as usize), Some(Slot { generation, body: Body::Listener(_) }) if *generation == h.generation)
    }

    /// Listen on `port` of our address with an accept queue of `backlog` connections
    /// (RFC 9293 §3.10.1 passive OPEN). Connections complete the handshake without the
    /// application; [`Event::Accepted`] reports each, [`accept`](Self::accept) takes it.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<Handle, SocketError> {
        if port == 0 || backlog == 0 {
            return Err(SocketError::InvalidArgument);
        }
        if self.listeners.contains_key(&port) {
            return Err(SocketError::AddrInUse);
        }
        let slot = self
            .alloc_slot(Body::Listener(Listener {
                port,
                backlog,
                accept_q: VecDeque::new(),
                half_open: 0,
                buffers: None,
            }))
            .ok_or(SocketError::TooManyConnections)?;
        self.listeners.insert(port, slot);
        Ok(self.handle_of(slot))
    }

    /// Take the oldest established connection from `listener`'s accept queue
    /// (`WouldBlock` when it is empty).
    pub fn accept(&mut self, listener: Handle) -> Result<Handle, SocketError> {
        if !self.is_listener(listener) {
            return Err(match self.tcb(listener) {
                Ok(_) => SocketError::InvalidOperation,
                Err(e) => e,
            });
        }
        loop {
            let Some(Body::Listener(l)) = self
                .slots
                .get_mut(listener.slot as usize)
                .map(|s| &mut s.body)
            else {
                return Err(SocketError::BadHandle);
            };
            let Some(slot) = l.accept_q.pop_front() else {
                return Err(SocketError::WouldBlock);
            };
            if let Some(Body::Conn(tcb)) = self.slots.get_mut(slot as usize).map(|s| &mut s.body) {
                if tcb.listener == Some((listener.slot, listener.generation)) && !tcb.app_owned {
                    tcb.listener = None;
                    tcb.app_owned = true;
                    // Whatever happened before accept (data, FIN) is reported now.
                    tcb.events &= !ev::ACCEPTED;
                    if !tcb.recv.is_empty() {
                        tcb.events |= ev::READABLE;
                    }
                    if tcb.state == State::Closed {
                        tcb.events |= ev::CLOSED;
                    }
                    self.after(slot);
                    return Ok(self.handle_of(slot));
                }
            }
        }
    }

    /// Open a connection to `remote` from an ephemeral port (RFC 9293 §3.10.1 active OPEN;
    /// RFC 6056 port choice). [`Event::Connected`] or a [`Event::Closed`] with
    /// [`CloseReason::Refused`]/[`CloseReason::TimedOut`] tells how it went.
    pub fn connect(&mut self, now: Instant, remote: SocketAddrV4) -> Result<Handle, SocketError> {
        self.connect_with(now, remote, |_| true)
    }

    /// Like [`connect`](Self::connect), choosing only local ports for which `accept_port`
    /// holds (mtcp-api picks ports whose replies are steered to the calling core).
    pub fn connect_with(
        &mut self,
        now: Instant,
        remote: SocketAddrV4,
        accept_port: impl FnMut(u16) -> bool,
    ) -> Result<Handle, SocketError> {
        if remote.port() == 0
            || remote.ip().is_unspecified()
            || remote.ip().is_broadcast()
            || remote.ip().is_multicast()
        {
            return Err(SocketError::InvalidArgument);
        }
        route::next_hop(&self.config.iface, *remote.ip()).ok_or(SocketError::NoRoute)?;
        self.now = self.now.max(now);
        if self.live >= self.config.max_connections {
            self.counters.table_full += 1;
            return Err(SocketError::TooManyConnections);
        }
        let local_ip = self.config.iface.addr;
        let Endpoint {
            ports,
            flows,
            listeners,
            ..
        } = self;
        let port = ports
            .pick_with(
                local_ip,
                remote,
                |p| {
                    !listeners.contains_key(&p)
                        && flows
                            .get(&FourTuple {
                                local_addr: local_ip,
                                local_port: p,
                                remote_addr: *remote.ip(),
                                remote_port: remote.port(),
                            })
                            .is_none()
                },
                accept_port,
            )
            .ok_or(SocketError::PortsExhausted)?;
        let tuple = FourTuple {
            local_addr: local_ip,
            local_port: port,
            remote_addr: *remote.ip(),
            remote_port: remote.port(),
        };
        let (iss, ts_offset) =
            self.isn
                .isn_and_ts_offset(now, SocketAddrV4::new(local_ip, port), remote);
        let slot = self
            .alloc_slot(Body::Free)
            .ok_or(SocketError::TooManyConnections)?;
        let mut tcb = Tcb::connect(&self.config.tcp, tuple, iss, ts_offset, now);
        tcb.app_owned = true;
        self.install(slot, tcb, None, now, None);
        self.after(slot);
        // With many flows a connect's check of its port misses the cache (one random cell
        // of a large table): hint the cell of the port a connect a few calls later will try
        // first (applications open connections in bursts).
        if let (Some(hint), true) = (self.config.prefetch, self.flows.len() >= WARM_MIN_FLOWS) {
            if let Some(port) = self
                .ports
                .next_candidate(local_ip, remote, CONNECT_PREFETCH_AHEAD)
            {
                let next = FourTuple {
                    local_port: port,
                    ..tuple
                };
                self.flows.prefetch(&next, hint);
            }
        }
        Ok(self.handle_of(slot))
    }

    /// Queue `data` for sending; returns how many bytes the send buffer took
    /// (`WouldBlock` if none; [`Event::Writable`] says when room comes back).
    pub fn send(&mut self, h: Handle, data: &[u8]) -> Result<usize, SocketError> {
        let tcb = self.tcb_mut(h)?;
        if let Some(e) = closed_error(tcb) {
            return Err(e);
        }
        if tcb.fin_queued()
            || !matches!(
                tcb.state,
                State::SynSent | State::SynReceived | State::Established | State::CloseWait
            )
        {
            return Err(SocketError::Shutdown);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let storage = &mut self.storage;
        let n = match self.slots.get_mut(h.slot as usize).map(|s| &mut s.body) {
            Some(Body::Conn(tcb)) => tcb.write(data, storage),
            _ => return Err(SocketError::BadHandle),
        };
        if n == 0 {
            return Err(SocketError::WouldBlock);
        }
        self.after(h.slot);
        Ok(n)
    }

    /// Read received bytes into `buf`. `Ok(0)` means the peer closed (end of stream) or
    /// `buf` is empty; `WouldBlock` means nothing yet ([`Event::Readable`] says when).
    pub fn recv(&mut self, h: Handle, buf: &mut [u8]) -> Result<usize, SocketError> {
        let tcb = self.tcb_mut(h)?;
        if buf.is_empty() {
            return Ok(0);
        }
        if !tcb.recv.is_empty() {
            let n = tcb.recv.read(buf);
            // Reading changes nothing else the bookkeeping looks at.
            if tcb.on_app_read(n) {
                self.after(h.slot);
            }
            return Ok(n);
        }
        nothing_to_read(tcb)
    }

    /// Reads received bytes in place, without copying them out: `f` gets the bytes ready to
    /// read as two slices (the second is empty unless the buffer wraps; read the first, then
    /// the second) and returns how many it consumed, from the start; more than it was given
    /// counts as all of them. Returns that count, and the window opens by as much. When no
    /// byte is ready `f` is not called and the result is [`recv`](Self::recv)'s: `Ok(0)` at
    /// the end of the stream, `WouldBlock` before, or the connection's error.
    pub fn recv_with<F>(&mut self, h: Handle, f: F) -> Result<usize, SocketError>
    where
        F: FnOnce(&[u8], &[u8]) -> usize,
    {
        let tcb = self.tcb_mut(h)?;
        if tcb.recv.is_empty() {
            return nothing_to_read(tcb);
        }
        let (a, b) = tcb.recv.peek(usize::MAX);
        let n = f(a, b).min(a.len() + b.len());
        let n = tcb.recv.consume(n);
        if tcb.on_app_read(n) {
            self.after(h.slot);
        }
        Ok(n)
    }

    /// Copy received bytes into `buf` without consuming them.
    pub fn peek(&self, h: Handle, buf: &mut [u8]) -> Result<usize, SocketError> {
        let tcb = self.tcb(h)?;
        let (a, b) = tcb.recv.peek(buf.len());
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..a.len() + b.len()].copy_from_slice(b);
        Ok(a.len() + b.len())
    }

    /// Bytes ready to read (`FIONREAD`).
    pub fn recv_available(&self, h: Handle) -> Result<usize, SocketError> {
        Ok(self.tcb(h)?.recv.len())
    }

    /// Room in the send buffer.
    pub fn send_space(&self, h: Handle) -> Result<usize, SocketError> {
        Ok(self.tcb(h)?.send.free())
    }

    /// Shut the write side: a FIN follows the queued data (RFC 9293 §3.10.4). Reading
    /// continues until the peer closes.
    pub fn shutdown(&mut self, now: Instant, h: Handle) -> Result<(), SocketError> {
        let (tcb, mut env, _) = self.checked_env(h, now)?;
        if let Some(e) = closed_error(tcb) {
            return Err(e);
        }
        tcb.shutdown_write(&mut env);
        self.after(h.slot);
        Ok(())
    }

    fn checked_env(
        &mut self,
        h: Handle,
        now: Instant,
    ) -> Result<(&mut Tcb, Env<'_>, &TcpConfig), SocketError> {
        self.tcb(h)?;
        self.now = self.now.max(now);
        self.conn_env(h.slot, now).ok_or(SocketError::BadHandle)
    }

    /// Close the socket: the handle is invalid afterwards. A listener stops listening and
    /// resets the connections nobody accepted. A connection is closed gracefully (FIN after
    /// the queued data, RFC 9293 §3.10.4), or reset if received data was left unread
    /// (RFC 2525 §2.17); the endpoint finishes the closing handshake on its own.
    pub fn close(&mut self, now: Instant, h: Handle) -> Result<(), SocketError> {
        if self.is_listener(h) {
            self.close_listener(now, h);
            return Ok(());
        }
        let (tcb, mut env, _) = self.checked_env(h, now)?;
        tcb.app_owned = false;
        tcb.events = 0;
        match tcb.state {
            State::Closed => {}
            // "SYN-SENT: Delete the TCB".
            State::SynSent => tcb.close_with(CloseReason::Aborted, &mut env),
            _ if !tcb.recv.is_empty() => {
                env.counters.aborts += 1;
                tcb.abort_with_rst(CloseReason::Aborted, &mut env);
            }
            _ => {
                tcb.shutdown_write(&mut env);
                tcb.on_app_close(&mut env);
            }
        }
        self.after(h.slot);
        Ok(())
    }

    /// Reset the connection (RST) and release the handle (RFC 9293 §3.10.5 ABORT).
    pub fn abort(&mut self, now: Instant, h: Handle) -> Result<(), SocketError> {
        if self.is_listener(h) {
            self.close_listener(now, h);
            return Ok(());
        }
        let (tcb, mut env, _) = self.checked_env(h, now)?;
        tcb.app_owned = false;
        tcb.events = 0;
        if tcb.state != State::Closed {
            env.counters.aborts += 1;
            tcb.abort_with_rst(CloseReason::Aborted, &mut env);
        }
        self.after(h.slot);
        Ok(())
    }

    fn close_listener(&mut self, now: Instant, h: Handle) {
        let Some(Body::Listener(l)) = self.slots.get_mut(h.slot as usize).map(|s| &mut s.body)
        else {
            return;
        };
        let port = l.port;
        let pending: Vec<u32> = l.accept_q.drain(..).collect();
        self.listeners.remove(&port);
        self.free_slot(h.slot);
        for slot in pending {
            if let Some((tcb, mut env, _)) = self.conn_env(slot, now) {
                tcb.listener = None;
                tcb.abort_with_rst(CloseReason::Aborted, &mut env);
            }
            self.after(slot);
        }
        // Embryonic connections find their listener gone when they complete, and are reset.
    }

    /// The connection's state.
    pub fn state(&self, h: Handle) -> Result<State, SocketError> {
        if self.is_listener(h) {
            return Ok(State::Listen);
        }
        Ok(self.tcb(h)?.state)
    }

    /// Why the connection ended, once it has (`SO_ERROR`-like).
    pub fn close_reason(&self, h: Handle) -> Result<Option<CloseReason>, SocketError> {
        Ok(self.tcb(h)?.error)
    }

    /// Our address and port.
    pub fn local_addr(&self, h: Handle) -> Result<SocketAddrV4, SocketError> {
        if let Some(Slot {
            generation,
            body: Body::Listener(l),
        }) = self.slots.get(h.slot as usize)
        {
            if *generation == h.generation {
                return Ok(SocketAddrV4::new(self.config.iface.addr, l.port));
            }
        }
        let t = self.tcb(h)?.tuple;
        Ok(SocketAddrV4::new(t.local_addr, t.local_port))
    }

    /// The peer's address and port.
    pub fn peer_addr(&self, h: Handle) -> Result<SocketAddrV4, SocketError> {
        let t = self.tcb(h)?.tuple;
        Ok(SocketAddrV4::new(t.remote_addr, t.remote_port))
    }

    /// Disable (`true`) or enable Nagle's algorithm (`TCP_NODELAY`).
    pub fn set_nodelay(&mut self, h: Handle, nodelay: bool) -> Result<(), SocketError> {
        self.tcb_mut(h)?.set_nodelay(nodelay);
        self.after(h.slot);
        Ok(())
    }

    /// Asks for one [`Event::Writable`] the next time acknowledged data frees room in the
    /// send buffer, even though no `send` fell short. A layer that mirrors the buffer's fill
    /// level (mtcp-api gives its application send credit back as data is acknowledged)
    /// needs every such moment, not only those after a short `send`.
    pub fn want_writable(&mut self, h: Handle) -> Result<(), SocketError> {
        self.tcb_mut(h)?.want_writable();
        Ok(())
    }

    /// The send and receive buffer sizes of a connection, or of the connections a listener
    /// will accept (`SO_SNDBUF`/`SO_RCVBUF`), each clamped to `1..=` the configured size.
    /// The receive window follows the receive size from the next segment on (a window
    /// already advertised is not taken back: RFC 9293 §3.8.6.2.1); a send buffer made smaller
    /// than what it holds takes no write until acknowledgments bring it below the new size.
    pub fn set_buffer_sizes(
        &mut self,
        h: Handle,
        send: usize,
        recv: usize,
    ) -> Result<(), SocketError> {
        let send = send.clamp(1, self.config.tcp.send_buffer.max(1));
        let recv = recv.clamp(1, self.config.tcp.recv_buffer.max(1));
        if self.is_listener(h) {
            if let Some(Body::Listener(l)) =
                self.slots.get_mut(h.slot as usize).map(|s| &mut s.body)
            {
                l.buffers = Some((send, recv));
            }
            return Ok(());
        }
        self.tcb_mut(h)?.set_buffer_sizes(send, recv);
        Ok(())
    }

    /// Whether the listener `h` has a connection for [`accept`](Self::accept) (`false` for
    /// anything that is not a listener).
    pub fn accept_ready(&self, h: Handle) -> bool {
        let Some(Slot {
            generation,
            body: Body::Listener(l),
        }) = self.slots.get(h.slot as usize)
        else {
            return false;
        };
        *generation == h.generation
            && l.accept_q.iter().any(|&slot| {
                matches!(self.slots.get(slot as usize).map(|s| &s.body),
                    Some(Body::Conn(tcb)) if tcb.listener == Some((h.slot, h.generation))
                        && !tcb.app_owned)
            })
    }

    /// Whether Nagle's algorithm is disabled.
    pub fn nodelay(&self, h: Handle) -> Result<bool, SocketError> {
        Ok(self.tcb(h)?.nodelay())
    }

    /// Keepalive settings (`SO_KEEPALIVE` with idle/interval/count); `None` turns it off.
    pub fn set_keepalive(
        &mut self,
        now: Instant,
        h: Handle,
        ka: Option<Keepalive>,
    ) -> Result<(), SocketError> {
        if ka.is_some_and(|k| {
            k.count == 0 || k.interval == Duration::ZERO || k.idle == Duration::ZERO
        }) {
            return Err(SocketError::InvalidArgument);
        }
        let (tcb, mut env, _) = self.checked_env(h, now)?;
        tcb.set_keepalive(ka, &mut env);
        Ok(())
    }

    /// The keepalive settings.
    pub fn keepalive(&self, h: Handle) -> Result<Option<Keepalive>, SocketError> {
        Ok(self.tcb(h)?.keepalive())
    }

    /// A snapshot of the connection's variables.
    pub fn conn_info(&self, h: Handle) -> Result<crate::state::ConnInfo, SocketError> {
        Ok(self.tcb(h)?.info())
    }

    /// Snapshots of every connection in the table (embryonic, orphaned and TIME-WAIT ones
    /// included), for tests and monitoring.
    pub fn connections(&self) -> impl Iterator<Item = crate::state::ConnInfo> + '_ {
        let tcp = &self.config.tcp;
        self.slots
            .iter()
            .filter_map(|s| match &s.body {
                Body::Conn(tcb) => Some(tcb.info()),
                _ => None,
            })
            .chain(self.tw.iter().map(|s| Tcb::time_wait_info(tcp, s)))
    }

    /// Connections (any state, TIME-WAIT and embryonic included) and listeners in use.
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// Heap bytes held by the connection table and the buffers of its connections (for
    /// memory measurements; walks every slot).
    pub fn memory_usage(&self) -> usize {
        let table = self.slots.capacity() * core::mem::size_of::<Slot>()
            + self.free.capacity() * 4
            + self.flows.capacity() * 2 * 16;
        let buffers: usize = self
            .slots
            .iter()
            .map(|s| match &s.body {
                Body::Conn(tcb) => tcb.send.allocated() + tcb.recv.allocated(),
                _ => 0,
            })
            .sum();
        table + buffers + self.storage.allocated() + self.tw.allocated()
    }
}

/// What a read returns when no byte is ready: end of stream (`Ok(0)`) after the peer's FIN or
/// once closed, the connection's error, or `WouldBlock`.
/// The next segment of `class` of `tcb` as a whole frame in `buf`, from `local` to the next
/// hop `mac`: its length, or `None` if it had nothing of that class to send or `buf` is too
/// small (then the segment is lost, counted in `control_dropped`: retransmission recovers
/// data, and a lost ACK is repeated by the peer).
fn build_frame(
    tcb: &mut Tcb,
    class: TxClass,
    cfg: &TcpConfig,
    env: &mut Env<'_>,
    (local, mac): (LocalAddrs, EthernetAddress),
    checksum: ChecksumMode,
    buf: &mut [u8],
) -> Option<usize> {
    let mut seg = TcpSegmentOut::default();
    let (off, len) = tcb.next_segment(class, cfg, env, &mut seg)?;
    let hdr = EthIpv4Header::new(local.mac, mac, local.ip, tcb.tuple.remote_addr);
    let (a, b) = tcb.send.peek(off, len);
    match wire::emit_tcp_parts(buf, &hdr, &seg, a, b, checksum) {
        Ok(n) => Some(n),
        Err(_) => {
            env.counters.control_dropped += 1;
            None
        }
    }
}

fn nothing_to_read(tcb: &Tcb) -> Result<usize, SocketError> {
    if tcb.fin_received() {
        return Ok(0);
    }
    if let Some(e) = closed_error(tcb) {
        return Err(e);
    }
    match tcb.state {
        State::Closed => Ok(0),
        _ => Err(SocketError::WouldBlock),
    }
}

/// The error a call on a closed connection reports.
fn closed_error(tcb: &Tcb) -> Option<SocketError> {
    if tcb.state != State::Closed {
        return None;
    }
    match tcb.error {
        Some(CloseReason::Reset) => Some(SocketError::ConnectionReset),
        Some(CloseReason::Refused) => Some(SocketError::ConnectionRefused),
        Some(CloseReason::TimedOut) => Some(SocketError::TimedOut),
        Some(CloseReason::Aborted) => Some(SocketError::ConnectionReset),
        _ => Some(SocketError::NotConnected),
    }
}
