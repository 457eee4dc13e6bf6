//! The tcp-core side of `mtcp-bench core`: two `Endpoint`s over the in-memory link, and the
//! event-driven applications of each workload.

use super::link::{FrameQueue, Link};
use super::{
    bulk_bytes, check_bulk, check_response, request, response_to, Driver, Gate, IdleProbe,
    BULK_BUFFER, BULK_CHUNK, MSG_LEN, RTO_FLOOR_MS, SERVER_PORT_BASE, TIME_WAIT_MS,
};
use core::net::{Ipv4Addr, SocketAddrV4};
use tcp_core::{
    ChecksumAccel, CloseReason, Duration, Endpoint, EndpointConfig, Event, Handle, Instant,
    InterfaceConfig, Prefetch, SocketError, TcpConfig,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// An endpoint at `addr` whose only neighbour, `peer`, is in its static ARP table.
fn endpoint(
    mac: [u8; 6],
    addr: Ipv4Addr,
    peer: (Ipv4Addr, [u8; 6]),
    tcp: TcpConfig,
    max_connections: usize,
    syn_queue: usize,
    secret: u8,
) -> Result<Endpoint, String> {
    Endpoint::new(EndpointConfig {
        iface: InterfaceConfig {
            mac,
            addr,
            prefix_len: 24,
            gateway: None,
            routes: vec![],
            static_arp: vec![peer],
        },
        tcp,
        secret: [secret; 16],
        max_connections,
        syn_queue,
        ephemeral_ports: 1024..=65535,
        prefetch: Some(Prefetch(psio::prefetch)),
        checksum_accel: Some(ChecksumAccel(psio::checksum_sum)),
        ..Default::default()
    })
    .map_err(|e| format!("tcp-core endpoint config: {e}"))
}

/// Both endpoints and the link between them.
struct Wire {
    link: Link,
    client: Endpoint,
    server: Endpoint,
}

/// Writes `ep`'s output into `q` until `ep` has nothing more or `q` is full.
fn transmit(ep: &mut Endpoint, now: Instant, q: &mut FrameQueue) {
    while let Some(slot) = q.free_slot() {
        match ep.poll_transmit(now, slot) {
            Some(len) => q.commit(len),
            None => break,
        }
    }
}

/// Hands every frame of `q` to `ep`, as one batch (as mtcp-api hands an RX batch).
fn deliver(ep: &mut Endpoint, now: Instant, q: &mut FrameQueue) {
    ep.handle_frames(now, q.frames());
    q.clear();
}

impl Wire {
    fn new(client: Endpoint, server: Endpoint, link: Link) -> Wire {
        Wire {
            link,
            client,
            server,
        }
    }

    /// Receive half of a pass: timers, then each side takes its input. Returns whether a frame
    /// moved.
    fn rx(&mut self, now: Instant) -> bool {
        let before = self.link.a_to_b.len() + self.link.b_to_a.len();
        for ep in [&mut self.client, &mut self.server] {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
        deliver(&mut self.client, now, &mut self.link.b_to_a);
        deliver(&mut self.server, now, &mut self.link.a_to_b);
        before != 0
    }

    /// Transmit half of a pass (after the applications ran): each side writes its output.
    /// Returns whether a frame moved.
    fn tx(&mut self, now: Instant) -> bool {
        let before = self.link.frames();
        transmit(&mut self.client, now, &mut self.link.a_to_b);
        transmit(&mut self.server, now, &mut self.link.b_to_a);
        self.link.frames() != before
    }

    fn next_wakeup(&self) -> Option<u64> {
        match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b).micros()),
            (a, b) => a.or(b).map(Instant::micros),
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "client: {} connections, {:?}; server: {} connections, {:?}; link: {} + {} frames \
             queued",
            self.client.connection_count(),
            self.client.counters(),
            self.server.connection_count(),
            self.server.counters(),
            self.link.a_to_b.len(),
            self.link.b_to_a.len(),
        )
    }

    /// Prints a note when a lossless, in-order link still saw retransmissions, resets or
    /// drops: the figures are then not those of the normal path alone.
    fn warn_on_anomalies(&self) {
        for (name, ep) in [("client", &self.client), ("server", &self.server)] {
            let c = ep.counters();
            let odd: Vec<String> = [
                ("retransmits", c.retransmits),
                ("out_of_window", c.out_of_window),
                ("rst_sent", c.rst_sent),
                ("rst_received", c.rst_received),
                ("bad_checksum", c.bad_checksum),
                ("malformed", c.malformed),
                ("control_dropped", c.control_dropped),
                ("table_full", c.table_full),
                ("syn_queue_full", c.syn_queue_full),
                ("accept_queue_full", c.accept_queue_full),
                ("arp_dropped", c.arp_dropped),
                ("timeouts", c.timeouts),
            ]
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
            if !odd.is_empty() {
                println!(
                    "note: mtcp-rs {name} on a lossless link, over {} connections: {}",
                    c.connections_opened,
                    odd.join(", ")
                );
            }
        }
    }
}

/// Per-connection application state, indexed by handle slot and checked by generation.
///
/// Entries are reused in place (as the smoltcp side reuses its socket records): building a
/// record on the stack and copying it in cost a store-forwarding stall per connection.
struct Slots<T> {
    v: Vec<Entry<T>>,
}

#[derive(Default)]
struct Entry<T> {
    generation: u32,
    live: bool,
    t: T,
}

impl<T: Default> Slots<T> {
    /// `n` empty entries, written now (so their pages are resident before a memory baseline).
    fn new(n: usize) -> Slots<T> {
        Slots {
            v: (0..n).map(|_| Entry::default()).collect(),
        }
    }

    /// Makes `h`'s entry live and lets `init` set its fields.
    fn insert(&mut self, h: Handle, init: impl FnOnce(&mut T)) {
        let i = h.slot as usize;
        if i >= self.v.len() {
            self.v.resize_with(i + 1, Entry::default);
        }
        let e = &mut self.v[i];
        e.generation = h.generation;
        e.live = true;
        init(&mut e.t);
    }

    fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        match self.v.get_mut(h.slot as usize) {
            Some(e) if e.live && e.generation == h.generation => Some(&mut e.t),
            _ => None,
        }
    }

    fn remove(&mut self, h: Handle) {
        if let Some(e) = self.v.get_mut(h.slot as usize) {
            if e.generation == h.generation {
                e.live = false;
            }
        }
    }
}

struct ClientConn {
    port: u32,
    token: u64,
    got: u8,
    resp: [u8; MSG_LEN],
}

struct ServerConn {
    port: u32,
    got: u8,
    responded: bool,
    req: [u8; MSG_LEN],
}

impl Default for ClientConn {
    fn default() -> ClientConn {
        ClientConn {
            port: 0,
            token: 0,
            got: 0,
            resp: [0; MSG_LEN],
        }
    }
}

impl Default for ServerConn {
    fn default() -> ServerConn {
        ServerConn {
            port: 0,
            got: 0,
            responded: false,
            req: [0; MSG_LEN],
        }
    }
}

fn err(what: &str, h: Handle, e: SocketError) -> String {
    format!("{what} on {h:?}: {e}")
}

/// Short transactions (or, with `close` false, connections left open after one exchange).
pub(crate) struct ShortPair {
    wire: Wire,
    gate: Gate,
    listeners: Vec<Handle>,
    clients: Slots<ClientConn>,
    servers: Slots<ServerConn>,
    close: bool,
    /// The instant of the current pass.
    now: Instant,
}

impl ShortPair {
    /// A closed loop of `concurrency` transactions, `buffer` bytes per socket buffer.
    pub(crate) fn new(concurrency: usize, buffer: usize) -> Result<ShortPair, String> {
        let max = max_connections(concurrency);
        ShortPair::build(
            Link::new(),
            Slots::new(max),
            Slots::new(max),
            Gate::new(concurrency, u64::MAX),
            max,
            buffer,
            true,
        )
    }

    fn build(
        link: Link,
        clients: Slots<ClientConn>,
        servers: Slots<ServerConn>,
        gate: Gate,
        max: usize,
        buffer: usize,
        close: bool,
    ) -> Result<ShortPair, String> {
        let per_port = gate.cap(0);
        let tcp = TcpConfig {
            send_buffer: buffer,
            recv_buffer: buffer,
            time_wait: Duration::from_millis(TIME_WAIT_MS),
            min_rto: Duration::from_millis(RTO_FLOOR_MS),
            initial_rto: Duration::from_millis(RTO_FLOOR_MS),
            max_rto: Duration::from_millis(2 * RTO_FLOOR_MS),
            ..Default::default()
        };
        let client = endpoint(
            CLIENT_MAC,
            CLIENT_IP,
            (SERVER_IP, SERVER_MAC),
            tcp.clone(),
            max,
            per_port + 16,
            1,
        )?;
        let mut server = endpoint(
            SERVER_MAC,
            SERVER_IP,
            (CLIENT_IP, CLIENT_MAC),
            tcp,
            max,
            per_port + 16,
            2,
        )?;
        let listeners = (0..gate.ports())
            .map(|j| {
                let port = SERVER_PORT_BASE + j as u16;
                server
                    .listen(port, per_port + 16)
                    .map_err(|e| format!("listen on {port}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ShortPair {
            wire: Wire::new(client, server, link),
            gate,
            listeners,
            clients,
            servers,
            close,
            now: Instant::ZERO,
        })
    }

    /// Prints a note if the endpoints counted anything unexpected.
    pub(crate) fn warn_on_anomalies(&self) {
        self.wire.warn_on_anomalies();
    }

    fn client_send(&mut self, h: Handle) -> Result<(), String> {
        let Some(c) = self.clients.get_mut(h) else {
            return Ok(());
        };
        match self.wire.client.send(h, &request(c.token)) {
            Ok(MSG_LEN) => Ok(()),
            Ok(n) => Err(format!("client send on {h:?} took {n} of {MSG_LEN} bytes")),
            Err(e) => Err(err("client send", h, e)),
        }
    }

    fn client_read(&mut self, h: Handle) -> Result<(), String> {
        let Some(c) = self.clients.get_mut(h) else {
            return Ok(());
        };
        while usize::from(c.got) < MSG_LEN {
            match self.wire.client.recv(h, &mut c.resp[usize::from(c.got)..]) {
                Ok(0) => {
                    return Err(format!(
                        "client of transaction {}: EOF after {} response bytes",
                        c.token, c.got
                    ))
                }
                Ok(n) => c.got += n as u8,
                Err(SocketError::WouldBlock) => return Ok(()),
                Err(e) => return Err(err("client recv", h, e)),
            }
        }
        check_response(c.token, &c.resp)?;
        let port = c.port as usize;
        if self.close {
            self.wire
                .client
                .close(self.now, h)
                .map_err(|e| err("client close", h, e))?;
        }
        self.clients.remove(h);
        self.gate.client_done(port);
        Ok(())
    }

    fn server_accept(&mut self, listener: Handle) -> Result<(), String> {
        let port = self
            .listeners
            .iter()
            .position(|&l| l == listener)
            .ok_or_else(|| format!("accept event for unknown listener {listener:?}"))?;
        loop {
            match self.wire.server.accept(listener) {
                Ok(h) => {
                    // The request buffer keeps old bytes: `got` says how many are new.
                    self.servers.insert(h, |c| {
                        c.port = port as u32;
                        c.got = 0;
                        c.responded = false;
                    });
                    // Data may have come with the handshake's last ACK.
                    self.serve(h)?;
                }
                Err(SocketError::WouldBlock) => return Ok(()),
                Err(e) => return Err(err("accept", listener, e)),
            }
        }
    }

    fn serve(&mut self, h: Handle) -> Result<(), String> {
        let Some(c) = self.servers.get_mut(h) else {
            return Ok(());
        };
        loop {
            if !c.responded {
                match self.wire.server.recv(h, &mut c.req[usize::from(c.got)..]) {
                    Ok(0) => {
                        return Err(format!(
                            "server on {h:?}: EOF after {} request bytes",
                            c.got
                        ))
                    }
                    Ok(n) => c.got += n as u8,
                    Err(SocketError::WouldBlock) => return Ok(()),
                    Err(e) => return Err(err("server recv", h, e)),
                }
                if usize::from(c.got) == MSG_LEN {
                    let resp = response_to(&c.req)?;
                    match self.wire.server.send(h, &resp) {
                        Ok(MSG_LEN) => c.responded = true,
                        Ok(n) => {
                            return Err(format!("server send on {h:?} took {n} of {MSG_LEN} bytes"))
                        }
                        Err(e) => return Err(err("server send", h, e)),
                    }
                    if !self.close {
                        let port = c.port as usize;
                        self.servers.remove(h);
                        self.gate.server_done(port);
                        return Ok(());
                    }
                }
            } else {
                let mut extra = [0u8; 1];
                match self.wire.server.recv(h, &mut extra) {
                    Ok(0) => {
                        let port = c.port as usize;
                        self.wire
                            .server
                            .close(self.now, h)
                            .map_err(|e| err("server close", h, e))?;
                        self.servers.remove(h);
                        self.gate.server_done(port);
                        return Ok(());
                    }
                    Ok(_) => return Err(format!("server on {h:?}: bytes after the request")),
                    Err(SocketError::WouldBlock) => return Ok(()),
                    Err(e) => return Err(err("server recv", h, e)),
                }
            }
        }
    }

    fn start(&mut self, now: Instant) -> Result<bool, String> {
        let mut acted = false;
        for j in 0..self.gate.ports() {
            while self.gate.may_start(j) {
                let token = self.gate.start(j);
                let remote = SocketAddrV4::new(SERVER_IP, SERVER_PORT_BASE + j as u16);
                let h = self
                    .wire
                    .client
                    .connect(now, remote)
                    .map_err(|e| format!("connect to {remote}: {e}"))?;
                self.clients.insert(h, |c| {
                    c.port = j as u32;
                    c.token = token;
                    c.got = 0;
                });
                acted = true;
            }
        }
        Ok(acted)
    }
}

impl Driver for ShortPair {
    fn step(&mut self, now_us: u64) -> Result<bool, String> {
        let now = Instant::from_micros(now_us);
        self.now = now;
        let mut busy = self.wire.rx(now);
        while let Some(ev) = self.wire.client.poll_event() {
            busy = true;
            match ev {
                Event::Connected(h) => self.client_send(h)?,
                Event::Readable(h) | Event::PeerClosed(h) => self.client_read(h)?,
                Event::Writable(_) | Event::Closed(_, CloseReason::Normal) => {}
                other => return Err(format!("client: unexpected {other:?}")),
            }
        }
        while let Some(ev) = self.wire.server.poll_event() {
            busy = true;
            match ev {
                Event::Accepted { listener, .. } => self.server_accept(listener)?,
                Event::Readable(h) | Event::PeerClosed(h) => self.serve(h)?,
                Event::Writable(_) | Event::Closed(_, CloseReason::Normal) => {}
                other => return Err(format!("server: unexpected {other:?}")),
            }
        }
        busy |= self.start(now)?;
        busy |= self.wire.tx(now);
        Ok(busy)
    }

    fn done(&self) -> u64 {
        self.gate.completed()
    }

    fn next_wakeup(&mut self, _now_us: u64) -> Option<u64> {
        self.wire.next_wakeup()
    }

    fn diagnostics(&self) -> String {
        self.wire.diagnostics()
    }
}

/// Connection table size for `concurrency` transactions in flight: as much again for the
/// connections still closing (FIN-WAIT-2 and TIME-WAIT on the client, LAST-ACK on the
/// server) after their transaction counted as done.
fn max_connections(concurrency: usize) -> usize {
    2 * concurrency + 4096
}

/// Resident bytes per connection end with `n` idle connections (see the parent module).
pub(crate) fn idle_bytes(n: usize, buffer: usize) -> Result<f64, String> {
    // Nothing closes, so the table needs room for the `n` connections and the listeners.
    let max = n + 64;
    let (link, clients, servers) = (Link::new(), Slots::new(max), Slots::new(max));
    let probe = IdleProbe::start()?;
    let mut d = ShortPair::build(
        link,
        clients,
        servers,
        Gate::new(n, n as u64),
        max,
        buffer,
        false,
    )?;
    let bytes = probe
        .finish(&mut d, n)
        .map_err(|e| format!("mtcp-rs idle: {e}"))?;
    d.warn_on_anomalies();
    Ok(bytes)
}

/// One connection, the client sending as fast as it can, the server draining and checking.
pub(crate) struct BulkPair {
    wire: Wire,
    listener: Handle,
    tx: Option<Handle>,
    rx: Option<Handle>,
    sent: u64,
    received: u64,
    buf: Vec<u8>,
}

impl BulkPair {
    /// Both endpoints with [`BULK_BUFFER`] socket buffers; the server listens.
    pub(crate) fn new() -> Result<BulkPair, String> {
        let tcp = TcpConfig {
            send_buffer: BULK_BUFFER,
            recv_buffer: BULK_BUFFER,
            ..Default::default()
        };
        let client = endpoint(
            CLIENT_MAC,
            CLIENT_IP,
            (SERVER_IP, SERVER_MAC),
            tcp.clone(),
            16,
            16,
            1,
        )?;
        let mut server = endpoint(
            SERVER_MAC,
            SERVER_IP,
            (CLIENT_IP, CLIENT_MAC),
            tcp,
            16,
            16,
            2,
        )?;
        let listener = server
            .listen(SERVER_PORT_BASE, 1)
            .map_err(|e| format!("listen: {e}"))?;
        Ok(BulkPair {
            wire: Wire::new(client, server, Link::new()),
            listener,
            tx: None,
            rx: None,
            sent: 0,
            received: 0,
            buf: vec![0; BULK_CHUNK],
        })
    }

    /// Prints a note if the endpoints counted anything unexpected.
    pub(crate) fn warn_on_anomalies(&self) {
        self.wire.warn_on_anomalies();
    }

    fn fill(&mut self, h: Handle) -> Result<(), String> {
        loop {
            match self.wire.client.send(h, bulk_bytes(self.sent)) {
                Ok(0) | Err(SocketError::WouldBlock) => return Ok(()),
                Ok(n) => self.sent += n as u64,
                Err(e) => return Err(err("bulk send", h, e)),
            }
        }
    }

    fn drain(&mut self, h: Handle) -> Result<(), String> {
        loop {
            match self.wire.server.recv(h, &mut self.buf) {
                Ok(0) => return Err("bulk receiver saw EOF".into()),
                Ok(n) => {
                    check_bulk(self.received, &self.buf[..n])?;
                    self.received += n as u64;
                }
                Err(SocketError::WouldBlock) => return Ok(()),
                Err(e) => return Err(err("bulk recv", h, e)),
            }
        }
    }
}

impl Driver for BulkPair {
    fn step(&mut self, now_us: u64) -> Result<bool, String> {
        let now = Instant::from_micros(now_us);
        let mut busy = false;
        if self.tx.is_none() {
            let remote = SocketAddrV4::new(SERVER_IP, SERVER_PORT_BASE);
            let h = self
                .wire
                .client
                .connect(now, remote)
                .map_err(|e| format!("connect to {remote}: {e}"))?;
            self.tx = Some(h);
            busy = true;
        }
        busy |= self.wire.rx(now);
        while let Some(ev) = self.wire.client.poll_event() {
            busy = true;
            match ev {
                Event::Connected(h) | Event::Writable(h) if Some(h) == self.tx => self.fill(h)?,
                Event::Readable(_) => {}
                other => return Err(format!("bulk client: unexpected {other:?}")),
            }
        }
        while let Some(ev) = self.wire.server.poll_event() {
            busy = true;
            match ev {
                Event::Accepted { listener, .. } if listener == self.listener => {
                    match self.wire.server.accept(listener) {
                        Ok(h) => {
                            self.rx = Some(h);
                            self.drain(h)?;
                        }
                        Err(SocketError::WouldBlock) => {}
                        Err(e) => return Err(err("accept", listener, e)),
                    }
                }
                Event::Readable(h) if Some(h) == self.rx => self.drain(h)?,
                Event::Writable(_) => {}
                other => return Err(format!("bulk server: unexpected {other:?}")),
            }
        }
        busy |= self.wire.tx(now);
        Ok(busy)
    }

    fn done(&self) -> u64 {
        self.received
    }

    fn next_wakeup(&mut self, _now_us: u64) -> Option<u64> {
        self.wire.next_wakeup()
    }

    fn diagnostics(&self) -> String {
        format!(
            "sent {}, received {}; {}",
            self.sent,
            self.received,
            self.wire.diagnostics()
        )
    }
}
