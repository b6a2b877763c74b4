//! Request heads as a client sends them: found in the bytes read so far and
//! split into the request line and the header fields, without copying.
//!
//! The front reads every byte a client sends, so this is the only place a
//! request head is parsed (tiny_http parses only the canonical requests the
//! front writes it). What a head *means* — which framing it declares, whether
//! it is acceptable — is [`super::framing::judge`]'s; this module only finds
//! the pieces, and refuses what has no pieces to find (no request line).
//!
//! Lines end with CRLF or, as RFC 9112 §2.2 lets a recipient accept, a bare
//! LF; a CR anywhere else makes the head malformed (§2.2: "MUST consider the
//! message invalid or replace each bare CR with SP"). Field lines are kept as
//! sent; their checks (token names, control characters) are `judge`'s.

/// Where the end of a head is, and how far a search for it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The head is `buf[..len]`, its blank line included.
    At(usize),
    /// Not found in the bytes so far; none of `buf[..searched]` needs to be
    /// looked at again (pass it back as `from`).
    NotYet { searched: usize },
}

/// Finds the end of the head that starts at `buf[0]`: the first empty line.
/// `from` is a previous call's `searched` (0 the first time), so a head
/// arriving a byte at a time costs linear time, not quadratic.
pub fn find_end(buf: &[u8], from: usize) -> End {
    // Restart a little early: the blank line may straddle the two reads.
    let mut i = from.saturating_sub(3);
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        // The next line is empty: `\n\n` or `\n\r\n`.
        match buf.get(nl + 1) {
            Some(b'\n') if nl > 0 => return End::At(nl + 2),
            Some(b'\r') if nl > 0 => match buf.get(nl + 2) {
                Some(b'\n') => return End::At(nl + 3),
                Some(_) => {}
                None => return End::NotYet { searched: nl },
            },
            Some(_) => {}
            None => return End::NotYet { searched: nl },
        }
        i = nl + 1;
    }
    End::NotYet {
        searched: buf.len(),
    }
}

/// A request line: `method SP request-target SP HTTP-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// (major, minor) of `HTTP/major.minor`, any digits.
    pub version: (u8, u8),
}

/// Why bytes are not a request line. The answer is the same 400 either way;
/// the reason is for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not three parts separated by single spaces.
    Shape,
    /// The method is not an RFC 9110 token.
    Method,
    /// The version is not `HTTP/<digit>.<digit>`.
    Version,
    /// A CR not followed by LF.
    BareCr,
}

/// The first line of `buf`, once it is complete (`Ok(None)` before).
pub fn request_line(buf: &[u8]) -> Result<Option<RequestLine<'_>>, Malformed> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    parse_request_line(strip_cr(&buf[..nl])?).map(Some)
}

fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, Malformed> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed::Shape);
    };
    if !super::framing::is_token(method) {
        return Err(Malformed::Method);
    }
    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            (major - b'0', minor - b'0')
        }
        _ => return Err(Malformed::Version),
    };
    if target.is_empty() {
        return Err(Malformed::Shape);
    }
    // A token is ASCII, so the method is text; the target is checked by
    // `judge`, and one that is not even UTF-8 (hence not ASCII) is handed to
    // it as a DEL, which it refuses as a bad target.
    let Ok(method) = std::str::from_utf8(method) else {
        return Err(Malformed::Method);
    };
    Ok(RequestLine {
        method,
        target: std::str::from_utf8(target).unwrap_or("\u{7f}"),
        version,
    })
}

/// A complete head: its request line and its field lines.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub line: RequestLine<'a>,
    /// The field lines, each ending in LF (their CRs included), and the
    /// blank line.
    fields: &'a [u8],
    /// Bytes of the whole head, blank line included.
    pub len: usize,
}

/// Parses the complete head `buf[..len]` (`len` from [`find_end`]).
pub fn parse(buf: &[u8], len: usize) -> Result<Head<'_>, Malformed> {
    let head = &buf[..len];
    // `find_end` found an LF, so the first line ends.
    let nl = head.iter().position(|&b| b == b'\n').unwrap_or(len);
    let line = parse_request_line(strip_cr(&head[..nl])?)?;
    let fields = &head[(nl + 1).min(len)..];
    // Every CR in a field line must end it (the blank line's too).
    let mut prev_cr = false;
    for &b in fields {
        if prev_cr && b != b'\n' {
            return Err(Malformed::BareCr);
        }
        prev_cr = b == b'\r';
    }
    Ok(Head { line, fields, len })
}

impl<'a> Head<'a> {
    /// Every header field in order, as (name, value): the name as sent (not
    /// checked here), the value without the optional whitespace around it.
    /// A line without a colon comes out with the whole line as its name and
    /// an empty value (which `judge` refuses: a name is a token). A value
    /// that is not UTF-8 comes out as `"\u{0}"`, which `judge` refuses too.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.fields
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = match l.iter().position(|&b| b == b':') {
                    Some(c) => (&l[..c], trim_ows(&l[c + 1..])),
                    None => (l, &b""[..]),
                };
                (
                    std::str::from_utf8(name).unwrap_or(" "),
                    std::str::from_utf8(value).unwrap_or("\u{0}"),
                )
            })
    }
}

fn strip_cr(line: &[u8]) -> Result<&[u8], Malformed> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return Err(Malformed::BareCr);
    }
    Ok(line)
}

/// Without the spaces and tabs around it (RFC 9110 §5.5 OWS).
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// How many complete heads `buf` holds, counting up to `max` (the requests a
/// client has pipelined behind the one being answered). Bodies are not
/// skipped: a head with a body is the last one a connection serves anyway.
pub fn count_complete(buf: &[u8], max: usize) -> usize {
    let mut n = 0;
    let mut rest = buf;
    while n < max {
        match find_end(rest, 0) {
            End::At(len) => {
                n += 1;
                rest = &rest[len..];
            }
            End::NotYet { .. } => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(buf: &str) -> End {
        find_end(buf.as_bytes(), 0)
    }

    #[test]
    fn the_end_is_the_first_empty_line_with_crlf_or_lf() {
        assert_eq!(end("GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), End::At(27));
        assert_eq!(end("GET / HTTP/1.1\nHost: x\n\nrest"), End::At(24));
        assert_eq!(end("GET / HTTP/1.1\r\n\r\n"), End::At(18));
        assert!(matches!(
            end("GET / HTTP/1.1\r\nHost: x\r\n"),
            End::NotYet { .. }
        ));
        assert!(matches!(
            end("GET / HTTP/1.1\r\nHost: x\r\n\r"),
            End::NotYet { .. }
        ));
        assert!(matches!(end(""), End::NotYet { searched: 0 }));
        // Empty lines before a request line are skipped by the caller
        // (RFC 9112 §2.2); here they end nothing.
        assert!(matches!(end("\n\nGET"), End::NotYet { .. }));
    }

    #[test]
    fn a_head_found_a_byte_at_a_time_is_found_where_it_is_found_at_once() {
        for head in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nA: b\r\n\r\nGET",
        ] {
            let bytes = head.as_bytes();
            let whole = find_end(bytes, 0);
            let mut searched = 0;
            let mut found = None;
            for n in 1..=bytes.len() {
                match find_end(&bytes[..n], searched) {
                    End::At(len) => {
                        found = Some(len);
                        break;
                    }
                    End::NotYet { searched: s } => {
                        assert!(s <= n);
                        searched = s;
                    }
                }
            }
            assert_eq!(found.map(End::At), Some(whole), "{head:?}");
        }
    }

    #[test]
    fn request_lines() {
        let l = request_line(b"GET /health?x=1 HTTP/1.1\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.method, l.target, l.version),
            ("GET", "/health?x=1", (1, 1))
        );
        assert_eq!(
            request_line(b"PRI * HTTP/2.0\r\n")
                .unwrap()
                .unwrap()
                .version,
            (2, 0)
        );
        assert_eq!(request_line(b"GET / HTTP/1.1"), Ok(None));
        for bad in [
            &b"GET /  HTTP/1.1\n"[..],
            b"GET / HTTP/1.1 x\n",
            b"GET\n",
            b"GET /\n",
            b" / HTTP/1.1\n",
            b"G(T / HTTP/1.1\n",
            b"GET / HTTP/1.10\n",
            b"GET / http/1.1\n",
            b"GET / HTTP/x.1\n",
            b"GET / HTTP/1.1\rX\n",
            b"\x00\x01\x02\x03\xff\xfe\r\n",
        ] {
            assert!(
                request_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn fields_in_order_with_their_values_trimmed() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-A:  a b \t\r\nEmpty:\r\nno colon\r\n\r\n";
        let End::At(len) = find_end(raw, 0) else {
            panic!()
        };
        let h = parse(raw, len).unwrap();
        let fields: Vec<_> = h.fields().collect();
        assert_eq!(
            fields,
            [
                ("Host", "x"),
                ("X-A", "a b"),
                ("Empty", ""),
                ("no colon", "")
            ]
        );
        let lf = b"GET / HTTP/1.0\nHost: y\n\n";
        let h = parse(lf, lf.len()).unwrap();
        assert_eq!(h.fields().collect::<Vec<_>>(), [("Host", "y")]);
        assert_eq!(h.line.version, (1, 0));
    }

    #[test]
    fn a_bare_cr_in_a_field_line_makes_the_head_malformed() {
        let raw = b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n";
        assert_eq!(parse(raw, raw.len()).unwrap_err(), Malformed::BareCr);
    }

    #[test]
    fn values_that_are_not_utf8_come_out_refusable() {
        let raw = b"GET / HTTP/1.1\r\nX: \xc3\x28\r\n\r\n";
        let h = parse(raw, raw.len()).unwrap();
        assert_eq!(h.fields().next(), Some(("X", "\u{0}")));
    }

    #[test]
    fn pipelined_heads_are_counted_up_to_the_limit() {
        let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let many = one.repeat(40);
        assert_eq!(count_complete(&many, 100), 40);
        assert_eq!(count_complete(&many, 17), 17);
        assert_eq!(count_complete(&many[..many.len() - 1], 100), 39);
        assert_eq!(count_complete(b"", 5), 0);
    }
}
