//! Message framing, judged by a pure function over what tiny_http parsed.
//!
//! tiny_http 0.12 frames requests laxly: it takes the first `Content-Length`
//! (and parses it with `usize::from_str`, which accepts `+35`), treats any
//! `Transfer-Encoding` as chunked, ignores a second `Host`, accepts empty
//! field names and control characters in values. A lenient reading of the
//! length makes the rest of a body the next request (request smuggling). It
//! does hand every header of every request to a handler, so the rules of
//! RFC 9112/9110 are enforced here, before any route runs:
//!
//! * invalid or ambiguous framing → 400 (501 for a transfer coding we do not
//!   implement), and the connection is closed after the answer;
//! * a request that carries a body gets its normal answer, and the
//!   connection is closed after it: no route takes a body, so we never need
//!   to know where it ends, and no byte of it can ever be read as a request;
//! * a request head over the size or field-count limit → 431 and close (the
//!   guard only sees bytes as they arrive; a head sent in one write is parsed
//!   before it looks);
//! * HTTP/1.1 without exactly one `Host` → 400; a version other than 1.0 or
//!   1.1 → 505.
//!
//! [`judge`] only reads its arguments, so it is tested with made-up requests.

use super::close::CloseReason;
use super::Reply;

/// Limits on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line plus header fields, in bytes as sent (CRLFs included).
    pub max_bytes: u64,
    /// Header fields.
    pub max_fields: usize,
}

/// Apache's `LimitRequestFields` default; our clients send fewer than 20.
pub const MAX_HEADER_FIELDS: usize = 100;

/// What a request carries after its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HeadTooLarge,
    TooManyFields,
    Version,
    MissingHost,
    DuplicateHost,
    BadFieldName,
    BadFieldValue,
    BadTarget,
    BadContentLength,
    DuplicateContentLength,
    LengthAndChunked,
    BadTransferEncoding,
    UnknownTransferCoding,
    TransferEncodingInHttp10,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::HeadTooLarge | Refusal::TooManyFields => 431,
            Refusal::Version => 505,
            Refusal::UnknownTransferCoding => 501,
            _ => 400,
        }
    }

    /// The `message` of the JSON error body.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::HeadTooLarge => "request line and headers too large",
            Refusal::TooManyFields => "too many header fields",
            Refusal::Version => "protocol version not supported (1.0 and 1.1 are)",
            Refusal::MissingHost => "no Host header",
            Refusal::DuplicateHost => "more than one Host header",
            Refusal::BadFieldName => "invalid header field name",
            Refusal::BadFieldValue => "control character in a header field value",
            Refusal::BadTarget => "invalid request target",
            Refusal::BadContentLength => "invalid Content-Length",
            Refusal::DuplicateContentLength => "more than one Content-Length",
            Refusal::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Refusal::BadTransferEncoding => "chunked must be the final transfer coding, once",
            Refusal::UnknownTransferCoding => "unsupported transfer coding",
            Refusal::TransferEncodingInHttp10 => "Transfer-Encoding in a version 1.0 request",
        }
    }

    /// The close that follows the answer (its `reason` label is
    /// `header_too_large` or `bad_request`).
    pub fn close_reason(self) -> CloseReason {
        match self {
            Refusal::HeadTooLarge | Refusal::TooManyFields => CloseReason::HeadRefused,
            _ => CloseReason::BadRequest,
        }
    }
}

/// The verdict on one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Route it; with a body the connection is closed after the answer.
    Route(Body),
    /// Answer `status()` and close.
    Refuse(Refusal),
}

/// Judges a request head: `version` as (major, minor), the request target
/// and every header field in order.
pub fn judge<'a>(
    version: (u8, u8),
    target: &str,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    limits: HeadLimits,
) -> Verdict {
    // "GET " + target + " HTTP/1.1\r\n" ... + "\r\n"; the method is short.
    let mut size = target.len() as u64 + 24;
    let mut count = 0usize;
    let mut hosts = 0u32;
    let mut lengths = 0u32;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut codings = Codings::default();
    let mut first_problem: Option<Refusal> = None;
    for (name, value) in fields {
        count += 1;
        size += name.len() as u64 + value.len() as u64 + 4;
        if first_problem.is_some() {
            // Keep counting: size and count refusals come first.
            continue;
        }
        if !is_token(name) {
            first_problem = Some(Refusal::BadFieldName);
            continue;
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            first_problem = Some(Refusal::BadFieldValue);
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match parse_length(value) {
                Some(n) => length = Some(n),
                None => bad_length = true,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.add(value);
        }
    }
    if size > limits.max_bytes {
        return Verdict::Refuse(Refusal::HeadTooLarge);
    }
    if count > limits.max_fields {
        return Verdict::Refuse(Refusal::TooManyFields);
    }
    if version != (1, 1) && version != (1, 0) {
        return Verdict::Refuse(Refusal::Version);
    }
    if let Some(p) = first_problem {
        return Verdict::Refuse(p);
    }
    if target.is_empty() || target.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Verdict::Refuse(Refusal::BadTarget);
    }
    if version == (1, 1) && hosts == 0 {
        return Verdict::Refuse(Refusal::MissingHost);
    }
    if hosts > 1 {
        return Verdict::Refuse(Refusal::DuplicateHost);
    }
    if codings.present {
        if lengths > 0 {
            return Verdict::Refuse(Refusal::LengthAndChunked);
        }
        if version == (1, 0) {
            return Verdict::Refuse(Refusal::TransferEncodingInHttp10);
        }
        return match codings.verdict() {
            Ok(()) => Verdict::Route(Body::Chunked),
            Err(r) => Verdict::Refuse(r),
        };
    }
    if lengths > 1 {
        return Verdict::Refuse(Refusal::DuplicateContentLength);
    }
    if bad_length {
        return Verdict::Refuse(Refusal::BadContentLength);
    }
    match length {
        Some(n) if n > 0 => Verdict::Route(Body::Length(n)),
        _ => Verdict::Route(Body::None),
    }
}

/// `Content-Length = 1*DIGIT`, at most 18 digits (fits a u64 with room).
fn parse_length(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// RFC 9110 `token`: the characters a field name may have.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The transfer codings of every `Transfer-Encoding` field, in order.
#[derive(Default)]
struct Codings {
    present: bool,
    chunked: u32,
    chunked_last: bool,
    unknown: bool,
    any: bool,
}

impl Codings {
    fn add(&mut self, value: &str) {
        self.present = true;
        // Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            self.any = true;
            if coding.eq_ignore_ascii_case("chunked") {
                self.chunked += 1;
                self.chunked_last = true;
            } else {
                self.unknown = true;
                self.chunked_last = false;
            }
        }
    }

    fn verdict(&self) -> Result<(), Refusal> {
        // RFC 9112 §6.3: chunked not final → 400 and close (MUST); applied
        // twice is invalid (§7); otherwise a coding we do not implement →
        // 501 (§6.1).
        if !self.any || !self.chunked_last || self.chunked > 1 {
            return Err(Refusal::BadTransferEncoding);
        }
        if self.unknown {
            return Err(Refusal::UnknownTransferCoding);
        }
        Ok(())
    }
}

/// The path of a request target: origin-form as is, absolute-form
/// (`http://host/health?x`) without its scheme and authority (RFC 9112
/// §3.2.2), the query cut off in both.
pub fn route_path(target: &str) -> &str {
    // The usual origin form has no scheme to look for.
    let rest = if target.starts_with('/') {
        None
    } else {
        scheme_rest(target)
    };
    let path = match rest {
        Some(rest) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None => target,
    };
    match path.find('?') {
        Some(i) => &path[..i],
        None => path,
    }
}

fn scheme_rest(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// A complete response with `Connection: close`, written by us rather than
/// tiny_http (which drops a handler's `Connection` header), for the answers
/// after which the connection is closed.
pub fn render_final(
    status: u16,
    reason: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"Connection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// tiny_http's default for a response's chunked threshold
/// (`Response::chunked_threshold`): a body this long or longer is sent
/// chunked to an HTTP/1.1 client.
const TINY_HTTP_CHUNKED_THRESHOLD: usize = 32768;

/// The response headers tiny_http treats specially (`Response::add_header`
/// drops, replaces or interprets them; `raw_print` adds `Date` and `Server`
/// only when they are missing).
const SPECIAL_RESPONSE_FIELDS: [&str; 8] = [
    "Connection",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Content-Length",
    "Content-Type",
    "Date",
    "Server",
];

/// The bytes tiny_http 0.12's `Request::respond` writes for a response built
/// as the server builds its keep-alive answers (`Response::from_data(body)`,
/// the status, a `Date` header of `date`, `Content-Type`, then the reply's
/// headers),
/// in one buffer, so they go to the connection in one write instead of
/// twenty locked ones. `None` wherever tiny_http would frame the answer
/// otherwise (chunked, for a request with a `TE` field or a body of 32 KiB
/// or more; no body for 1xx, 204 and 304) or treat a header specially, or
/// where a header is not ASCII: the caller then lets tiny_http respond.
///
/// `version` is the request's; `request_fields` the names of its header
/// fields; `head_only` for HEAD (tiny_http sends the headers of the body,
/// and not the body).
pub fn render_keep_alive<'a>(
    version: (u8, u8),
    mut request_fields: impl Iterator<Item = &'a str>,
    reply: &Reply,
    head_only: bool,
    date: &str,
) -> Option<Vec<u8>> {
    let (status, content_type, body) = (reply.status, reply.content_type, &reply.body[..]);
    if status < 200 || status == 204 || status == 304 {
        return None;
    }
    if version > (1, 0)
        && (body.len() >= TINY_HTTP_CHUNKED_THRESHOLD
            || request_fields.any(|f| f.eq_ignore_ascii_case("TE")))
    {
        return None;
    }
    let special = |name: &str| {
        SPECIAL_RESPONSE_FIELDS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    };
    if !content_type.is_ascii()
        || !date.is_ascii()
        || reply
            .headers
            .iter()
            .any(|(n, v)| !n.is_ascii() || !v.is_ascii() || special(n))
    {
        return None;
    }
    let reason = tiny_http::StatusCode(status).default_reason_phrase();
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/");
    crate::decimal::push(&mut out, version.0.into());
    out.push(b'.');
    crate::decimal::push(&mut out, version.1.into());
    out.push(b' ');
    crate::decimal::push(&mut out, status.into());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nServer: tiny-http (Rust)\r\nDate: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &reply.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    crate::decimal::push(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    Some(out)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) of `secs` after the
/// epoch: what tiny_http writes in its `Date` header (through `httpdate`),
/// for the years 1970 to 9999.
pub fn http_date(secs: u64) -> Option<String> {
    // 9999-12-31T23:59:59Z: httpdate writes four digits of year.
    if secs > 253_402_300_799 {
        return None;
    }
    use chrono::{Datelike, Timelike};
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)?;
    // chrono's strftime would do, but its parser adds about 40 KB to the binary.
    Some(format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().num_days_from_monday() as usize],
        t.day(),
        MONTHS[t.month0() as usize],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 64 * 1024,
        max_fields: MAX_HEADER_FIELDS,
    };

    fn j(version: (u8, u8), fields: &[(&str, &str)]) -> Verdict {
        judge(version, "/", fields.iter().copied(), LIMITS)
    }

    fn host(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = vec![("Host", "x")];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn plain_requests_are_routed_without_a_body() {
        assert_eq!(j((1, 1), &host(&[])), Verdict::Route(Body::None));
        assert_eq!(j((1, 0), &[]), Verdict::Route(Body::None));
        assert_eq!(
            j((1, 1), &host(&[("Content-Length", "0")])),
            Verdict::Route(Body::None)
        );
        assert_eq!(
            j((1, 1), &host(&[("content-length", "0035")])),
            Verdict::Route(Body::Length(35))
        );
        assert_eq!(
            j((1, 1), &host(&[("Transfer-Encoding", "Chunked")])),
            Verdict::Route(Body::Chunked)
        );
        assert_eq!(
            j((1, 1), &host(&[("Transfer-Encoding", ", chunked")])),
            Verdict::Route(Body::Chunked)
        );
        assert_eq!(
            j((1, 1), &host(&[("X-Tab", "a\tb"), ("X-Empty", "")])),
            Verdict::Route(Body::None)
        );
    }

    #[test]
    fn both_framing_headers_are_refused() {
        let v = j(
            (1, 1),
            &host(&[("Content-Length", "40"), ("Transfer-Encoding", "chunked")]),
        );
        assert_eq!(v, Verdict::Refuse(Refusal::LengthAndChunked));
        assert_eq!(Refusal::LengthAndChunked.status(), 400);
    }

    #[test]
    fn every_invalid_or_conflicting_length_is_refused() {
        for bad in [
            "35, 35",
            "-35",
            "3 5",
            "0x23",
            "+35",
            "",
            "12345678901234567890",
            "abc",
            "35 ",
        ] {
            assert_eq!(
                j((1, 1), &host(&[("Content-Length", bad)])),
                Verdict::Refuse(Refusal::BadContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            j(
                (1, 1),
                &host(&[("Content-Length", "0"), ("Content-Length", "35")])
            ),
            Verdict::Refuse(Refusal::DuplicateContentLength)
        );
        assert_eq!(
            j(
                (1, 1),
                &host(&[("Content-Length", "5"), ("Content-Length", "5")])
            ),
            Verdict::Refuse(Refusal::DuplicateContentLength)
        );
    }

    #[test]
    fn transfer_codings_other_than_a_single_final_chunked_are_refused() {
        let te = |v: &'static str| j((1, 1), &host(&[("Transfer-Encoding", v)]));
        for bad in [
            "gzip",
            "xchunked",
            "chunked, identity",
            "chunked, chunked",
            "",
            " , ",
        ] {
            let v = te(bad);
            assert_eq!(v, Verdict::Refuse(Refusal::BadTransferEncoding), "{bad:?}");
            assert_eq!(Refusal::BadTransferEncoding.status(), 400);
        }
        assert_eq!(
            te("gzip, chunked"),
            Verdict::Refuse(Refusal::UnknownTransferCoding)
        );
        assert_eq!(Refusal::UnknownTransferCoding.status(), 501);
        // Split over two fields, the list is the same.
        assert_eq!(
            j(
                (1, 1),
                &host(&[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "gzip")
                ])
            ),
            Verdict::Refuse(Refusal::BadTransferEncoding)
        );
        assert_eq!(
            j((1, 0), &[("Transfer-Encoding", "chunked")]),
            Verdict::Refuse(Refusal::TransferEncodingInHttp10)
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(j((1, 1), &[]), Verdict::Refuse(Refusal::MissingHost));
        assert_eq!(
            j((1, 1), &[("Host", "a"), ("host", "b")]),
            Verdict::Refuse(Refusal::DuplicateHost)
        );
        assert_eq!(
            j((1, 0), &[("Host", "a"), ("Host", "a")]),
            Verdict::Refuse(Refusal::DuplicateHost)
        );
    }

    #[test]
    fn field_names_and_values_are_checked() {
        for (name, value, want) in [
            ("", "x", Refusal::BadFieldName),
            ("X Y", "x", Refusal::BadFieldName),
            ("X\0", "x", Refusal::BadFieldName),
            ("X(", "x", Refusal::BadFieldName),
            ("X", "a\0b", Refusal::BadFieldValue),
            ("X", "a\x01", Refusal::BadFieldValue),
            ("X", "a\nb", Refusal::BadFieldValue),
            ("X", "a\rb", Refusal::BadFieldValue),
            ("X", "\x7f", Refusal::BadFieldValue),
        ] {
            assert_eq!(
                j((1, 1), &host(&[(name, value)])),
                Verdict::Refuse(want),
                "{name:?}: {value:?}"
            );
        }
    }

    #[test]
    fn versions_other_than_1_0_and_1_1_get_505() {
        for v in [(0, 9), (1, 2), (2, 0), (3, 0)] {
            let got = j(v, &host(&[]));
            assert_eq!(got, Verdict::Refuse(Refusal::Version), "{v:?}");
        }
        assert_eq!(Refusal::Version.status(), 505);
    }

    #[test]
    fn heads_over_the_limits_get_431() {
        let big = "a".repeat(70 * 1024);
        let v = judge(
            (1, 1),
            "/",
            [("Host", "x"), ("X-Big", big.as_str())],
            LIMITS,
        );
        assert_eq!(v, Verdict::Refuse(Refusal::HeadTooLarge));
        let url = format!("/{}", "a".repeat(65 * 1024));
        let v = judge((1, 1), &url, [("Host", "x")], LIMITS);
        assert_eq!(v, Verdict::Refuse(Refusal::HeadTooLarge));
        let many: Vec<(&str, &str)> = std::iter::once(("Host", "x"))
            .chain(std::iter::repeat_n(("X", "y"), 10_000))
            .collect();
        assert_eq!(
            judge((1, 1), "/", many.iter().copied(), LIMITS),
            Verdict::Refuse(Refusal::TooManyFields)
        );
        // At the limit is fine.
        let ok: Vec<(&str, &str)> = std::iter::once(("Host", "x"))
            .chain(std::iter::repeat_n(("X", "y"), MAX_HEADER_FIELDS - 1))
            .collect();
        assert_eq!(
            judge((1, 1), "/", ok.iter().copied(), LIMITS),
            Verdict::Route(Body::None)
        );
        // Size wins over a syntax problem found earlier.
        let v = judge((1, 1), "/", [("", "x"), ("X-Big", big.as_str())], LIMITS);
        assert_eq!(v, Verdict::Refuse(Refusal::HeadTooLarge));
        assert_eq!(Refusal::HeadTooLarge.status(), 431);
        assert_eq!(
            Refusal::HeadTooLarge.close_reason().label(),
            Some("header_too_large")
        );
    }

    #[test]
    fn targets() {
        assert_eq!(route_path("/health?x=1"), "/health");
        assert_eq!(route_path("http://host/health"), "/health");
        assert_eq!(route_path("HTTP://host:8000/ready?x"), "/ready");
        assert_eq!(route_path("https://h"), "/");
        assert_eq!(route_path("*"), "*");
        assert_eq!(route_path("/a?b?c"), "/a");
        assert_eq!(route_path("/http://x/y"), "/http://x/y");
        assert_eq!(route_path("?x"), "");
        assert_eq!(
            judge((1, 1), "/a\0", [("Host", "x")], LIMITS),
            Verdict::Refuse(Refusal::BadTarget)
        );
        assert_eq!(
            judge((1, 1), "", [("Host", "x")], LIMITS),
            Verdict::Refuse(Refusal::BadTarget)
        );
    }

    #[test]
    fn final_responses_say_close() {
        let r = render_final(
            400,
            "Bad Request",
            "application/json",
            &[("Allow", "GET")],
            b"{}",
            false,
        );
        let text = String::from_utf8(r).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\nAllow: GET\r\n\r\n{}"
        );
        let head = render_final(200, "OK", "text/plain", &[], b"abc", true);
        assert!(String::from_utf8(head)
            .unwrap()
            .ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }

    /// What tiny_http itself writes for the answer `render_keep_alive`
    /// renders (into a buffer: `raw_print` is what `respond` calls).
    fn tiny_http_bytes(
        version: (u8, u8),
        request_fields: &[&str],
        reply: &Reply,
        head_only: bool,
        date: &str,
    ) -> Vec<u8> {
        let h =
            |n: &str, v: &str| tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()).unwrap();
        let mut response =
            tiny_http::Response::from_data(reply.body.clone()).with_status_code(reply.status);
        response.add_header(h("Date", date));
        response.add_header(h("Content-Type", reply.content_type));
        for (n, v) in &reply.headers {
            response.add_header(h(n, v));
        }
        let request: Vec<tiny_http::Header> = request_fields.iter().map(|f| h(f, "x")).collect();
        let mut out = Vec::new();
        response
            .raw_print(
                &mut out,
                tiny_http::HTTPVersion(version.0, version.1),
                &request,
                head_only,
                None,
            )
            .unwrap();
        out
    }

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> Reply {
        let mut r = Reply::bytes(status, "application/json", body.to_vec());
        for (n, v) in headers {
            r = r.with_header(n, *v);
        }
        r
    }

    #[test]
    fn keep_alive_answers_are_the_bytes_tiny_http_writes() {
        let date = "Tue, 01 Dec 2026 21:54:57 GMT";
        let big = vec![b'x'; TINY_HTTP_CHUNKED_THRESHOLD];
        let just_under = vec![b'y'; TINY_HTTP_CHUNKED_THRESHOLD - 1];
        let bodies: [&[u8]; 5] = [b"", b"{\"status\":\"ok\"}\n", b"x", &just_under, &big];
        let header_sets: [&[(&str, &str)]; 4] = [
            &[],
            &[("Allow", "GET, HEAD")],
            &[("X-One", "1"), ("x-two", "")],
            // Treated specially by tiny_http: never rendered by us.
            &[("content-length", "5")],
        ];
        let request_sets: [&[&str]; 4] = [&[], &["Host", "User-Agent"], &["te"], &["Host", "TE"]];
        let mut rendered = 0;
        for version in [(1, 1), (1, 0), (0, 9)] {
            for status in [200, 201, 204, 304, 400, 404, 405, 413, 431, 500, 503, 599] {
                for body in bodies {
                    for headers in header_sets {
                        for request in request_sets {
                            for head_only in [false, true] {
                                let r = reply(status, headers, body);
                                let ours = render_keep_alive(
                                    version,
                                    request.iter().copied(),
                                    &r,
                                    head_only,
                                    date,
                                );
                                let theirs = tiny_http_bytes(version, request, &r, head_only, date);
                                if let Some(ours) = ours {
                                    rendered += 1;
                                    assert_eq!(
                                        String::from_utf8_lossy(&ours),
                                        String::from_utf8_lossy(&theirs),
                                        "{version:?} {status} {headers:?} {request:?} {head_only} body {}",
                                        body.len()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        // The answers the API sends are among those rendered.
        assert!(rendered > 500, "{rendered}");
        let ok =
            |version, request: &[&str], status, headers: &[(&'static str, &str)], body: &[u8]| {
                let r = reply(status, headers, body);
                render_keep_alive(version, request.iter().copied(), &r, false, date).is_some()
            };
        assert!(ok((1, 1), &["Host"], 200, &[], b"{}"));
        assert!(ok((1, 1), &["Host"], 405, &[("Allow", "GET, HEAD")], b"{}"));
        assert!(ok((1, 0), &["TE"], 200, &[], &big));
        assert!(!ok((1, 1), &["Host", "TE"], 200, &[], b"{}"));
        assert!(!ok((1, 1), &["Host"], 200, &[], &big));
        assert!(!ok((1, 1), &["Host"], 204, &[], b""));
        assert!(!ok((1, 1), &["Host"], 200, &[("Date", "x")], b""));
        assert!(!ok((1, 1), &["Host"], 200, &[("X", "é")], b""));
    }

    #[test]
    fn http_dates_are_the_ones_tiny_http_writes() {
        assert_eq!(
            http_date(784_111_777).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(http_date(0).unwrap(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(253_402_300_799).unwrap(),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(http_date(253_402_300_800), None);
        assert_eq!(
            http_date(1_709_164_800).unwrap(),
            "Thu, 29 Feb 2024 00:00:00 GMT"
        );
        // And today's, against tiny_http's own Date header.
        for _ in 0..5 {
            let before = std::time::SystemTime::now();
            let mut out = Vec::new();
            tiny_http::Response::from_data(Vec::new())
                .raw_print(&mut out, tiny_http::HTTPVersion(1, 1), &[], false, None)
                .unwrap();
            let after = std::time::SystemTime::now();
            let secs = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            };
            if secs(before) != secs(after) {
                continue;
            }
            let text = String::from_utf8(out).unwrap();
            let line = text.lines().find(|l| l.starts_with("Date: ")).unwrap();
            assert_eq!(line, format!("Date: {}", http_date(secs(before)).unwrap()));
            return;
        }
        panic!("the clock kept crossing a second");
    }
}
