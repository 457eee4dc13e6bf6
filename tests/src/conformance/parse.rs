//! The packetdrill script format, as far as the conformance corpus uses it.
//!
//! A script is a list of lines: `--name=value` options, `#ifdef NAME`/`#else`/`#endif`
//! sections, and events. An event starts with a time (`0.1` absolute, `+0.1` relative to the
//! previous event, `*` any time, `0.1~0.2` a window, `0.1...0.2` a blocking system call that
//! starts at the first time and returns at the second) followed by one of:
//! - a TCP segment, inbound `<` or outbound `>`:
//!   `< S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,eol,eol>`;
//! - an ICMP message: `< icmp unreachable port_unreachable [0:0(0)]`;
//! - a system call with its expected result: `connect(3, ..., ...) = -1 EINPROGRESS (...)`;
//! - a shell command in backticks, or a Python block `%{ ... }%` (both may span lines).
//!
//! `//` starts a comment. Whatever this parser does not understand is an error naming the
//! line: the runner reports the script as not applicable, never panics.

use std::collections::BTreeSet;
use std::fmt;

/// A parsed script.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// `--name=value` options (value `None` for a bare `--name`), in order.
    pub options: Vec<(String, Option<String>)>,
    /// The events, in order, with absolute times resolved.
    pub events: Vec<Event>,
}

impl Script {
    /// The value of option `--name`, if given (the last one wins).
    pub fn option(&self, name: &str) -> Option<Option<&str>> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// When an event happens, resolved to absolute microseconds from the script's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At `start` (or within `start..=end` for a window); for a system call, `end` is when
    /// a blocking call returns.
    At {
        /// Start, µs.
        start: i64,
        /// End of a window or of a blocking call, µs.
        end: Option<i64>,
        /// `a...b`: the call blocks from `start` until `end`.
        blocking: bool,
    },
    /// `*`: any time after the previous event.
    Any,
}

/// One event of a script.
#[derive(Debug, Clone)]
pub struct Event {
    /// 1-based line number where the event starts.
    pub line: usize,
    /// When it happens.
    pub when: When,
    /// What happens.
    pub kind: EventKind,
}

/// The kinds of events.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// A TCP segment.
    Tcp(TcpSpec),
    /// An ICMP message.
    Icmp(IcmpSpec),
    /// A system call.
    Syscall(Syscall),
    /// A shell command (between backticks).
    Shell(String),
    /// A Python block (between `%{` and `}%`).
    Python(String),
}

/// Direction of a packet line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `<`: the script sends it to the stack.
    In,
    /// `>`: the stack must send it.
    Out,
}

/// A TCP option as a script writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOpt {
    /// `eol`.
    Eol,
    /// `nop`.
    Nop,
    /// `mss N`.
    Mss(u16),
    /// `wscale N`.
    Wscale(u8),
    /// `sackOK`.
    SackOk,
    /// `sack a:b c:d ...`.
    Sack(Vec<(u32, u32)>),
    /// `TS val V ecr E`.
    Ts {
        /// TSval.
        val: u32,
        /// TSecr.
        ecr: u32,
    },
}

impl fmt::Display for TcpOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpOpt::Eol => write!(f, "eol"),
            TcpOpt::Nop => write!(f, "nop"),
            TcpOpt::Mss(m) => write!(f, "mss {m}"),
            TcpOpt::Wscale(w) => write!(f, "wscale {w}"),
            TcpOpt::SackOk => write!(f, "sackOK"),
            TcpOpt::Sack(b) => {
                write!(f, "sack")?;
                for (l, r) in b {
                    write!(f, " {l}:{r}")?;
                }
                Ok(())
            }
            TcpOpt::Ts { val, ecr } => write!(f, "TS val {val} ecr {ecr}"),
        }
    }
}

/// A TCP segment line.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// Direction.
    pub dir: Dir,
    /// Flag letters as written (`S`, `.`, `F`, `R`, `P`, `E`, `W`, `U`), sorted.
    pub flags: BTreeSet<char>,
    /// First sequence number (relative); `None` for `...` (any).
    pub seq: Option<u32>,
    /// Payload length.
    pub len: u32,
    /// `ack N` (relative).
    pub ack: Option<u32>,
    /// `win N`.
    pub win: Option<u32>,
    /// Options; `None` for `<...>` (not checked).
    pub options: Option<Vec<TcpOpt>>,
    /// `(tos 0x..)` / `(ttl N)` / `[ect0]` / `[noecn]` / ... written before the flags.
    pub ip_extras: Vec<String>,
}

impl TcpSpec {
    /// The flags as packetdrill prints them (`S.`, `F.`, `R`, ...).
    pub fn flags_string(&self) -> String {
        flags_to_string(&self.flags)
    }
}

/// Flags in packetdrill's order: `S F R P . E W U`... printed as letters, `.` for ACK.
pub fn flags_to_string(flags: &BTreeSet<char>) -> String {
    let mut s = String::new();
    for c in ['S', 'F', 'R', 'P', 'U', 'E', 'W', '.'] {
        if flags.contains(&c) {
            s.push(c);
        }
    }
    s
}

/// An ICMP line: `< icmp TYPE [CODE] [mtu N] [seq:end(len)]`.
#[derive(Debug, Clone)]
pub struct IcmpSpec {
    /// Direction.
    pub dir: Dir,
    /// `unreachable`, `time_exceeded`, ...
    pub kind: String,
    /// The code name, if any.
    pub code: Option<String>,
    /// `mtu N` (fragmentation needed).
    pub mtu: Option<u32>,
    /// The echoed TCP sequence number (relative to the stack's ISN), from `[seq:end(len)]`.
    pub seq: Option<u32>,
}

/// A system call line.
#[derive(Debug, Clone)]
pub struct Syscall {
    /// `socket`, `connect`, ...
    pub name: String,
    /// Its arguments.
    pub args: Vec<Expr>,
    /// The expected return value.
    pub ret: i64,
    /// The expected errno name, for `-1 EAGAIN (...)`.
    pub errno: Option<String>,
}

/// A system call argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `...`: anything (packetdrill fills in addresses and buffers).
    Ellipsis,
    /// A number.
    Int(i64),
    /// A symbol (`SOCK_STREAM`, `O_NONBLOCK`, `ECONNRESET`).
    Ident(String),
    /// `A | B | ...`.
    Or(Vec<Expr>),
    /// `[ ... ]`.
    List(Vec<Expr>),
    /// `{ ... }` (structures; kept only to report them).
    Struct(Vec<Expr>),
    /// `"..."`.
    Str(String),
}

/// A parse error: the line and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What was not understood.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Removes a `//` comment (not inside backticks or quotes).
fn strip_comment(line: &str) -> &str {
    let mut in_tick = false;
    let mut in_quote = false;
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'`' if !in_quote => in_tick = !in_tick,
            b'"' if !in_tick => in_quote = !in_quote,
            b'/' if !in_tick && !in_quote && b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// Parses a script; `defines` are the names `#ifdef` tests true (e.g. `STANDARD`).
pub fn parse(text: &str, defines: &[&str]) -> Result<Script, ParseError> {
    let mut script = Script::default();
    // #ifdef nesting: for each level, whether its lines are active.
    let mut active: Vec<bool> = Vec::new();
    let mut last_time: i64 = 0;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let raw = lines[i];
        i += 1;
        let trimmed = raw.trim();
        if let Some(rest) = trimmed.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next()) {
                (Some("ifdef"), Some(name)) => active.push(defines.contains(&name)),
                (Some("ifndef"), Some(name)) => active.push(!defines.contains(&name)),
                (Some("else"), None) => match active.last_mut() {
                    Some(a) => *a = !*a,
                    None => return err(lineno, "#else without #ifdef"),
                },
                (Some("endif"), None) => {
                    if active.pop().is_none() {
                        return err(lineno, "#endif without #ifdef");
                    }
                }
                _ => return err(lineno, format!("unknown directive `{trimmed}`")),
            }
            continue;
        }
        // Gather a multi-line shell command or Python block.
        let mut text_line = strip_comment(raw).to_string();
        let starts_python = text_line.contains("%{") && !text_line.contains("}%");
        let starts_shell = text_line.matches('`').count() % 2 == 1;
        if starts_python || starts_shell {
            // Continuation lines are taken whole (a `//` inside a shell command is kept).
            loop {
                let done = if starts_python {
                    text_line.contains("}%")
                } else {
                    text_line.matches('`').count().is_multiple_of(2)
                };
                if done {
                    break;
                }
                let Some(next) = lines.get(i) else {
                    return err(lineno, "unterminated shell command or Python block");
                };
                i += 1;
                text_line.push('\n');
                text_line.push_str(next);
            }
            // What follows the closing backtick may be a comment.
            if starts_shell {
                if let Some(close) = text_line.rfind('`') {
                    text_line.truncate(close + 1);
                }
            }
        }
        if active.iter().any(|a| !a) {
            continue;
        }
        let t = text_line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(opt) = t.strip_prefix("--") {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n.trim().to_string(), Some(v.trim().to_string())),
                None => (opt.trim().to_string(), None),
            };
            script.options.push((name, value));
            continue;
        }
        // `+ 0.1` (a space after the sign) is accepted, as packetdrill's lexer does.
        let spaced;
        let t = match t.strip_prefix('+') {
            Some(rest) if rest.starts_with(char::is_whitespace) => {
                spaced = format!("+{}", rest.trim_start());
                spaced.as_str()
            }
            _ => t,
        };
        let (when, body) = parse_time(t, last_time, lineno)?;
        if let When::At { start, .. } = when {
            last_time = start;
        }
        let kind = parse_body(body.trim(), lineno)?;
        script.events.push(Event {
            line: lineno,
            when,
            kind,
        });
    }
    if !active.is_empty() {
        return err(lines.len(), "#ifdef without #endif");
    }
    Ok(script)
}

/// Parses a time in seconds (`1`, `0.25`, `.1`) into µs.
fn parse_secs(s: &str, line: usize) -> Result<i64, ParseError> {
    let (int, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return err(line, format!("bad time `{s}`"));
    }
    let ok = |x: &str| x.bytes().all(|c| c.is_ascii_digit());
    if !ok(int) || !ok(frac) || frac.len() > 6 || int.len() > 9 {
        return err(line, format!("bad time `{s}`"));
    }
    let i: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| ParseError {
            line,
            msg: format!("bad time `{s}`"),
        })?
    };
    let mut f: i64 = 0;
    for (k, c) in frac.bytes().enumerate() {
        f += i64::from(c - b'0') * 10i64.pow(5 - k as u32);
    }
    Ok(i * 1_000_000 + f)
}

/// One time value: `+x` relative to `base`, or `x` absolute.
fn parse_one_time(s: &str, base: i64, line: usize) -> Result<i64, ParseError> {
    match s.strip_prefix('+') {
        Some(rel) => Ok(base + parse_secs(rel, line)?),
        None => parse_secs(s, line),
    }
}

fn parse_time(t: &str, last: i64, line: usize) -> Result<(When, &str), ParseError> {
    if let Some(rest) = t.strip_prefix('*') {
        return Ok((When::Any, rest));
    }
    let end = t
        .find(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '`' || c == '%')
        .unwrap_or(t.len());
    let (tok, rest) = t.split_at(end);
    if tok.is_empty() {
        return err(line, "event without a time");
    }
    let when = if let Some((a, b)) = tok.split_once("...") {
        let start = parse_one_time(a, last, line)?;
        let end = parse_one_time(b, start, line)?;
        When::At {
            start,
            end: Some(end),
            blocking: true,
        }
    } else if let Some((a, b)) = tok.split_once('~') {
        let start = parse_one_time(a, last, line)?;
        let end = parse_one_time(b, last, line)?;
        When::At {
            start,
            end: Some(end),
            blocking: false,
        }
    } else {
        When::At {
            start: parse_one_time(tok, last, line)?,
            end: None,
            blocking: false,
        }
    };
    Ok((when, rest))
}

fn parse_body(b: &str, line: usize) -> Result<EventKind, ParseError> {
    if b.starts_with('`') {
        let inner = b.trim_matches('`');
        return Ok(EventKind::Shell(inner.to_string()));
    }
    if let Some(p) = b.strip_prefix("%{") {
        let inner = p.trim_end().trim_end_matches("}%");
        return Ok(EventKind::Python(inner.trim().to_string()));
    }
    if let Some(rest) = b.strip_prefix('<') {
        return parse_packet(Dir::In, rest.trim(), line);
    }
    if let Some(rest) = b.strip_prefix('>') {
        return parse_packet(Dir::Out, rest.trim(), line);
    }
    parse_syscall(b, line).map(EventKind::Syscall)
}

fn parse_u32(s: &str, line: usize, what: &str) -> Result<u32, ParseError> {
    let r = if let Some(h) = s.strip_prefix("0x") {
        u32::from_str_radix(h, 16)
    } else {
        s.parse::<u32>()
    };
    r.map_err(|_| ParseError {
        line,
        msg: format!("bad {what} `{s}`"),
    })
}

/// `a:b(n)`, or `...(n)` for any sequence number.
fn parse_seq(s: &str, line: usize) -> Result<(Option<u32>, u32), ParseError> {
    let Some((range, len)) = s.split_once('(') else {
        return err(line, format!("bad sequence range `{s}`"));
    };
    let Some(len) = len.strip_suffix(')') else {
        return err(line, format!("bad sequence range `{s}`"));
    };
    let len = parse_u32(len, line, "length")?;
    if range == "..." {
        return Ok((None, len));
    }
    let Some((a, b)) = range.split_once(':') else {
        return err(line, format!("bad sequence range `{s}`"));
    };
    let a = parse_u32(a, line, "sequence number")?;
    let b = parse_u32(b, line, "sequence number")?;
    if b.wrapping_sub(a) != len {
        return err(
            line,
            format!("sequence range `{s}` does not match its length"),
        );
    }
    Ok((Some(a), len))
}

fn parse_packet(dir: Dir, s: &str, line: usize) -> Result<EventKind, ParseError> {
    let mut rest = s;
    let mut ip_extras = Vec::new();
    // `(tos 0x4)`, `(ttl 64)`, `[ect0]`, `[noecn]` before the flags.
    loop {
        rest = rest.trim_start();
        let close = match rest.chars().next() {
            Some('(') => ')',
            Some('[') => ']',
            _ => break,
        };
        let Some(end) = rest.find(close) else {
            return err(line, "unterminated packet annotation");
        };
        ip_extras.push(rest[..=end].to_string());
        rest = &rest[end + 1..];
    }
    let rest = rest.trim_start();
    if let Some(icmp) = rest.strip_prefix("icmp") {
        return parse_icmp(dir, icmp, line);
    }
    // Split off the options `<...>` first.
    let (head, options) = match rest.find('<') {
        Some(at) => {
            let Some(close) = rest.rfind('>') else {
                return err(line, "unterminated TCP options");
            };
            if close < at || !rest[close + 1..].trim().is_empty() {
                return err(line, "unexpected text after TCP options");
            }
            (&rest[..at], Some(&rest[at + 1..close]))
        }
        None => (rest, None),
    };
    if head.contains('/') {
        return err(line, "UDP encapsulation is not supported");
    }
    let mut words = head.split_whitespace();
    let Some(flag_word) = words.next() else {
        return err(line, "packet without flags");
    };
    let mut flags = BTreeSet::new();
    for c in flag_word.chars() {
        if !"SFRP.EWU".contains(c) {
            return err(line, format!("unknown TCP flag `{c}`"));
        }
        flags.insert(c);
    }
    let Some(seq_word) = words.next() else {
        return err(line, "packet without sequence numbers");
    };
    let (seq, len) = parse_seq(seq_word, line)?;
    let mut ack = None;
    let mut win = None;
    while let Some(w) = words.next() {
        let Some(v) = words.next() else {
            return err(line, format!("`{w}` without a value"));
        };
        match w {
            "ack" => ack = Some(parse_u32(v, line, "ack")?),
            "win" => win = Some(parse_u32(v, line, "window")?),
            _ => return err(line, format!("unknown packet field `{w}`")),
        }
    }
    let options = match options {
        None => Some(Vec::new()),
        Some(o) if o.trim() == "..." => None,
        Some(o) => Some(parse_options(o, line)?),
    };
    Ok(EventKind::Tcp(TcpSpec {
        dir,
        flags,
        seq,
        len,
        ack,
        win,
        options,
        ip_extras,
    }))
}

fn parse_options(s: &str, line: usize) -> Result<Vec<TcpOpt>, ParseError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let words: Vec<&str> = item.split_whitespace().collect();
        let opt = match words.as_slice() {
            ["eol"] => TcpOpt::Eol,
            ["nop"] => TcpOpt::Nop,
            ["sackOK"] => TcpOpt::SackOk,
            ["mss", v] => {
                TcpOpt::Mss(
                    u16::try_from(parse_u32(v, line, "mss")?).map_err(|_| ParseError {
                        line,
                        msg: format!("mss `{v}` out of range"),
                    })?,
                )
            }
            ["wscale", v] => {
                TcpOpt::Wscale(u8::try_from(parse_u32(v, line, "wscale")?).map_err(|_| {
                    ParseError {
                        line,
                        msg: format!("wscale `{v}` out of range"),
                    }
                })?)
            }
            ["TS", "val", v, "ecr", e] => TcpOpt::Ts {
                val: parse_u32(v, line, "TS val")?,
                ecr: parse_u32(e, line, "TS ecr")?,
            },
            ["sack", blocks @ ..] if !blocks.is_empty() => {
                let mut b = Vec::new();
                for blk in blocks {
                    let Some((l, r)) = blk.split_once(':') else {
                        return err(line, format!("bad SACK block `{blk}`"));
                    };
                    b.push((
                        parse_u32(l, line, "SACK block")?,
                        parse_u32(r, line, "SACK block")?,
                    ));
                }
                TcpOpt::Sack(b)
            }
            _ => return err(line, format!("unsupported TCP option `{}`", item.trim())),
        };
        out.push(opt);
    }
    Ok(out)
}

fn parse_icmp(dir: Dir, s: &str, line: usize) -> Result<EventKind, ParseError> {
    let (head, seq) = match s.find('[') {
        Some(at) => {
            let Some(inner) = s[at + 1..].trim().strip_suffix(']') else {
                return err(line, "bad ICMP echoed segment");
            };
            let (seq, _) = parse_seq(inner.trim(), line)?;
            (&s[..at], seq)
        }
        None => (s, None),
    };
    let words: Vec<&str> = head.split_whitespace().collect();
    let (kind, code, mtu) = match words.as_slice() {
        [kind] => (kind.to_string(), None, None),
        [kind, code] => (kind.to_string(), Some(code.to_string()), None),
        [kind, code, "mtu", m] => (
            kind.to_string(),
            Some(code.to_string()),
            Some(parse_u32(m, line, "mtu")?),
        ),
        _ => return err(line, "bad ICMP line"),
    };
    Ok(EventKind::Icmp(IcmpSpec {
        dir,
        kind,
        code,
        mtu,
        seq,
    }))
}

// ---------------------------------------------------------------------------------------------
// System calls
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Num(i64),
    Ident(String),
    Str(String),
    Ellipsis,
    Punct(char),
}

fn tokenize(s: &str, line: usize) -> Result<Vec<Tok>, ParseError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if s[i..].starts_with("...") {
            out.push(Tok::Ellipsis);
            i += 3;
        } else if c == b'"' {
            let Some(end) = s[i + 1..].find('"') else {
                return err(line, "unterminated string");
            };
            out.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else if c.is_ascii_digit()
            || (c == b'-' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            let t = &s[start..i];
            let (neg, body) = match t.strip_prefix('-') {
                Some(x) => (true, x),
                None => (false, t),
            };
            let v = if let Some(h) = body.strip_prefix("0x") {
                i64::from_str_radix(h, 16)
            } else {
                body.parse::<i64>()
            }
            .map_err(|_| ParseError {
                line,
                msg: format!("bad number `{t}`"),
            })?;
            out.push(Tok::Num(if neg { -v } else { v }));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].to_string()));
        } else if b"()[]{},|=".contains(&c) {
            out.push(Tok::Punct(c as char));
            i += 1;
        } else {
            return err(
                line,
                format!(
                    "unexpected character `{}`",
                    s[i..].chars().next().unwrap_or('?')
                ),
            );
        }
    }
    Ok(out)
}

struct Toks {
    toks: Vec<Tok>,
    at: usize,
    line: usize,
}

impl Toks {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        match self.next() {
            Some(Tok::Punct(p)) if p == c => Ok(()),
            other => err(self.line, format!("expected `{c}`, found {other:?}")),
        }
    }
    fn expr(&mut self) -> Result<Expr, ParseError> {
        let first = self.term()?;
        if self.peek() != Some(&Tok::Punct('|')) {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.peek() == Some(&Tok::Punct('|')) {
            self.next();
            all.push(self.term()?);
        }
        Ok(Expr::Or(all))
    }
    fn list(&mut self, close: char) -> Result<Vec<Expr>, ParseError> {
        let mut items = Vec::new();
        if self.peek() == Some(&Tok::Punct(close)) {
            self.next();
            return Ok(items);
        }
        loop {
            items.push(self.expr()?);
            match self.next() {
                Some(Tok::Punct(',')) => {}
                Some(Tok::Punct(c)) if c == close => return Ok(items),
                other => {
                    return err(
                        self.line,
                        format!("expected `,` or `{close}`, found {other:?}"),
                    )
                }
            }
        }
    }
    fn term(&mut self) -> Result<Expr, ParseError> {
        match self.next() {
            Some(Tok::Num(n)) => Ok(Expr::Int(n)),
            Some(Tok::Ident(s)) => {
                // `name = value` inside structures: keep the value.
                if self.peek() == Some(&Tok::Punct('=')) {
                    self.next();
                    return self.term();
                }
                Ok(Expr::Ident(s))
            }
            Some(Tok::Str(s)) => Ok(Expr::Str(s)),
            Some(Tok::Ellipsis) => Ok(Expr::Ellipsis),
            Some(Tok::Punct('[')) => Ok(Expr::List(self.list(']')?)),
            Some(Tok::Punct('{')) => Ok(Expr::Struct(self.list('}')?)),
            other => err(self.line, format!("unexpected {other:?} in system call")),
        }
    }
}

fn parse_syscall(s: &str, line: usize) -> Result<Syscall, ParseError> {
    let Some(open) = s.find('(') else {
        return err(line, format!("not an event: `{s}`"));
    };
    let name = s[..open].trim();
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return err(line, format!("not an event: `{s}`"));
    }
    let mut t = Toks {
        toks: tokenize(&s[open + 1..], line)?,
        at: 0,
        line,
    };
    let args = t.list(')')?;
    t.expect('=')?;
    let ret = match t.next() {
        Some(Tok::Num(n)) => n,
        other => return err(line, format!("expected a return value, found {other:?}")),
    };
    let errno = match t.peek() {
        Some(Tok::Ident(e)) => {
            let e = e.clone();
            t.next();
            Some(e)
        }
        _ => None,
    };
    // Whatever follows in parentheses is a comment (`(Operation now in progress)`,
    // `(flags O_RDWR)`).
    match t.peek() {
        None | Some(Tok::Punct('(')) => {}
        Some(other) => return err(line, format!("unexpected {other:?} after the return value")),
    }
    Ok(Syscall {
        name: name.to_string(),
        args,
        ret,
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_resolve_relative_to_the_previous_event() {
        let s = parse(
            "--tolerance_usecs=10000\n 0.00 `sysctl -w a=1`\n+0.10 close(3) = 0//x\n+ .4 close(4) = 0\n\
             1.00...6.00 connect(3, ..., ...) = -1 ETIMEDOUT (Operation timed out)\n\
             +1.0 > S 0:0(0) win 65535 <mss 1460,nop,wscale 6,sackOK,TS val 100 ecr 0>\n\
             * > S 0:0(0) win 65535 <...>\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.option("tolerance_usecs"), Some(Some("10000")));
        let times: Vec<When> = s.events.iter().map(|e| e.when).collect();
        let at = |start| When::At {
            start,
            end: None,
            blocking: false,
        };
        assert_eq!(times[0], at(0));
        assert_eq!(times[1], at(100_000));
        assert_eq!(times[2], at(500_000));
        assert_eq!(
            times[3],
            When::At {
                start: 1_000_000,
                end: Some(6_000_000),
                blocking: true
            }
        );
        assert_eq!(times[4], at(2_000_000));
        assert_eq!(times[5], When::Any);
        let EventKind::Tcp(t) = &s.events[4].kind else {
            panic!()
        };
        assert_eq!(t.flags_string(), "S");
        assert_eq!(t.options.as_ref().unwrap().len(), 5);
        let EventKind::Syscall(c) = &s.events[3].kind else {
            panic!()
        };
        assert_eq!((c.ret, c.errno.as_deref()), (-1, Some("ETIMEDOUT")));
    }

    #[test]
    fn ifdef_sections_follow_the_defines() {
        let text = "0 close(3) = 0\n#ifdef STANDARD\n+0 close(4) = 0\n#endif\n#ifdef FreeBSD\n\
                    +0 close(5) = 0\n#endif\n";
        let s = parse(text, &["STANDARD"]).unwrap();
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.events[1].line, 3);
    }

    #[test]
    fn multi_line_shell_commands_are_one_event() {
        let s = parse("0 `echo 'a\nb' | cat`\n+0 close(3) = 0\n", &[]).unwrap();
        assert_eq!(s.events.len(), 2);
        assert!(matches!(&s.events[0].kind, EventKind::Shell(c) if c.contains('\n')));
    }

    #[test]
    fn packets_icmp_and_syscalls_parse() {
        let s = parse(
            "0 < (tos 0x4) . 1:100(99) ack 1 win 65535 <nop,nop,sack 200:300 400:500>\n\
             +0 < icmp unreachable frag_needed mtu 1234 [0:0(0)]\n\
             +0 fcntl(3, F_SETFL, O_RDWR | O_NONBLOCK) = 0\n\
             +0 getsockopt(3, SOL_SOCKET, SO_ERROR, [ECONNRESET], [4]) = 0\n\
             +0 > S. ...(0) ack 65537 win 65535 <mss 1460,sackOK,eol,eol>\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.events.len(), 5);
        let EventKind::Icmp(i) = &s.events[1].kind else {
            panic!()
        };
        assert_eq!((i.mtu, i.seq), (Some(1234), Some(0)));
        let EventKind::Syscall(c) = &s.events[2].kind else {
            panic!()
        };
        assert_eq!(
            c.args[2],
            Expr::Or(vec![
                Expr::Ident("O_RDWR".into()),
                Expr::Ident("O_NONBLOCK".into())
            ])
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "0 < S 0:1(0) win 1",
            "0 < Q 0:0(0)",
            "x close(3) = 0",
            "0 close(3 = 0",
            "0 < S 0:0(0) win 1 <md5 valid>",
            "#ifdef A",
            "0 %{ unterminated",
            "0 > S 0:0(0) win 99999999999",
            "+ ",
        ] {
            assert!(parse(bad, &[]).is_err(), "{bad}");
        }
    }
}
