//! The smoltcp side of `mtcp-bench core`: two `Interface`s with their `SocketSet`s over the
//! in-memory link, and applications that look at every socket once per pass (smoltcp has no
//! readiness events).

use super::link::Link;
use super::{
    bulk_bytes, check_bulk, check_response, request, response_to, Driver, Gate, IdleProbe,
    BULK_BUFFER, BULK_CHUNK, MSG_LEN, SERVER_PORT_BASE,
};
use core::net::Ipv4Addr;
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp::{self, RecvError, State};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1a];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

/// First and last client port.
const FIRST_PORT: u16 = 1024;
const LAST_PORT: u16 = 65535;

/// One side: an interface and its sockets.
struct Side {
    iface: Interface,
    sockets: SocketSet<'static>,
}

impl Side {
    fn new(
        link: &mut Link,
        a: bool,
        mac: [u8; 6],
        ip: Ipv4Addr,
        seed: u64,
        sockets: usize,
    ) -> Side {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let iface = {
            let mut port = if a { link.port_a() } else { link.port_b() };
            let mut iface = Interface::new(config, &mut port, Instant::from_micros(0));
            iface.update_ip_addrs(|addrs| {
                addrs
                    .push(IpCidr::new(IpAddress::Ipv4(ip), 24))
                    .expect("room for one address");
            });
            iface
        };
        Side {
            iface,
            sockets: SocketSet::new(Vec::with_capacity(sockets)),
        }
    }

    fn add(&mut self, buffer: usize) -> SocketHandle {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; buffer]),
            tcp::SocketBuffer::new(vec![0u8; buffer]),
        );
        self.sockets.add(socket)
    }

    fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }
}

/// Both interfaces and the link between them.
struct Wire {
    link: Link,
    client: Side,
    server: Side,
    /// Passes whose client egress ended for lack of work (not because the link was full).
    client_drained: u64,
}

impl Wire {
    fn new(mut link: Link, client_sockets: usize, server_sockets: usize) -> Wire {
        let client = Side::new(&mut link, true, CLIENT_MAC, CLIENT_IP, 1, client_sockets);
        let server = Side::new(&mut link, false, SERVER_MAC, SERVER_IP, 2, server_sockets);
        Wire {
            link,
            client,
            server,
            client_drained: 0,
        }
    }

    /// Receive half of a pass: each side takes its input (`Interface::poll_maintenance` and
    /// `poll_ingress_single` until the link is drained). Returns whether a frame moved.
    fn rx(&mut self, now: Instant) -> bool {
        let pending = self.link.a_to_b.len() + self.link.b_to_a.len();
        let c = &mut self.client;
        c.iface.poll_maintenance(now);
        let mut port = self.link.port_a();
        while c.iface.poll_ingress_single(now, &mut port, &mut c.sockets)
            != PollIngressSingleResult::None
        {}
        let s = &mut self.server;
        s.iface.poll_maintenance(now);
        let mut port = self.link.port_b();
        while s.iface.poll_ingress_single(now, &mut port, &mut s.sockets)
            != PollIngressSingleResult::None
        {}
        pending != 0
    }

    /// Transmit half of a pass (after the applications ran): `poll_egress` on each side until
    /// it has nothing more. Returns whether a frame moved.
    fn tx(&mut self, now: Instant) -> bool {
        let before = self.link.frames();
        let c = &mut self.client;
        let mut port = self.link.port_a();
        while c.iface.poll_egress(now, &mut port, &mut c.sockets) != PollResult::None {}
        if port.has_room() {
            self.client_drained += 1;
        }
        let s = &mut self.server;
        let mut port = self.link.port_b();
        while s.iface.poll_egress(now, &mut port, &mut s.sockets) != PollResult::None {}
        self.link.frames() != before
    }

    fn next_wakeup(&mut self, now_us: u64) -> Option<u64> {
        let now = Instant::from_micros(now_us as i64);
        let c = &mut self.client;
        let a = c.iface.poll_at(now, &c.sockets);
        let s = &mut self.server;
        let b = s.iface.poll_at(now, &s.sockets);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|t| t.total_micros().max(0) as u64)
    }

    fn diagnostics(&self) -> String {
        format!(
            "link: {} + {} frames queued, {} sent",
            self.link.a_to_b.len(),
            self.link.b_to_a.len(),
            self.link.frames()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    /// Ready for `connect` (CLOSED or TIME-WAIT).
    Free,
    /// Connecting, or waiting for the response.
    Active,
    /// Closed by us; waiting for TIME-WAIT or CLOSED.
    Closing,
    /// In TIME-WAIT or CLOSED, seen while `Wire::client_drained` was `drain_mark`: reusable
    /// once a later client egress drained, which sent the last ACK. (Reused earlier, the
    /// socket would drop that ACK, leave the server's socket in LAST-ACK, and meet it again
    /// when the 4-tuple comes back: a RST for the new SYN.)
    Draining,
    /// Done without closing (idle measurement).
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPhase {
    Listening,
    Active,
    /// Closed by us after EOF; waiting for CLOSED to listen again.
    Closing,
    /// Responded, left open (idle measurement).
    Idle,
}

#[derive(Debug, Clone, Copy)]
struct ClientSock {
    h: SocketHandle,
    port: u32,
    local_port: u16,
    token: u64,
    sent: bool,
    got: u8,
    phase: Option<ClientPhase>,
    drain_mark: u64,
    resp: [u8; MSG_LEN],
}

#[derive(Debug, Clone, Copy)]
struct ServerSock {
    h: SocketHandle,
    port: u32,
    got: u8,
    phase: Option<ServerPhase>,
    req: [u8; MSG_LEN],
}

impl Default for ClientSock {
    fn default() -> Self {
        ClientSock {
            h: SocketHandle::default(),
            port: 0,
            local_port: 0,
            token: 0,
            sent: false,
            got: 0,
            phase: None,
            drain_mark: 0,
            resp: [0; MSG_LEN],
        }
    }
}

impl Default for ServerSock {
    fn default() -> Self {
        ServerSock {
            h: SocketHandle::default(),
            port: 0,
            got: 0,
            phase: None,
            req: [0; MSG_LEN],
        }
    }
}

/// Client ports per server port: a cursor over 1024..=65535 and the ports in use.
struct PortPool {
    next: Vec<u16>,
    in_use: Vec<Vec<bool>>,
}

impl PortPool {
    fn new(server_ports: usize) -> PortPool {
        PortPool {
            next: vec![FIRST_PORT; server_ports],
            in_use: vec![vec![false; 65_536]; server_ports],
        }
    }

    fn acquire(&mut self, j: usize) -> Option<u16> {
        for _ in FIRST_PORT..=LAST_PORT {
            let p = self.next[j];
            self.next[j] = if p == LAST_PORT { FIRST_PORT } else { p + 1 };
            if !self.in_use[j][usize::from(p)] {
                self.in_use[j][usize::from(p)] = true;
                return Some(p);
            }
        }
        None
    }

    fn release(&mut self, j: usize, p: u16) {
        self.in_use[j][usize::from(p)] = false;
    }
}

/// Short transactions (or, with `close` false, connections left open after one exchange).
pub(crate) struct ShortPair {
    wire: Wire,
    gate: Gate,
    clients: Vec<ClientSock>,
    servers: Vec<ServerSock>,
    /// Per server port, the client sockets ready for `connect`.
    free: Vec<Vec<usize>>,
    ports: PortPool,
    close: bool,
}

impl ShortPair {
    /// A closed loop of `concurrency` transactions, `buffer` bytes per socket buffer.
    pub(crate) fn new(concurrency: usize, buffer: usize) -> Result<ShortPair, String> {
        ShortPair::build(
            Link::new(),
            App::new(concurrency),
            Gate::new(concurrency, u64::MAX),
            buffer,
            true,
        )
    }

    fn build(
        link: Link,
        app: App,
        gate: Gate,
        buffer: usize,
        close: bool,
    ) -> Result<ShortPair, String> {
        let App {
            mut clients,
            mut servers,
            mut free,
            ports,
        } = app;
        let n = clients.len();
        let mut wire = Wire::new(link, n, n);
        let (mut i, mut k) = (0, 0);
        for (j, free_j) in free.iter_mut().enumerate() {
            let port = SERVER_PORT_BASE + j as u16;
            for _ in 0..gate.cap(j) {
                let h = wire.client.add(buffer);
                clients[i] = ClientSock {
                    h,
                    port: j as u32,
                    phase: Some(ClientPhase::Free),
                    ..Default::default()
                };
                free_j.push(i);
                i += 1;
                let h = wire.server.add(buffer);
                wire.server
                    .socket(h)
                    .listen(port)
                    .map_err(|e| format!("smoltcp listen on {port}: {e}"))?;
                servers[k] = ServerSock {
                    h,
                    port: j as u32,
                    phase: Some(ServerPhase::Listening),
                    ..Default::default()
                };
                k += 1;
            }
        }
        Ok(ShortPair {
            wire,
            gate,
            clients,
            servers,
            free,
            ports,
            close,
        })
    }

    fn clients_pass(&mut self) -> Result<bool, String> {
        let mut acted = false;
        for (i, c) in self.clients.iter_mut().enumerate() {
            let phase = c.phase.expect("every client slot is set up");
            if matches!(phase, ClientPhase::Free | ClientPhase::Idle) {
                continue;
            }
            let s = self.wire.client.socket(c.h);
            if phase == ClientPhase::Closing {
                if !s.is_open() {
                    c.phase = Some(ClientPhase::Draining);
                    c.drain_mark = self.wire.client_drained;
                    acted = true;
                }
                continue;
            }
            if phase == ClientPhase::Draining {
                if self.wire.client_drained > c.drain_mark {
                    c.phase = Some(ClientPhase::Free);
                    self.ports.release(c.port as usize, c.local_port);
                    self.free[c.port as usize].push(i);
                    acted = true;
                }
                continue;
            }
            match s.state() {
                State::SynSent => continue,
                State::Closed | State::TimeWait | State::Listen => {
                    return Err(format!(
                        "smoltcp client of transaction {} found its socket {}",
                        c.token,
                        s.state()
                    ))
                }
                _ => {}
            }
            if !c.sent && s.can_send() {
                let req = request(c.token);
                match s.send_slice(&req) {
                    Ok(MSG_LEN) => c.sent = true,
                    other => return Err(format!("smoltcp client send: {other:?}")),
                }
                acted = true;
            }
            if !c.sent {
                continue;
            }
            match s.recv_slice(&mut c.resp[usize::from(c.got)..]) {
                Ok(0) => continue,
                Ok(n) => c.got += n as u8,
                Err(RecvError::Finished) => {
                    return Err(format!(
                        "smoltcp client of transaction {}: EOF after {} response bytes",
                        c.token, c.got
                    ))
                }
                Err(e) => return Err(format!("smoltcp client recv: {e}")),
            }
            acted = true;
            if usize::from(c.got) == MSG_LEN {
                check_response(c.token, &c.resp)?;
                if self.close {
                    s.close();
                    c.phase = Some(ClientPhase::Closing);
                } else {
                    c.phase = Some(ClientPhase::Idle);
                }
                self.gate.client_done(c.port as usize);
            }
        }
        Ok(acted)
    }

    fn servers_pass(&mut self) -> Result<bool, String> {
        let mut acted = false;
        for c in self.servers.iter_mut() {
            let s = self.wire.server.socket(c.h);
            match c.phase.expect("every server slot is set up") {
                ServerPhase::Idle => {}
                ServerPhase::Listening => {
                    if s.state() != State::Listen {
                        c.phase = Some(ServerPhase::Active);
                        acted = true;
                    }
                }
                ServerPhase::Active => match s.state() {
                    State::SynReceived => {}
                    State::Closed | State::Listen | State::TimeWait => {
                        return Err(format!("smoltcp server socket found {}", s.state()))
                    }
                    _ if usize::from(c.got) < MSG_LEN => {
                        match s.recv_slice(&mut c.req[usize::from(c.got)..]) {
                            Ok(0) => continue,
                            Ok(n) => c.got += n as u8,
                            Err(RecvError::Finished) => {
                                return Err(format!(
                                    "smoltcp server: EOF after {} request bytes",
                                    c.got
                                ))
                            }
                            Err(e) => return Err(format!("smoltcp server recv: {e}")),
                        }
                        acted = true;
                        if usize::from(c.got) == MSG_LEN {
                            let resp = response_to(&c.req)?;
                            match s.send_slice(&resp) {
                                Ok(MSG_LEN) => {}
                                other => return Err(format!("smoltcp server send: {other:?}")),
                            }
                            if !self.close {
                                c.phase = Some(ServerPhase::Idle);
                                self.gate.server_done(c.port as usize);
                            }
                        }
                    }
                    _ => {
                        let mut extra = [0u8; 1];
                        match s.recv_slice(&mut extra) {
                            Ok(0) => {}
                            Ok(_) => return Err("smoltcp server: bytes after the request".into()),
                            Err(RecvError::Finished) => {
                                s.close();
                                c.phase = Some(ServerPhase::Closing);
                                acted = true;
                            }
                            Err(e) => return Err(format!("smoltcp server recv: {e}")),
                        }
                    }
                },
                ServerPhase::Closing => {
                    if s.state() == State::Closed {
                        let port = SERVER_PORT_BASE + c.port as u16;
                        s.listen(port)
                            .map_err(|e| format!("smoltcp listen on {port}: {e}"))?;
                        c.phase = Some(ServerPhase::Listening);
                        c.got = 0;
                        self.gate.server_done(c.port as usize);
                        acted = true;
                    }
                }
            }
        }
        Ok(acted)
    }

    fn start(&mut self) -> Result<bool, String> {
        let mut acted = false;
        for j in 0..self.gate.ports() {
            while self.gate.may_start(j) {
                let Some(i) = self.free[j].pop() else {
                    break;
                };
                let local_port = self
                    .ports
                    .acquire(j)
                    .ok_or("smoltcp client: no free local port")?;
                let token = self.gate.start(j);
                let c = &mut self.clients[i];
                *c = ClientSock {
                    h: c.h,
                    port: j as u32,
                    local_port,
                    token,
                    phase: Some(ClientPhase::Active),
                    ..Default::default()
                };
                let remote = (IpAddress::Ipv4(SERVER_IP), SERVER_PORT_BASE + j as u16);
                let w = &mut self.wire.client;
                w.sockets
                    .get_mut::<tcp::Socket>(c.h)
                    .connect(w.iface.context(), remote, local_port)
                    .map_err(|e| format!("smoltcp connect: {e}"))?;
                acted = true;
            }
        }
        Ok(acted)
    }
}

/// Application tables, allocated (and written) before the stacks.
struct App {
    clients: Vec<ClientSock>,
    servers: Vec<ServerSock>,
    free: Vec<Vec<usize>>,
    ports: PortPool,
}

impl App {
    fn new(concurrency: usize) -> App {
        let k = super::ports_for(concurrency);
        App {
            clients: vec![ClientSock::default(); concurrency],
            servers: vec![ServerSock::default(); concurrency],
            free: (0..k)
                .map(|_| Vec::with_capacity(concurrency / k + 1))
                .collect(),
            ports: PortPool::new(k),
        }
    }
}

impl Driver for ShortPair {
    fn step(&mut self, now_us: u64) -> Result<bool, String> {
        let now = Instant::from_micros(now_us as i64);
        let mut busy = self.wire.rx(now);
        busy |= self.clients_pass()?;
        busy |= self.servers_pass()?;
        busy |= self.start()?;
        busy |= self.wire.tx(now);
        Ok(busy)
    }

    fn done(&self) -> u64 {
        self.gate.completed()
    }

    fn next_wakeup(&mut self, now_us: u64) -> Option<u64> {
        self.wire.next_wakeup(now_us)
    }

    fn diagnostics(&self) -> String {
        self.wire.diagnostics()
    }
}

/// Resident bytes per connection end with `n` idle connections (see the parent module).
pub(crate) fn idle_bytes(n: usize, buffer: usize) -> Result<f64, String> {
    let (link, app) = (Link::new(), App::new(n));
    let probe = IdleProbe::start()?;
    let mut d = ShortPair::build(link, app, Gate::new(n, n as u64), buffer, false)?;
    probe
        .finish(&mut d, n)
        .map_err(|e| format!("smoltcp idle: {e}"))
}

/// One connection, the client sending as fast as it can, the server draining and checking.
pub(crate) struct BulkPair {
    wire: Wire,
    tx: SocketHandle,
    rx: SocketHandle,
    connected: bool,
    sent: u64,
    received: u64,
    buf: Vec<u8>,
}

impl BulkPair {
    /// Both interfaces with one socket each, [`BULK_BUFFER`] buffers; the server listens.
    pub(crate) fn new() -> Result<BulkPair, String> {
        let mut wire = Wire::new(Link::new(), 1, 1);
        let tx = wire.client.add(BULK_BUFFER);
        let rx = wire.server.add(BULK_BUFFER);
        wire.server
            .socket(rx)
            .listen(SERVER_PORT_BASE)
            .map_err(|e| format!("smoltcp listen: {e}"))?;
        Ok(BulkPair {
            wire,
            tx,
            rx,
            connected: false,
            sent: 0,
            received: 0,
            buf: vec![0; BULK_CHUNK],
        })
    }
}

impl Driver for BulkPair {
    fn step(&mut self, now_us: u64) -> Result<bool, String> {
        let mut busy = false;
        if !self.connected {
            let w = &mut self.wire.client;
            w.sockets
                .get_mut::<tcp::Socket>(self.tx)
                .connect(
                    w.iface.context(),
                    (IpAddress::Ipv4(SERVER_IP), SERVER_PORT_BASE),
                    FIRST_PORT,
                )
                .map_err(|e| format!("smoltcp connect: {e}"))?;
            self.connected = true;
            busy = true;
        }
        let now = Instant::from_micros(now_us as i64);
        busy |= self.wire.rx(now);
        let s = self.wire.client.socket(self.tx);
        while s.can_send() {
            match s.send_slice(bulk_bytes(self.sent)) {
                Ok(0) => break,
                Ok(n) => self.sent += n as u64,
                Err(e) => return Err(format!("smoltcp bulk send: {e}")),
            }
            busy = true;
        }
        let r = self.wire.server.socket(self.rx);
        while r.can_recv() {
            match r.recv_slice(&mut self.buf) {
                Ok(n) => {
                    check_bulk(self.received, &self.buf[..n])?;
                    self.received += n as u64;
                }
                Err(e) => return Err(format!("smoltcp bulk recv: {e}")),
            }
            busy = true;
        }
        busy |= self.wire.tx(now);
        Ok(busy)
    }

    fn done(&self) -> u64 {
        self.received
    }

    fn next_wakeup(&mut self, now_us: u64) -> Option<u64> {
        self.wire.next_wakeup(now_us)
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
