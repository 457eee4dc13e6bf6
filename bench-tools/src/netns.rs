//! Network namespaces and veth pairs for root-only tests and benchmarks.
//!
//! [`Namespaces`] creates uniquely named namespaces (`mtcp-<tag>-<pid>-<n>`) with `ip netns
//! add`, joins them with veth pairs, and deletes them all when dropped — also when a test
//! panics (the guard's `Drop` runs while unwinding). Namespaces left behind by a process that
//! was killed are removed by the next [`Namespaces::new`] once their process is gone.
//!
//! Every namespace starts with IPv6 disabled and no addresses, so the kernel sends nothing on
//! its own (no router solicitations, no MLD, no answers to our peers): the frames on a veth
//! are exactly the ones a test sends. The stack-side end of a veth carries no IPv4 address;
//! [`Namespaces::add_address`] only accepts 10.0.0.0/8 and 198.18.0.0/15, so nothing here
//! can route traffic anywhere else.
//!
//! A network namespace is a per-thread property: [`enter`] moves the calling thread (and
//! only it) into a namespace until its guard drops, and [`spawn_in`] runs a closure on a new
//! thread inside one, so a test can put its sender in one namespace and its receiver in
//! another.
//!
//! ```no_run
//! use bench_tools::netns::{self, Namespaces};
//! if netns::skip_unless_root("my test") {
//!     return;
//! }
//! let mut lab = Namespaces::new("demo");
//! let pair = lab.veth_pair("demo-a", "demo-b").unwrap();
//! let rx = netns::spawn_in(&pair.ns_b, || { /* open "afpacket:demo-b" here */ });
//! rx.join().unwrap().unwrap();
//! // `lab` drops here: both namespaces (and the veth) are gone.
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

/// True when the process runs as root (network namespaces and `CAP_NET_RAW` need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The message a root-only test prints when it skips.
pub fn skip_message(what: &str) -> String {
    format!("skipped: needs root (network namespaces, veth pairs, CAP_NET_RAW): {what}")
}

/// Prints [`skip_message`] and returns true when not root; a root-only test starts with
/// `if netns::skip_unless_root("name") { return; }`.
pub fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("{}", skip_message(what));
    true
}

const PREFIX: &str = "mtcp-";
const NETNS_DIR: &str = "/var/run/netns";
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command; its stdout on success, an error with the command line and its stderr
/// otherwise.
fn run<I, S>(program: &str, args: I) -> io::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (install iproute2)"
        } else {
            ""
        };
        io::Error::new(e.kind(), format!("{line}: {e}{hint}"))
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{line} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Both ends of a veth pair, each in its own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    /// Namespace of the first end.
    pub ns_a: String,
    /// Interface name of the first end (inside `ns_a`).
    pub dev_a: String,
    /// Namespace of the second end.
    pub ns_b: String,
    /// Interface name of the second end (inside `ns_b`).
    pub dev_b: String,
}

/// Uniquely named network namespaces, deleted on drop.
#[derive(Debug)]
pub struct Namespaces {
    tag: String,
    names: Vec<String>,
}

impl Namespaces {
    /// A guard for namespaces named `mtcp-<tag>-<pid>-<n>`; none is created yet. Removes
    /// `mtcp-*` namespaces whose creating process no longer exists.
    pub fn new(tag: &str) -> Namespaces {
        remove_stale();
        Namespaces {
            tag: tag.to_string(),
            names: Vec::new(),
        }
    }

    /// Names of the namespaces created so far.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Creates a new namespace with `lo` up and IPv6 off; returns its name.
    pub fn add(&mut self) -> io::Result<String> {
        let name = format!(
            "{PREFIX}{}-{}-{}",
            self.tag,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", ["netns", "add", &name])?;
        self.names.push(name.clone());
        run("ip", ["-n", &name, "link", "set", "lo", "up"])?;
        // Devices created later inherit `default`; `all` covers the existing ones.
        for key in ["all", "default"] {
            set_sysctl(&name, &format!("net/ipv6/conf/{key}/disable_ipv6"), "1")?;
        }
        Ok(name)
    }

    /// Creates a veth pair with end `dev_a` in namespace `ns_a` and end `dev_b` in `ns_b`
    /// (both created by this guard), with both ends up and no addresses.
    pub fn veth(&self, ns_a: &str, dev_a: &str, ns_b: &str, dev_b: &str) -> io::Result<VethPair> {
        for ns in [ns_a, ns_b] {
            if !self.names.iter().any(|n| n == ns) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("namespace {ns} was not created by this guard"),
                ));
            }
        }
        run(
            "ip",
            [
                "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b,
                "netns", ns_b,
            ],
        )?;
        for (ns, dev) in [(ns_a, dev_a), (ns_b, dev_b)] {
            set_sysctl(ns, &format!("net/ipv6/conf/{dev}/disable_ipv6"), "1")?;
            run("ip", ["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(VethPair {
            ns_a: ns_a.to_string(),
            dev_a: dev_a.to_string(),
            ns_b: ns_b.to_string(),
            dev_b: dev_b.to_string(),
        })
    }

    /// Two new namespaces joined by a veth pair `dev_a` ↔ `dev_b` (names of at most 15
    /// bytes; they only need to be unique inside their namespace).
    pub fn veth_pair(&mut self, dev_a: &str, dev_b: &str) -> io::Result<VethPair> {
        let a = self.add()?;
        let b = self.add()?;
        self.veth(&a, dev_a, &b, dev_b)
    }

    /// Runs `program args…` inside namespace `ns` (`ip netns exec`); returns its stdout.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        run("ip", all)
    }

    /// Turns off checksum offload, TSO and GSO on `dev` in `ns`, like `ethtool -K dev tx
    /// off tso off gso off` (which is used when installed; otherwise the same settings go
    /// through the `SIOCETHTOOL` ioctl). Needed on the kernel-side end of a veth whose peer
    /// is our stack, or frames arrive unfinished (partial checksums, GSO super-frames).
    pub fn disable_offloads(&self, ns: &str, dev: &str) -> io::Result<()> {
        if find_in_path("ethtool") {
            self.exec(
                ns,
                "ethtool",
                &["-K", dev, "tx", "off", "tso", "off", "gso", "off"],
            )
            .map(drop)
        } else {
            let dev = dev.to_string();
            spawn_in(ns, move || ethtool::disable_offloads(&dev))
                .join()
                .map_err(|_| io::Error::other("offload thread panicked"))??
        }
    }

    /// Makes `dev` in `ns` receive like a NIC whose queue interrupt is steered to core `cpu`:
    /// GRO on, which puts veth in NAPI mode, NAPI in a kernel thread
    /// (`/sys/class/net/DEV/threaded`), and that thread pinned to `cpu`. The kernel's receive
    /// work then runs on the receiving core instead of inside the sender's system call
    /// (veth's default).
    pub fn receive_like_a_nic(&self, ns: &str, dev: &str, cpu: usize) -> io::Result<()> {
        if find_in_path("ethtool") {
            self.exec(ns, "ethtool", &["-K", dev, "gro", "on"])?;
        } else {
            let d = dev.to_string();
            spawn_in(ns, move || ethtool::value(&d, ethtool::SGRO, 1).map(drop))
                .join()
                .map_err(|_| io::Error::other("ethtool thread panicked"))???;
        }
        // `ip netns exec` mounts the namespace's own /sys, where DEV is visible.
        self.exec(
            ns,
            "sh",
            &["-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")],
        )?;
        // The thread is called `napi/DEV-ID`.
        let prefix = format!("napi/{dev}-");
        let mut pinned = 0;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.starts_with(&prefix) {
                // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: callers pass a core number below CPU_SETSIZE.
                unsafe { libc::CPU_SET(cpu, &mut set) };
                // SAFETY: `set` is a valid cpu_set_t of the given size; `pid` is a thread id.
                let r = unsafe {
                    libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
                };
                if r == -1 {
                    return Err(io::Error::last_os_error());
                }
                pinned += 1;
            }
        }
        if pinned == 0 {
            return Err(io::Error::other(format!("no NAPI thread {prefix}* found")));
        }
        Ok(())
    }

    /// Gives `dev` in `ns` to a user-level stack the way netmap gives it a NIC: the kernel's
    /// own receive path stops right after the packet taps. An nftables `netdev` ingress chain
    /// with policy drop on `dev` (table `mtcp_user_stack`): AF_PACKET sockets bound with
    /// `ETH_P_ALL`, as psio's are, still get every frame (the taps run before the ingress
    /// hook), while the kernel's IPv4 stack, which would route-look-up and drop each frame
    /// for an address it does not have, never sees them. Needs `nft` (Debian `nftables`).
    pub fn reserve_for_user_stack(&self, ns: &str, dev: &str) -> io::Result<()> {
        let rules = format!(
            "table netdev mtcp_user_stack {{\n  chain ingress_{dev} {{\n    \
             type filter hook ingress device \"{dev}\" priority 0; policy drop;\n  }}\n}}\n"
        );
        let path =
            std::env::temp_dir().join(format!("mtcp-nft-{}-{ns}-{dev}.nft", std::process::id()));
        std::fs::write(&path, rules)?;
        let r = self.exec(ns, "nft", &["-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        r.map(drop)
    }

    /// Sets a per-namespace sysctl inside `ns`, like `sysctl -w` run there: `key` is the path
    /// under `/proc/sys` (`net/ipv4/tcp_sack`), `value` what to write (`"0"`,
    /// `"4096 16384 16384"`). Unlike [`Namespaces::add`]'s own settings, a key that does not
    /// exist is an error here.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> io::Result<()> {
        if !self.names.iter().any(|n| n == ns) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("namespace {ns} was not created by this guard"),
            ));
        }
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        spawn_in(ns, move || {
            std::fs::write(&path, &value)
                .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {path}: {e}")))
        })
        .join()
        .map_err(|_| io::Error::other("sysctl thread panicked"))??
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> io::Result<[u8; 6]> {
        let out = run("ip", ["-n", ns, "-o", "link", "show", "dev", dev])?;
        let text = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| io::Error::other(format!("no link/ether in {out:?}")))?;
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for b in &mut mac {
            *b = parts
                .next()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| io::Error::other(format!("bad MAC {text:?}")))?;
        }
        Ok(mac)
    }

    /// Adds an IPv4 address (`a.b.c.d/len`) to `dev` in `ns`. Only 10.0.0.0/8 and
    /// 198.18.0.0/15 are accepted: test traffic must never be routable elsewhere. Never use
    /// this on the veth end a user-level stack drives (the kernel would answer its peers).
    pub fn add_address(&self, ns: &str, dev: &str, cidr: &str) -> io::Result<()> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{cidr}: only 10.0.0.0/8 and 198.18.0.0/15 addresses are allowed here"),
            )
        };
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let o = addr.octets();
        let allowed = (o[0] == 10 && len >= 8) || (o[0] == 198 && o[1] & 0xfe == 18 && len >= 15);
        if !allowed || len > 32 {
            return Err(bad());
        }
        run("ip", ["-n", ns, "addr", "add", cidr, "dev", dev]).map(drop)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            if let Err(e) = run("ip", ["netns", "del", &name]) {
                eprintln!("netns: could not delete {name}: {e}");
            }
        }
    }
}

/// Deletes `mtcp-<tag>-<pid>-<n>` namespaces whose process is gone.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if n.parse::<u32>().is_err() {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", ["netns", "del", &name]);
        }
    }
}

fn find_in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Writes `/proc/sys/<key>` inside namespace `ns`. A key that does not exist (IPv6 compiled
/// out) is not an error.
fn set_sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    spawn_in(ns, move || match std::fs::write(&path, &value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}"))),
    })
    .join()
    .map_err(|_| io::Error::other("sysctl thread panicked"))??
}

/// The calling thread's stay in a network namespace; dropping it moves the thread back to
/// the namespace it came from. Not `Send`: it belongs to the thread that entered.
#[derive(Debug)]
pub struct Entered {
    original: OwnedFd,
    _not_send: PhantomData<*const ()>,
}

fn setns(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: `fd` is an open namespace descriptor; setns only changes the calling thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling thread (only it) into network namespace `ns` (a name under
/// `/var/run/netns`), until the returned guard drops. Sockets opened meanwhile stay in `ns`.
pub fn enter(ns: &str) -> io::Result<Entered> {
    let original = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(Path::new(NETNS_DIR).join(ns))
        .map_err(|e| io::Error::new(e.kind(), format!("opening namespace {ns}: {e}")))?;
    setns(&target).map_err(|e| io::Error::new(e.kind(), format!("setns into {ns}: {e}")))?;
    Ok(Entered {
        original: original.into(),
        _not_send: PhantomData,
    })
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original) {
            eprintln!("netns: could not return to the original namespace: {e}");
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`; the thread's result is `Err` if it
/// could not enter the namespace.
pub fn spawn_in<T, F>(ns: &str, f: F) -> JoinHandle<io::Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = ns.to_string();
    std::thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            let _inside = enter(&ns)?;
            Ok(f())
        })
        .expect("spawning a thread")
}

/// The `SIOCETHTOOL` ioctl, for machines without the ethtool program.
mod ethtool {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};

    const STXCSUM: u32 = 0x17;
    const STSO: u32 = 0x1f;
    const SGSO: u32 = 0x24;
    pub(super) const SGRO: u32 = 0x2c;
    #[cfg(test)]
    pub(super) const GTXCSUM: u32 = 0x16;
    #[cfg(test)]
    pub(super) const GTSO: u32 = 0x1e;
    #[cfg(test)]
    pub(super) const GGSO: u32 = 0x23;

    #[repr(C)]
    struct Value {
        cmd: u32,
        data: u32,
    }

    /// Runs one `ethtool_value` command on `dev` in the calling thread's namespace.
    pub(super) fn value(dev: &str, cmd: u32, data: u32) -> io::Result<u32> {
        if dev.len() >= libc::IFNAMSIZ || dev.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {dev:?}"),
            ));
        }
        let mut v = Value { cmd, data };
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut v as *mut Value).cast();
        // SAFETY: plain system call with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `ifr` holds a NUL-terminated name and points to `v`, both alive for the call.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SIOCETHTOOL as _,
                &mut ifr,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("SIOCETHTOOL {cmd:#x} on {dev}: {e}"),
            ));
        }
        Ok(v.data)
    }

    /// `ethtool -K dev tx off tso off gso off`.
    pub(super) fn disable_offloads(dev: &str) -> io::Result<()> {
        for cmd in [STXCSUM, STSO, SGSO] {
            value(dev, cmd, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_test_ranges_are_accepted_as_addresses() {
        let lab = Namespaces::new("addr");
        for bad in [
            "192.168.1.1/24",
            "8.8.8.8/32",
            "10.0.0.1/4",
            "198.20.0.1/16",
            "198.18.0.1/14",
            "x/8",
            "10.0.0.1",
        ] {
            let e = lab.add_address("nowhere", "nodev", bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn the_skip_message_says_why() {
        assert!(skip_message("x").starts_with("skipped: needs root"));
    }

    #[test]
    fn namespaces_veth_and_offloads_come_and_go() {
        if skip_unless_root("netns helper") {
            return;
        }
        let mut lab = Namespaces::new("selftest");
        let pair = lab.veth_pair("nst-a", "nst-b").unwrap();
        let names = lab.names().to_vec();
        assert_eq!(names.len(), 2);
        for n in &names {
            assert!(
                n.starts_with(&format!("mtcp-selftest-{}-", std::process::id())),
                "{n}"
            );
            assert!(Path::new(NETNS_DIR).join(n).exists());
        }
        // The veth ends are up, carry no IPv4 address, and differ in MAC.
        let show = lab
            .exec(&pair.ns_a, "ip", &["-o", "addr", "show", "dev", "nst-a"])
            .unwrap();
        assert!(!show.contains("inet "), "{show}");
        assert_ne!(
            lab.mac(&pair.ns_a, "nst-a").unwrap(),
            lab.mac(&pair.ns_b, "nst-b").unwrap()
        );
        // The ioctl path turns offloads off (read back the same way).
        let dev = pair.dev_b.clone();
        let got = spawn_in(&pair.ns_b, move || {
            ethtool::disable_offloads(&dev)?;
            let get = |c| ethtool::value(&dev, c, 0);
            Ok::<_, io::Error>([
                get(ethtool::GTXCSUM)?,
                get(ethtool::GTSO)?,
                get(ethtool::GGSO)?,
            ])
        })
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!(got, [0, 0, 0]);
        lab.disable_offloads(&pair.ns_a, &pair.dev_a).unwrap();
        // A thread entering a namespace sees its interface; the test thread does not.
        let devs = || std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        let inside = spawn_in(&pair.ns_a, devs).join().unwrap().unwrap();
        assert!(
            inside.contains("nst-a:") && !inside.contains("nst-b:"),
            "{inside}"
        );
        assert!(!devs().contains("nst-a:"));
        assert!(enter("mtcp-no-such-namespace").is_err());
        drop(lab);
        for n in &names {
            assert!(!Path::new(NETNS_DIR).join(n).exists(), "{n} left behind");
        }
    }

    #[test]
    fn namespaces_are_deleted_when_a_test_panics() {
        if skip_unless_root("netns cleanup on panic") {
            return;
        }
        let names = std::panic::catch_unwind(|| {
            let mut lab = Namespaces::new("panic");
            let name = lab.add().unwrap();
            std::panic::panic_any(name);
        })
        .unwrap_err();
        let name = names.downcast_ref::<String>().unwrap();
        assert!(
            !Path::new(NETNS_DIR).join(name).exists(),
            "{name} left behind"
        );
    }
}
