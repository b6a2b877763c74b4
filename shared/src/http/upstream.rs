//! The front's side of the link to tiny_http: the canonical request it
//! writes for a client's request, and the answers it reads back.
//!
//! tiny_http serves a Unix socket the front connects to (see `server.rs`).
//! On it the front writes only requests it composed itself — method, target
//! and, for a refused request, the refusal; never a byte of the client's
//! head, body or fields — so tiny_http's lax parsing never sees anything the
//! front did not judge, and its connection threads never wait on a client.
//! Several requests may be in flight on one connection: tiny_http answers
//! them in order (its `SequentialWriter`), so the front pairs answers with
//! requests by order alone.
//!
//! Every answer carries `Content-Length` (the handlers set no chunked
//! threshold), so an answer ends where its head says, and the front can
//! copy it to the client with only the `Connection` field it needs added.

use super::framing::{Refusal, REFUSAL_FIELD};

/// The field of the probe the front sends on each new connection to learn
/// that a tiny_http thread serves it; handlers answer it with 200 and no
/// body, and neither log nor count it.
pub const PROBE_FIELD: &str = "Orion-Probe";

/// Appends the canonical request for `method` and `target` (both checked:
/// a token, and visible ASCII), with `refusal` when the request is refused.
/// Always HTTP/1.1 without `Connection`: the front alone decides when a
/// client's connection ends, and tiny_http's connection stays open.
pub fn render_request(out: &mut Vec<u8>, method: &str, target: &str, refusal: Option<Refusal>) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(r) = refusal {
        out.extend_from_slice(REFUSAL_FIELD.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(r.code().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The probe request (see [`PROBE_FIELD`]).
pub fn render_probe(out: &mut Vec<u8>) {
    out.extend_from_slice(b"GET * HTTP/1.1\r\n");
    out.extend_from_slice(PROBE_FIELD.as_bytes());
    out.extend_from_slice(b": 1\r\n\r\n");
}

/// The head of an answer tiny_http wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerHead {
    /// Bytes of the head, its blank line included.
    pub head_len: usize,
    pub status: u16,
    /// Bytes of the body that follow the head.
    pub body_len: usize,
}

/// Why the bytes on the link are not an answer: the link is out of step and
/// must be dropped (it never happens while tiny_http behaves as read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfStep(pub &'static str);

/// Parses the answer at the start of `buf`, once its head is complete.
/// `head_only`: the request was HEAD, so no body follows whatever the head
/// says (RFC 9110 §9.3.2); neither does one for 1xx, 204 and 304.
pub fn parse_answer(buf: &[u8], head_only: bool) -> Result<Option<AnswerHead>, OutOfStep> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(OutOfStep("an answer head longer than 64 KiB"));
        }
        return Ok(None);
    };
    let head_len = end + 4;
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'1', b' ', a, b, c, ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit()) =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(OutOfStep("not an HTTP/1.1 status line")),
    };
    let mut length = None;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(OutOfStep("a header line without a colon"));
        };
        let name = &line[..colon];
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..])
                .map_err(|_| OutOfStep("Content-Length is not text"))?;
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| OutOfStep("Content-Length is not a number"))?,
            );
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(OutOfStep("a chunked answer"));
        }
    }
    let no_body = head_only || status < 200 || status == 204 || status == 304;
    let body_len = match (no_body, length) {
        (true, _) => 0,
        (false, Some(n)) => n,
        (false, None) => return Err(OutOfStep("an answer without Content-Length")),
    };
    Ok(Some(AnswerHead {
        head_len,
        status,
        body_len,
    }))
}

/// How the client's connection goes on after an answer, as its answer
/// says it (tiny_http writes no `Connection` field; the front adds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 keep-alive: nothing to add.
    Default,
    /// An HTTP/1.0 client that asked for keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    /// The last answer on the connection: `Connection: close`.
    Close,
}

impl Persist {
    /// The field line the answer's head gets before its blank line.
    pub fn field(self) -> &'static [u8] {
        match self {
            Persist::Default => b"",
            Persist::KeepAlive10 => b"Connection: keep-alive\r\n",
            Persist::Close => b"Connection: close\r\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_requests_carry_method_target_and_refusal_only() {
        let mut out = Vec::new();
        render_request(&mut out, "GET", "/health?x=1", None);
        assert_eq!(out, b"GET /health?x=1 HTTP/1.1\r\n\r\n");
        out.clear();
        render_request(&mut out, "PRI", "*", Some(Refusal::Version));
        assert_eq!(out, b"PRI * HTTP/1.1\r\nOrion-Refusal: version\r\n\r\n");
        out.clear();
        render_probe(&mut out);
        assert_eq!(out, b"GET * HTTP/1.1\r\nOrion-Probe: 1\r\n\r\n");
    }

    #[test]
    fn answers_end_where_their_content_length_says() {
        let a =
            b"HTTP/1.1 200 OK\r\nServer: tiny-http (Rust)\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        let head = parse_answer(a, false).unwrap().unwrap();
        assert_eq!(
            head,
            AnswerHead {
                head_len: a.len() - "abcHTTP/1.1".len(),
                status: 200,
                body_len: 3
            }
        );
        assert_eq!(&a[head.head_len..head.head_len + head.body_len], b"abc");
        // HEAD: the head says 3, no body follows.
        assert_eq!(parse_answer(a, true).unwrap().unwrap().body_len, 0);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_answer(no_content, false).unwrap().unwrap().body_len,
            0
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        );
    }

    #[test]
    fn anything_else_means_the_link_is_out_of_step() {
        for bad in [
            &b"HTTP/1.0 200 OK\r\n\r\n"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                parse_answer(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_answer(&vec![b'a'; 70 * 1024], false).is_err());
    }

    /// The bytes tiny_http 0.12 itself writes, as the handlers respond.
    #[test]
    fn what_tiny_http_writes_parses() {
        for (status, body, head_only) in [
            (200u16, &b"{}\n"[..], false),
            (503, b"x", true),
            (404, b"", false),
        ] {
            let mut out = Vec::new();
            tiny_http::Response::from_data(body.to_vec())
                .with_status_code(status)
                .with_chunked_threshold(usize::MAX)
                .raw_print(&mut out, tiny_http::HTTPVersion(1, 1), &[], head_only, None)
                .unwrap();
            let head = parse_answer(&out, head_only).unwrap().unwrap();
            assert_eq!(head.status, status);
            assert_eq!(head.head_len + head.body_len, out.len());
        }
        // Large bodies too (tiny_http would chunk them above 32 KiB by default).
        let big = vec![b'm'; 100 * 1024];
        let mut out = Vec::new();
        tiny_http::Response::from_data(big.clone())
            .with_chunked_threshold(usize::MAX)
            .raw_print(&mut out, tiny_http::HTTPVersion(1, 1), &[], false, None)
            .unwrap();
        let head = parse_answer(&out, false).unwrap().unwrap();
        assert_eq!(head.body_len, big.len());
    }
}
