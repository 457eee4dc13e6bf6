//! Rust-idiomatic sockets on top of the same calls: [`TcpListener`] and [`TcpStream`], with
//! `std::io::Read`/`Write`. Like every socket here they are non-blocking: an operation that
//! cannot complete returns `io::ErrorKind::WouldBlock`, and the application waits with
//! [`Context::epoll_wait`] on the descriptor ([`TcpStream::fd`]).
//!
//! The objects of one core share its [`Context`] through a [`SharedContext`] (the context
//! belongs to one application thread, so an `Rc<RefCell<_>>` is all it takes).
//!
//! ```
//! # use mtcp_api::{net::{SharedContext, TcpListener}, Config, Context};
//! # use std::{cell::RefCell, rc::Rc};
//! # let config = Config::from_toml_str("port = \"shm:net-doc\"\npin_threads = false", "doc")?;
//! let ctx: SharedContext = Rc::new(RefCell::new(Context::run_to_completion(&config, 0)?));
//! let listener = TcpListener::bind(&ctx, "0.0.0.0:8080".parse()?)?;
//! assert_eq!(listener.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::context::{Context, Shutdown};
use crate::proto::Fd;
use crate::SockOpt;
use core::net::SocketAddrV4;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

/// A core's context, shared by the sockets of its application thread.
pub type SharedContext = Rc<RefCell<Context>>;

/// A listening socket.
#[derive(Debug)]
pub struct TcpListener {
    ctx: SharedContext,
    fd: Fd,
}

impl TcpListener {
    /// Binds to `addr` (our address or 0.0.0.0) and listens with a backlog of 128.
    pub fn bind(ctx: &SharedContext, addr: SocketAddrV4) -> io::Result<TcpListener> {
        let mut c = ctx.borrow_mut();
        let fd = c.socket()?;
        let r = c.bind(fd, addr).and_then(|()| c.listen(fd, 128));
        if let Err(e) = r {
            let _ = c.close(fd);
            return Err(e.into());
        }
        Ok(TcpListener {
            ctx: ctx.clone(),
            fd,
        })
    }

    /// A connection waiting to be accepted, or `WouldBlock`.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        let (fd, peer) = self.ctx.borrow_mut().accept(self.fd)?;
        Ok((
            TcpStream {
                ctx: self.ctx.clone(),
                fd,
            },
            peer,
        ))
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.ctx.borrow().local_addr(self.fd)?)
    }

    /// The descriptor, to register with epoll.
    pub fn fd(&self) -> Fd {
        self.fd
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let _ = self.ctx.borrow_mut().close(self.fd);
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    ctx: SharedContext,
    fd: Fd,
}

impl TcpStream {
    /// Starts connecting to `addr` and returns at once: the stream becomes writable when
    /// connected ([`take_error`](Self::take_error) says why it failed otherwise).
    pub fn connect(ctx: &SharedContext, addr: SocketAddrV4) -> io::Result<TcpStream> {
        let mut c = ctx.borrow_mut();
        let fd = c.socket()?;
        match c.connect(fd, addr) {
            Ok(()) | Err(crate::Error::InProgress) => Ok(TcpStream {
                ctx: ctx.clone(),
                fd,
            }),
            Err(e) => {
                let _ = c.close(fd);
                Err(e.into())
            }
        }
    }

    /// The descriptor, to register with epoll.
    pub fn fd(&self) -> Fd {
        self.fd
    }

    /// The peer's address (`NotConnected` until connected).
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.ctx.borrow().peer_addr(self.fd)?)
    }

    /// Our address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.ctx.borrow().local_addr(self.fd)?)
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        Ok(self
            .ctx
            .borrow_mut()
            .setsockopt(self.fd, SockOpt::NoDelay(on))?)
    }

    /// `SO_ERROR`: the pending error, cleared by reading it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.ctx.borrow_mut().take_error(self.fd)?.map(Into::into))
    }

    /// Shuts down reading, writing or both.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        let how = match how {
            std::net::Shutdown::Read => Shutdown::Read,
            std::net::Shutdown::Write => Shutdown::Write,
            std::net::Shutdown::Both => Shutdown::Both,
        };
        Ok(self.ctx.borrow_mut().shutdown(self.fd, how)?)
    }

    /// Reads without consuming (`MSG_PEEK`).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.ctx.borrow_mut().recv(self.fd, buf, true)?)
    }
}

impl io::Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.ctx.borrow_mut().read(self.fd, buf)?)
    }
}

impl io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl io::Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.ctx.borrow_mut().write(self.fd, buf)?)
    }

    /// Bytes written are already the stack's: nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let _ = self.ctx.borrow_mut().close(self.fd);
    }
}
