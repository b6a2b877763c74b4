//! What a request head means for its connection, judged by pure functions
//! over the pieces [`super::head`] found: [`judge`] (is it acceptable, and
//! what body follows it), [`keep_alive`] (may the connection serve another
//! request after it) and [`expects_continue`].
//!
//! The rules of RFC 9112/9110, before anything is forwarded to a handler:
//!
//! * invalid or ambiguous framing → 400 (501 for a transfer coding we do not
//!   implement), and the connection is closed after the answer;
//! * a request that carries a body gets its normal answer once the front has
//!   read (and discarded) the body, and the connection is closed after it: no
//!   route takes a body, and no byte after one is ever read as a request;
//! * a request head over the size or field-count limit → 431 and close;
//! * HTTP/1.1 without exactly one `Host` → 400; a version other than 1.0 or
//!   1.1 → 505.
//!
//! A refusal is still answered by a handler (a JSON error, logged and
//! counted like any request): the front forwards the method and target with
//! the refusal's [`Refusal::code`], and the handler turns it back into a
//! [`Refusal`] with [`Refusal::from_code`].

use super::close::CloseReason;

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
    /// A body longer than the limit (announced, or counted as it came).
    BodyTooLarge,
    /// A chunked body that breaks the chunked syntax.
    BadChunkedBody,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::HeadTooLarge | Refusal::TooManyFields => 431,
            Refusal::Version => 505,
            Refusal::BodyTooLarge => 413,
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
            Refusal::BodyTooLarge => "request body too large",
            Refusal::BadChunkedBody => "invalid chunked body",
        }
    }

    /// Every refusal, in the order of [`Refusal::code`]'s table.
    pub const ALL: [Refusal; 16] = [
        Refusal::HeadTooLarge,
        Refusal::TooManyFields,
        Refusal::Version,
        Refusal::MissingHost,
        Refusal::DuplicateHost,
        Refusal::BadFieldName,
        Refusal::BadFieldValue,
        Refusal::BadTarget,
        Refusal::BadContentLength,
        Refusal::DuplicateContentLength,
        Refusal::LengthAndChunked,
        Refusal::BadTransferEncoding,
        Refusal::UnknownTransferCoding,
        Refusal::TransferEncodingInHttp10,
        Refusal::BodyTooLarge,
        Refusal::BadChunkedBody,
    ];

    /// The refusal's name in the canonical request the front forwards (the
    /// value of its [`REFUSAL_FIELD`]).
    pub fn code(self) -> &'static str {
        REFUSAL_CODES[self as usize]
    }

    /// The refusal a [`Refusal::code`] names.
    pub fn from_code(code: &str) -> Option<Refusal> {
        REFUSAL_CODES
            .iter()
            .position(|c| *c == code)
            .map(|i| Refusal::ALL[i])
    }

    /// The close that follows the answer (its `reason` label is
    /// `header_too_large` or `bad_request`).
    pub fn close_reason(self) -> CloseReason {
        match self {
            Refusal::HeadTooLarge | Refusal::TooManyFields => CloseReason::HeadRefused,
            Refusal::BodyTooLarge => CloseReason::RequestBody,
            _ => CloseReason::BadRequest,
        }
    }
}

/// The field of a canonical request that carries a [`Refusal::code`]. Only
/// the front writes canonical requests, and it copies no field of the
/// client's, so a client cannot send one.
pub const REFUSAL_FIELD: &str = "Orion-Refusal";

/// [`Refusal::code`]s, indexed by the variant.
const REFUSAL_CODES: [&str; 16] = [
    "head-too-large",
    "too-many-fields",
    "version",
    "missing-host",
    "duplicate-host",
    "bad-field-name",
    "bad-field-value",
    "bad-target",
    "bad-content-length",
    "duplicate-content-length",
    "length-and-chunked",
    "bad-transfer-encoding",
    "unknown-transfer-coding",
    "transfer-encoding-in-http10",
    "body-too-large",
    "bad-chunked-body",
];

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
        if !is_token(name.as_bytes()) {
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
    if !forwardable_target(target) {
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

/// Whether `target` is non-empty visible ASCII (RFC 9112 §3.2): what a
/// request target may be, and what a canonical request may carry (tiny_http
/// takes ASCII request lines only, split at spaces).
pub fn forwardable_target(target: &str) -> bool {
    !target.is_empty() && target.bytes().all(|b| b > 0x20 && b < 0x7f)
}

/// RFC 9110 `token`: the characters a method or a field name may have.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// Whether the connection may serve another request after this one's
/// answer (RFC 9112 §9.3): HTTP/1.1 unless `Connection` has `close`;
/// HTTP/1.0 only with `keep-alive`.
pub fn keep_alive<'a>(
    version: (u8, u8),
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    let (mut close, mut keep) = (false, false);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep |= option.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    !close && (version >= (1, 1) || keep)
}

/// Whether the client waits for `100 Continue` before sending its body
/// (RFC 9110 §10.1.1; only HTTP/1.1 clients may).
pub fn expects_continue<'a>(
    version: (u8, u8),
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    version >= (1, 1)
        && fields.into_iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
        })
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
    fn targets_outside_visible_ascii_are_refused() {
        for t in ["/caf\u{e9}", "/a b", "/\u{7f}", "/a\tb"] {
            assert_eq!(
                judge((1, 1), t, [("Host", "x")], LIMITS),
                Verdict::Refuse(Refusal::BadTarget),
                "{t:?}"
            );
        }
    }

    #[test]
    fn every_refusal_has_its_own_code_and_comes_back_from_it() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "ALL is in declaration order");
            assert!(seen.insert(r.code()), "{r:?}");
            assert_eq!(Refusal::from_code(r.code()), Some(r));
            assert!(r
                .code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()));
        }
        assert_eq!(Refusal::from_code("nonsense"), None);
        assert_eq!(Refusal::BodyTooLarge.status(), 413);
        assert_eq!(
            Refusal::BodyTooLarge.close_reason().label(),
            Some("request_body")
        );
        assert_eq!(
            Refusal::BadChunkedBody.close_reason().label(),
            Some("bad_request")
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_options() {
        assert!(keep_alive((1, 1), []));
        assert!(!keep_alive((1, 1), [("Connection", "close")]));
        assert!(!keep_alive((1, 1), [("connection", "Keep-Alive, CLOSE")]));
        assert!(!keep_alive((1, 0), []));
        assert!(keep_alive((1, 0), [("Connection", "keep-alive")]));
        assert!(!keep_alive(
            (1, 0),
            [("Connection", "keep-alive"), ("Connection", "close")]
        ));
        assert!(keep_alive((1, 1), [("X-Connection", "close")]));
    }

    #[test]
    fn only_http_1_1_clients_expect_100_continue() {
        assert!(expects_continue((1, 1), [("Expect", "100-Continue")]));
        assert!(!expects_continue((1, 0), [("Expect", "100-continue")]));
        assert!(!expects_continue((1, 1), [("Expect", "something")]));
        assert!(!expects_continue((1, 1), []));
    }
}
