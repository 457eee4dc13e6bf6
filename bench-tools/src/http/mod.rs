//! A small, strict HTTP/1.1 for `epserver` and `epwget`: request parsing and response
//! writing for the server, response-head parsing for the client, and the mapping of a
//! request target to a file under a document root.
//!
//! Everything here works on byte slices and never panics on what a peer sends: a request
//! either parses, needs more bytes, or is refused with the status to answer
//! ([`ParseError::status`]). Sizes are bounded: a request head (request line and headers)
//! is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] header lines.
//!
//! What it supports: `GET` and `HEAD` (anything else is 405), HTTP/1.1 (keep-alive unless
//! `Connection: close`) and HTTP/1.0 (close unless `Connection: keep-alive`), origin-form
//! targets with percent-encoding and a query (ignored). What it leaves out: request bodies
//! (a `GET` or `HEAD` that announces one is refused with 400), chunked responses, ranges,
//! conditional requests, `Expect`.

mod path;
mod response;

pub use path::{content_type, resolve, PathError};
pub use response::{parse_response_head, write_head, ResponseHead};

/// Longest request or response head (start line and headers, final blank line included).
pub const MAX_HEAD: usize = 8192;
/// Most header lines in one head.
pub const MAX_HEADERS: usize = 100;

/// The methods the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: the file.
    Get,
    /// `HEAD`: the headers `GET` would send, no body.
    Head,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The path of the target, percent-decoded, without the query; starts with `/`.
    pub path: Vec<u8>,
    /// Whether the connection stays open after the response (version and `Connection`).
    pub keep_alive: bool,
    /// `HTTP/1.0` (the response then says `HTTP/1.0` semantics apply: no keep-alive unless
    /// asked).
    pub http10: bool,
}

/// Why a request head cannot be served; [`status`](Self::status) is the answer to send (the
/// connection is closed after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Malformed request line or header, bad target, missing `Host` in HTTP/1.1, a body on
    /// `GET`/`HEAD`, or a head longer than [`MAX_HEAD`] / [`MAX_HEADERS`] (400).
    BadRequest,
    /// A well-formed method other than `GET` and `HEAD` (405).
    MethodNotAllowed,
    /// A version other than HTTP/1.0 and HTTP/1.1 (505).
    VersionNotSupported,
}

impl ParseError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::BadRequest => 400,
            ParseError::MethodNotAllowed => 405,
            ParseError::VersionNotSupported => 505,
        }
    }
}

/// The reason phrase of a status code this crate sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// `tchar` of RFC 9110 §5.6.2: the characters of a token (methods, header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The end of the head in `buf` (index just past the blank line), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf` already holds [`MAX_HEAD`] bytes, which
/// is reported as [`ParseError::BadRequest`]). `Ok(Some((request, n)))`: the head is the
/// first `n` bytes; what follows is the next request (pipelining).
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ParseError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = head_end(window) else {
        return if buf.len() >= MAX_HEAD {
            Err(ParseError::BadRequest)
        } else {
            Ok(None)
        };
    };
    // Every line of the head ends in CRLF; the blank line is cut off.
    let text = &buf[..end - 2];
    let mut lines = text
        .split(|&b| b == b'\n')
        .take_while(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").ok_or(ParseError::BadRequest));
    let request_line = lines.next().ok_or(ParseError::BadRequest)??;
    let [method, target, version] = split_request_line(request_line)?;
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        v if v.starts_with(b"HTTP/") && v.len() == 8 && v[5].is_ascii_digit() => {
            return Err(ParseError::VersionNotSupported)
        }
        _ => return Err(ParseError::BadRequest),
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequest);
    }
    let path = decode_target(target)?;
    let mut host = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut body = false;
    let mut count = 0;
    for line in lines {
        let line = line?;
        count += 1;
        if count > MAX_HEADERS {
            return Err(ParseError::BadRequest);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::BadRequest)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            // Also refuses obsolete line folding and whitespace before the colon
            // (RFC 9112 §5.1, §5.2).
            return Err(ParseError::BadRequest);
        }
        if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(ParseError::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"host") {
            if host {
                return Err(ParseError::BadRequest);
            }
            host = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',').map(trim) {
                close |= opt.eq_ignore_ascii_case(b"close");
                keep_alive_token |= opt.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(ParseError::BadRequest);
            }
            body |= value.iter().any(|&b| b != b'0');
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            body = true;
        }
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Err(ParseError::MethodNotAllowed),
    };
    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without Host. And
    // we do not read request bodies, which GET and HEAD have no use for.
    if (!http10 && !host) || body {
        return Err(ParseError::BadRequest);
    }
    let keep_alive = !close && (!http10 || keep_alive_token);
    Ok(Some((
        Request {
            method,
            path,
            keep_alive,
            http10,
        },
        end,
    )))
}

/// The three parts of a request line.
type RequestLine<'a> = [&'a [u8]; 3];

/// `method SP target SP version`, exactly one space each.
fn split_request_line(line: &[u8]) -> Result<RequestLine<'_>, ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequest);
    };
    if m.is_empty() || t.is_empty() {
        return Err(ParseError::BadRequest);
    }
    Ok([m, t, v])
}

/// Optional whitespace around a header value (RFC 9110 §5.6.3).
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .unwrap_or(start);
    &v[start..=end]
}

/// The decoded path of an origin-form target (`/a%20b?q` → `/a b`). Refuses anything that
/// is not origin-form, bad percent-escapes, NUL and control bytes.
fn decode_target(target: &[u8]) -> Result<Vec<u8>, ParseError> {
    if target.first() != Some(&b'/') {
        return Err(ParseError::BadRequest);
    }
    let raw = match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(i) => &target[..i],
        None => target,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(ParseError::BadRequest);
            };
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ParseError::BadRequest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (Request, usize) {
        parse_request(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn simple_get_keeps_alive() {
        let (r, n) = ok("GET /a/b.html HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, b"/a/b.html");
        assert!(r.keep_alive && !r.http10);
        assert_eq!(n, 35);
    }

    #[test]
    fn connection_close_and_http10() {
        let (r, _) = ok("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\n\r\n");
        assert!(!r.keep_alive);
        assert_eq!(r.method, Method::Head);
        let (r, _) = ok("GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive && r.http10);
        let (r, _) = ok("GET / HTTP/1.0\r\nconnection:keep-alive\r\n\r\n");
        assert!(r.keep_alive);
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse_request(b""), Ok(None));
    }

    #[test]
    fn refusals() {
        let e = |t: &str| parse_request(t.as_bytes()).unwrap_err().status();
        assert_eq!(e("POST / HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(
            e("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            405
        );
        assert_eq!(e("DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(e("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(e("GET / HTTP/1.1\r\n\r\n"), 400); // no Host
        assert_eq!(e("GET /  HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(e("GET x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(e("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(e("GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(e("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
        assert_eq!(e("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), 400);
        assert_eq!(e("GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            e("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"),
            400
        );
        assert_eq!(
            e("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(e("\x16\x03\x01garbage\r\n\r\n"), 400);
        let long = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(e(&long), 400);
        let many = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "A: b\r\n".repeat(101)
        );
        assert_eq!(e(&many), 400);
    }

    #[test]
    fn target_decoding() {
        let (r, _) = ok("GET /a%20b/c?x=..%2f#f HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.path, b"/a b/c");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000 {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                const ALPHABET: &[u8] = b"GET /HTP1.\r\n: %x0";
                buf.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
            }
            let _ = parse_request(&buf);
            let _ = parse_response_head(&buf);
        }
        // Valid heads with one byte changed and cut anywhere.
        let valid: &[&[u8]] = &[
            b"GET /a%20b?q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
        ];
        for v in valid {
            for i in 0..v.len() {
                for b in [0u8, b'\r', b'\n', b' ', b':', b'%', 0xff] {
                    let mut m = v.to_vec();
                    m[i] = b;
                    for cut in [i, i + 1, m.len()] {
                        let _ = parse_request(&m[..cut.min(m.len())]);
                        let _ = parse_response_head(&m[..cut.min(m.len())]);
                    }
                }
            }
        }
    }
}
