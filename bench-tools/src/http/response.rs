//! Response heads: written by the server, parsed by the client.

use super::{head_end, is_tchar, reason, trim, MAX_HEAD, MAX_HEADERS};
use std::io::Write;

/// Appends a response head to `out`: status line, `Server`, `Content-Type` (when given),
/// `Content-Length` (always), `Connection`, blank line.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    content_length: u64,
    keep_alive: bool,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: epserver (mtcp-rs)\r\n",
        reason(status)
    );
    if let Some(t) = content_type {
        let _ = write!(out, "Content-Type: {t}\r\n");
    }
    let _ = write!(
        out,
        "Content-Length: {content_length}\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    );
}

/// A parsed response head (what a client needs to find the body's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// `Content-Length`, if the response has one.
    pub content_length: Option<u64>,
    /// The server closes the connection after this response (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// Length of the head, blank line included: the body starts there.
    pub head_len: usize,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while incomplete, `Err(())`
/// when malformed, longer than [`MAX_HEAD`], chunked, or with a conflicting or unparsable
/// `Content-Length`.
#[allow(clippy::result_unit_err)]
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, ()> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = head_end(window) else {
        return if buf.len() >= MAX_HEAD {
            Err(())
        } else {
            Ok(None)
        };
    };
    let mut lines = buf[..end - 2]
        .split(|&b| b == b'\n')
        .take_while(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").ok_or(()));
    let status_line = lines.next().ok_or(())??;
    // HTTP/1.x SP 3DIGIT SP reason
    if status_line.len() < 12
        || !status_line.starts_with(b"HTTP/1.")
        || status_line[8] != b' '
        || !status_line[9..12].iter().all(u8::is_ascii_digit)
        || status_line.get(12).is_some_and(|&b| b != b' ')
    {
        return Err(());
    }
    let http10 = status_line[7] == b'0';
    let status = status_line[9..12]
        .iter()
        .fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    let mut content_length = None;
    let mut close = false;
    let mut keep_alive = false;
    for (i, line) in lines.enumerate() {
        let line = line?;
        if i >= MAX_HEADERS {
            return Err(());
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(())?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let v = value
                .iter()
                .fold(0u64, |a, &d| a * 10 + u64::from(d - b'0'));
            if content_length.is_some_and(|c| c != v) {
                return Err(());
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',').map(trim) {
                close |= opt.eq_ignore_ascii_case(b"close");
                keep_alive |= opt.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(());
        }
    }
    Ok(Some(ResponseHead {
        status,
        content_length,
        close: close || (http10 && !keep_alive),
        head_len: end,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        write_head(&mut out, 200, Some("text/html"), 1234, true);
        out.extend_from_slice(b"body");
        let h = parse_response_head(&out).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(1234));
        assert!(!h.close);
        assert_eq!(&out[h.head_len..], b"body");
        out.clear();
        write_head(&mut out, 404, None, 0, false);
        let h = parse_response_head(&out).unwrap().unwrap();
        assert_eq!((h.status, h.content_length, h.close), (404, Some(0), true));
    }

    #[test]
    fn nginx_style_and_refusals() {
        let h =
            parse_response_head(b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length:  7 \r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.content_length, Some(7));
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert!(parse_response_head(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err()
        );
        let h = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close && h.content_length.is_none());
    }
}
