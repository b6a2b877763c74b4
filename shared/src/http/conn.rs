//! One client connection as the front sees it: a state machine over the
//! bytes the client sent, the answer coming back from tiny_http and the
//! clock, with no system call in it. The front's event loop (`front.rs`)
//! does the reading, writing and closing this decides, so every rule of a
//! connection's life is tested here with made-up bytes and made-up instants.
//!
//! A connection serves one request at a time, by construction: a head is
//! judged, its body (if any) read and dropped, the canonical request
//! forwarded, and only once its answer is written does the next head in the
//! buffer get looked at. What a client pipelines waits in its own buffer,
//! never in tiny_http, so nothing behind a refused request or a body can
//! ever run: the connection ends after that answer.
//!
//! Deadlines ([`Conn::deadline`]), all counted from instants this struct
//! keeps:
//! - a request (head and body) must be complete `header_timeout` after the
//!   connection opened or after the previous answer was written: 408;
//! - a keep-alive connection that sends nothing for `idle_timeout` after an
//!   answer is closed without one;
//! - an answer the client takes no byte of for `send_timeout` ends the
//!   connection with a reset; so does an answer left unread for
//!   [`PIPELINE_STALL`] while more than `pipeline_depth` requests of the
//!   same client wait behind it;
//! - a closing connection's input is read and dropped for at most
//!   [`LINGER`] after its last answer.

use std::time::{Duration, Instant};

use super::chunked::{self, Chunked};
use super::close::CloseReason;
use super::framing::{self, Body, HeadLimits, Refusal, Verdict};
use super::head::{self, End};
use super::upstream::{self, Persist};

/// What a connection is allowed (from `HttpConfig`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub head: HeadLimits,
    pub max_body: u64,
    pub pipeline_depth: usize,
}

/// How long a closing connection's input is drained after its last answer
/// (nginx's `lingering_timeout` is 5 s and `lingering_time` 30 s; ours
/// only protects an answer of a few hundred bytes).
pub const LINGER: Duration = Duration::from_secs(2);

/// How long an answer may stay unread while more than `pipeline_depth`
/// requests wait behind it before the connection is reset.
pub const PIPELINE_STALL: Duration = Duration::from_secs(1);

/// Bytes a connection may have buffered behind the request being served
/// (its pipelined requests; and how many of them the depth rule can see).
pub const READ_AHEAD: usize = 16 * 1024;

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where a connection is in its current request.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for a request head, or reading one.
    Head,
    /// Reading (and dropping) a request's body; the canonical request is
    /// forwarded once it ends.
    Body(BodyLeft),
    /// The request is with tiny_http; its answer has not come back yet.
    Waiting,
    /// The answer is in [`Conn::out`], being written.
    Writing,
    /// The last answer is written and our side shut: what the client still
    /// sends is read and dropped until it closes or [`LINGER`] is over.
    Lingering { since: Instant },
}

/// What is left of a body.
#[derive(Debug, Clone)]
pub enum BodyLeft {
    Length(u64),
    Chunked(Chunked),
}

/// What the event loop should do next for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read more bytes (when the socket has some).
    Read,
    /// A canonical request was appended to the forward buffer: send it to
    /// tiny_http (`head_only`: it is a HEAD request).
    Forward { head_only: bool },
    /// Write [`Conn::out`] (the front's own answer, or `100 Continue`).
    Write,
    /// Nothing until the answer comes back or the socket takes more bytes.
    Wait,
    /// End the connection now, for this reason (see [`CloseReason::ending`]:
    /// its answer, if any, is sent first).
    Close(CloseReason),
}

/// Why a deadline ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Close for this reason.
    Close(CloseReason),
    /// The lingering close is over: drop the socket.
    LingerOver,
}

/// One client connection's state.
#[derive(Debug)]
pub struct Conn {
    pub phase: Phase,
    /// Bytes read and not yet consumed.
    pub inbuf: Vec<u8>,
    /// How far the search for the end of the head in `inbuf` got.
    scanned: usize,
    /// Bytes to write; `written` of them are written.
    pub out: Vec<u8>,
    pub written: usize,
    /// When the connection opened, or its last answer was written: the
    /// start of the current request's deadlines.
    since: Instant,
    /// Whether any byte arrived since `since`.
    got_bytes: bool,
    /// Whether an answer was ever written (an idle keep-alive connection,
    /// rather than a silent new one).
    answered: bool,
    /// The current answer is the last: close after it, counted as this.
    close: Option<CloseReason>,
    /// An HTTP/1.0 client that asked for keep-alive.
    keep_alive_10: bool,
    /// The request being served is HEAD.
    head_only: bool,
    /// For a request with a body: its method and target, forwarded when the
    /// body ends.
    pending: Option<(String, String)>,
    /// When the last write made progress (or the answer began).
    progress: Instant,
    /// Whether the last write left bytes unwritten.
    stalled: bool,
    /// The client shut its sending side (read returned 0).
    peer_eof: bool,
    /// Whether the close was counted already.
    pub counted: bool,
}

impl Conn {
    pub fn new(now: Instant) -> Conn {
        Conn {
            phase: Phase::Head,
            inbuf: Vec::new(),
            scanned: 0,
            out: Vec::new(),
            written: 0,
            since: now,
            got_bytes: false,
            answered: false,
            close: None,
            keep_alive_10: false,
            head_only: false,
            pending: None,
            progress: now,
            stalled: false,
            peer_eof: false,
            counted: false,
        }
    }

    /// Bytes the client sent.
    pub fn received(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.phase {
            // A closing connection's input is only drained.
            Phase::Lingering { .. } => {}
            _ => {
                self.got_bytes = true;
                self.inbuf.extend_from_slice(bytes);
            }
        }
    }

    /// Whether the event loop should read from the socket now, when it can:
    /// always while a request is read or the connection lingers; behind a
    /// request being served, up to [`READ_AHEAD`] (enough to see pipelined
    /// requests and the client's EOF) unless the connection ends after it.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Head | Phase::Body(_) | Phase::Lingering { .. } => true,
            Phase::Waiting | Phase::Writing => {
                self.close.is_none() && !self.peer_eof && self.inbuf.len() < READ_AHEAD
            }
        }
    }

    /// How many bytes the next read may add: [`READ_AHEAD`] at a time, and
    /// a head up to the head limit and one byte more (to see it exceeded);
    /// behind a request being served, up to [`READ_AHEAD`] in all.
    pub fn read_room(&self, limits: &Limits) -> usize {
        match self.phase {
            Phase::Head => {
                let cap = (limits.head.max_bytes as usize).saturating_add(1);
                cap.saturating_sub(self.inbuf.len()).clamp(1, READ_AHEAD)
            }
            Phase::Body(_) | Phase::Lingering { .. } => READ_AHEAD,
            Phase::Waiting | Phase::Writing => READ_AHEAD.saturating_sub(self.inbuf.len()),
        }
    }

    /// The client closed its sending side. Returns a close to make now, if
    /// nothing is left to answer.
    pub fn eof(&mut self) -> Option<CloseReason> {
        self.peer_eof = true;
        match self.phase {
            // Mid-request or between requests: nobody is left to answer.
            Phase::Head | Phase::Body(_) | Phase::Lingering { .. } => {
                Some(CloseReason::ClientAsked)
            }
            // A half-closed client may still read its answer.
            Phase::Waiting | Phase::Writing => {
                self.set_close(CloseReason::ClientAsked);
                None
            }
        }
    }

    /// A graceful stop began: an idle connection closes now; any other
    /// ends after its current request's answer. Returns a close to make now.
    pub fn drain(&mut self) -> Option<CloseReason> {
        if matches!(self.phase, Phase::Head) && !self.got_bytes {
            return Some(CloseReason::Draining);
        }
        self.set_close(CloseReason::Draining);
        None
    }

    /// What to do next with the bytes buffered; appends a canonical request
    /// to `fwd` when it says [`Step::Forward`]. `draining`: a graceful stop
    /// is under way (new requests are still served, each as the last).
    pub fn advance(&mut self, limits: &Limits, fwd: &mut Vec<u8>) -> Step {
        match &mut self.phase {
            Phase::Head => self.advance_head(limits, fwd),
            Phase::Body(_) => self.advance_body(fwd),
            Phase::Waiting => Step::Wait,
            Phase::Writing => {
                if self.written < self.out.len() {
                    Step::Write
                } else {
                    Step::Wait
                }
            }
            Phase::Lingering { .. } => {
                self.inbuf.clear();
                Step::Read
            }
        }
    }

    fn advance_head(&mut self, limits: &Limits, fwd: &mut Vec<u8>) -> Step {
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        if self.scanned == 0 {
            let blank = self
                .inbuf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                self.inbuf.drain(..blank);
            }
        }
        let len = match head::find_end(&self.inbuf, self.scanned) {
            End::At(len) => len,
            End::NotYet { searched } => {
                self.scanned = searched;
                // The request line alone can already be refused: no point
                // waiting for the rest of a head we cannot serve.
                match head::request_line(&self.inbuf) {
                    Err(_) => return Step::Close(CloseReason::Malformed),
                    Ok(Some(line)) if line.version != (1, 0) && line.version != (1, 1) => {
                        let head_only = line.method == "HEAD";
                        render(fwd, line.method, line.target, Some(Refusal::Version));
                        self.inbuf.clear();
                        self.scanned = 0;
                        return self.sent(head_only, Some(Refusal::Version.close_reason()));
                    }
                    Ok(_) => {}
                }
                if self.inbuf.len() as u64 > limits.head.max_bytes {
                    return Step::Close(CloseReason::HeaderTooLarge);
                }
                return Step::Read;
            }
        };
        let head = match head::parse(&self.inbuf, len) {
            Ok(h) => h,
            Err(_) => return Step::Close(CloseReason::Malformed),
        };
        let line = head.line;
        let head_only = line.method == "HEAD";
        let refuse = |fwd: &mut Vec<u8>, r: Refusal| {
            render(fwd, line.method, line.target, Some(r));
            Next::Sent(Some(r.close_reason()))
        };
        let next = match framing::judge(line.version, line.target, head.fields(), limits.head) {
            Verdict::Refuse(r) => refuse(fwd, r),
            Verdict::Route(Body::Length(n)) if n > limits.max_body => {
                refuse(fwd, Refusal::BodyTooLarge)
            }
            Verdict::Route(Body::None) => {
                let keep = framing::keep_alive(line.version, head.fields());
                self.keep_alive_10 = keep && line.version == (1, 0);
                render(fwd, line.method, line.target, None);
                Next::Sent((!keep).then_some(CloseReason::ClientAsked))
            }
            Verdict::Route(body) => Next::Body {
                left: match body {
                    Body::Length(n) => BodyLeft::Length(n),
                    _ => BodyLeft::Chunked(Chunked::new(limits.max_body)),
                },
                // Owned copies only for the rare request with a body.
                request: (line.method.to_string(), line.target.to_string()),
                expects_continue: framing::expects_continue(line.version, head.fields()),
            },
        };
        self.inbuf.drain(..len);
        self.scanned = 0;
        match next {
            Next::Sent(close) => self.sent(head_only, close),
            Next::Body {
                left,
                request,
                expects_continue,
            } => {
                self.pending = Some(request);
                self.head_only = head_only;
                self.close = Some(CloseReason::RequestBody);
                self.phase = Phase::Body(left);
                if expects_continue {
                    self.out.extend_from_slice(CONTINUE);
                    self.written = 0;
                    return Step::Write;
                }
                self.advance_body(fwd)
            }
        }
    }

    fn advance_body(&mut self, fwd: &mut Vec<u8>) -> Step {
        let Phase::Body(left) = &mut self.phase else {
            return Step::Wait;
        };
        let outcome = match left {
            BodyLeft::Length(n) => {
                let take = (*n).min(self.inbuf.len() as u64);
                *n -= take;
                self.inbuf.drain(..take as usize);
                Ok(*n == 0)
            }
            BodyLeft::Chunked(c) => match c.feed(&self.inbuf) {
                Ok(chunked::Progress::More) => {
                    self.inbuf.clear();
                    Ok(false)
                }
                Ok(chunked::Progress::Done(n)) => {
                    self.inbuf.drain(..n);
                    Ok(true)
                }
                Err(chunked::Error::TooLarge) => Err(Refusal::BodyTooLarge),
                Err(chunked::Error::Invalid) => Err(Refusal::BadChunkedBody),
            },
        };
        if outcome == Ok(false) {
            return Step::Read;
        }
        let (method, target) = self.pending.take().unwrap_or_default();
        let refusal = outcome.err();
        if let Some(r) = refusal {
            self.close = Some(r.close_reason());
        }
        render(fwd, &method, &target, refusal);
        self.sent(self.head_only, None)
    }

    /// A canonical request went into the forward buffer.
    fn sent(&mut self, head_only: bool, close: Option<CloseReason>) -> Step {
        if let Some(reason) = close {
            self.set_close(reason);
        }
        self.head_only = head_only;
        self.phase = Phase::Waiting;
        Step::Forward { head_only }
    }

    /// The connection ends after the current answer, for `reason`; a close
    /// that is counted wins over one that is not (a drain, the client's).
    fn set_close(&mut self, reason: CloseReason) {
        match self.close {
            Some(now) if now.label().is_some() => {}
            _ => self.close = Some(reason),
        }
    }

    /// The answer came back from tiny_http (`head`: its whole head, blank
    /// line included; `body`: what follows): it goes into [`Conn::out`]
    /// with the `Connection` field this connection needs.
    pub fn answer(&mut self, head: &[u8], body: &[u8], now: Instant) {
        let persist = if self.close.is_some() {
            Persist::Close
        } else if self.keep_alive_10 {
            Persist::KeepAlive10
        } else {
            Persist::Default
        };
        // Whatever of an interim answer is unwritten goes first.
        self.out.drain(..self.written);
        self.written = 0;
        let field = persist.field();
        self.out.reserve(head.len() + field.len() + body.len());
        self.out.extend_from_slice(&head[..head.len() - 2]);
        self.out.extend_from_slice(field);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        self.phase = Phase::Writing;
        self.progress = now;
        self.stalled = false;
    }

    /// The front's own answer for `reason` goes out, then the connection
    /// closes gracefully (see [`CloseReason::response`]).
    pub fn answer_and_close(&mut self, reason: CloseReason, now: Instant) {
        self.close = Some(reason);
        self.out.clear();
        self.written = 0;
        self.out
            .extend_from_slice(reason.response().unwrap_or_default());
        self.phase = Phase::Writing;
        self.progress = now;
        self.stalled = false;
    }

    /// `n` more bytes of [`Conn::out`] were written (`all`: every byte
    /// that was asked for). Returns the close to make if the answer is
    /// complete and was the last.
    pub fn wrote(&mut self, n: usize, now: Instant) -> Written {
        if n > 0 {
            self.progress = now;
        }
        self.written += n;
        self.stalled = self.written < self.out.len();
        if self.stalled {
            return Written::Partly;
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        if !matches!(self.phase, Phase::Writing) {
            // `100 Continue`: the body is still to come.
            return Written::Interim;
        }
        if let Some(reason) = self.close {
            self.phase = Phase::Lingering { since: now };
            self.inbuf = Vec::new();
            return Written::Last(reason);
        }
        self.phase = Phase::Head;
        self.since = now;
        self.got_bytes = !self.inbuf.is_empty();
        // A large head's buffer is not kept by an idle connection.
        if !self.got_bytes && self.inbuf.capacity() > 4096 {
            self.inbuf = Vec::new();
        }
        self.answered = true;
        self.head_only = false;
        self.keep_alive_10 = false;
        Written::Answered
    }

    /// When this connection's current deadline falls, and what it does.
    pub fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        let close = |at: Instant, r: CloseReason| Some((at, Expiry::Close(r)));
        match &self.phase {
            Phase::Head if !self.got_bytes && self.answered => {
                close(self.since + limits.idle_timeout, CloseReason::IdleTimeout)
            }
            Phase::Head => close(
                self.since + limits.header_timeout,
                CloseReason::HeaderTimeout,
            ),
            Phase::Body(_) => close(
                self.since + limits.header_timeout,
                CloseReason::RequestTimeout,
            ),
            Phase::Waiting => None,
            Phase::Writing if !self.stalled => None,
            Phase::Writing => {
                let send = self.progress + limits.send_timeout;
                let stall = self.progress + PIPELINE_STALL;
                if stall < send && self.pipelined_beyond(limits.pipeline_depth) {
                    close(stall, CloseReason::PipelineDepth)
                } else {
                    close(send, CloseReason::SendTimeout)
                }
            }
            Phase::Lingering { since } => Some((*since + LINGER, Expiry::LingerOver)),
        }
    }

    /// Whether more than `depth` complete requests wait behind the one
    /// being answered.
    fn pipelined_beyond(&self, depth: usize) -> bool {
        head::count_complete(&self.inbuf, depth.saturating_add(1)) > depth
    }

    /// What the deadline does if it has fallen by `now`.
    pub fn expired(&self, limits: &Limits, now: Instant) -> Option<Expiry> {
        self.deadline(limits)
            .and_then(|(at, what)| (at <= now).then_some(what))
    }

    /// How readily this connection is shed over the connection cap, lower
    /// first (then the oldest): one already closing; one with no request
    /// under way (idle or silent); one with a head arriving (it gets a 503).
    /// None: a request is being served, which is never cut short.
    pub fn shed_rank(&self) -> Option<(u8, Instant)> {
        match self.phase {
            Phase::Lingering { since } => Some((0, since)),
            Phase::Head if self.inbuf.is_empty() => Some((1, self.since)),
            Phase::Head => Some((2, self.since)),
            _ => None,
        }
    }

    /// The close a shed connection gets.
    pub fn shed_reason(&self) -> Option<CloseReason> {
        match self.shed_rank()? {
            (0, _) => None,
            (1, _) => Some(CloseReason::OverCapacity),
            _ => Some(CloseReason::OverCapacityPartial),
        }
    }
}

/// What a judged head leads to.
enum Next {
    /// Its canonical request is in the forward buffer; close after its
    /// answer if `Some`.
    Sent(Option<CloseReason>),
    /// Its body is read first.
    Body {
        left: BodyLeft,
        request: (String, String),
        expects_continue: bool,
    },
}

/// Appends the canonical request; a target that cannot be forwarded is
/// refused already, and its refusal goes with a stand-in (`*`, counted as
/// `unmatched`).
fn render(fwd: &mut Vec<u8>, method: &str, target: &str, refusal: Option<Refusal>) {
    let target = if framing::forwardable_target(target) {
        target
    } else {
        "*"
    };
    upstream::render_request(fwd, method, target, refusal);
}

/// What [`Conn::wrote`] finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Bytes are left: wait until the socket takes more.
    Partly,
    /// The `100 Continue` went out; the body is read on.
    Interim,
    /// An answer went out; the next request may follow.
    Answered,
    /// The last answer went out: shut our side and linger; count `reason`.
    Last(CloseReason),
}

/// Picks the connection to shed over the cap: the lowest
/// [`Conn::shed_rank`], oldest first. `None`: none may be shed.
pub fn pick_shed<K: Copy>(conns: impl IntoIterator<Item = (K, (u8, Instant))>) -> Option<K> {
    conns
        .into_iter()
        .min_by_key(|(_, rank)| *rank)
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            header_timeout: 10 * SEC,
            idle_timeout: 75 * SEC,
            send_timeout: 10 * SEC,
            head: HeadLimits {
                max_bytes: 1024,
                max_fields: framing::MAX_HEADER_FIELDS,
            },
            max_body: 100,
            pipeline_depth: 4,
        }
    }

    /// A connection opened at `t0`, with `bytes` received.
    fn conn(t0: Instant, bytes: &[u8]) -> Conn {
        let mut c = Conn::new(t0);
        c.received(bytes);
        c
    }

    fn step(c: &mut Conn) -> (Step, String) {
        let mut fwd = Vec::new();
        let s = c.advance(&limits(), &mut fwd);
        (s, String::from_utf8(fwd).unwrap())
    }

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";

    fn answer(c: &mut Conn, now: Instant) -> String {
        c.answer(ANSWER, b"{}", now);
        String::from_utf8(c.out.clone()).unwrap()
    }

    #[test]
    fn a_plain_request_is_forwarded_canonical_and_answered_keep_alive() {
        let t0 = Instant::now();
        let mut c = conn(
            t0,
            b"GET /health?x HTTP/1.1\r\nHost: a\r\nX-Secret: y\r\n\r\n",
        );
        assert_eq!(
            step(&mut c),
            (
                Step::Forward { head_only: false },
                "GET /health?x HTTP/1.1\r\n\r\n".into()
            )
        );
        assert_eq!(step(&mut c).0, Step::Wait);
        assert_eq!(
            answer(&mut c, t0 + SEC),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert_eq!(c.wrote(c.out.len(), t0 + SEC), Written::Answered);
        assert!(matches!(c.phase, Phase::Head));
        // Idle from now on: the idle timeout counts from the answer.
        assert_eq!(
            c.deadline(&limits()),
            Some((t0 + 76 * SEC, Expiry::Close(CloseReason::IdleTimeout)))
        );
    }

    #[test]
    fn pipelined_requests_are_served_one_at_a_time_in_order() {
        let t0 = Instant::now();
        let mut c = conn(
            t0,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (s, fwd) = step(&mut c);
            let Step::Forward { head_only } = s else {
                panic!("{s:?}")
            };
            // Nothing more goes out until this one is answered.
            assert_eq!(step(&mut c).0, Step::Wait);
            seen.push((fwd, head_only));
            answer(&mut c, t0);
            assert_eq!(c.wrote(c.out.len(), t0), Written::Answered);
        }
        assert_eq!(
            seen,
            [
                ("GET /a HTTP/1.1\r\n\r\n".to_string(), false),
                ("HEAD /b HTTP/1.1\r\n\r\n".to_string(), true),
                ("GET /c HTTP/1.1\r\n\r\n".to_string(), false)
            ]
        );
        assert_eq!(step(&mut c).0, Step::Read);
    }

    #[test]
    fn a_refused_head_is_forwarded_as_a_refusal_and_nothing_after_it_runs() {
        let t0 = Instant::now();
        let mut c = conn(
            t0,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (s, fwd) = step(&mut c);
        assert_eq!(s, Step::Forward { head_only: false });
        assert_eq!(
            fwd,
            "GET / HTTP/1.1\r\nOrion-Refusal: duplicate-content-length\r\n\r\n"
        );
        assert!(
            !c.wants_read(),
            "nothing more is read from a connection that ends"
        );
        let out = answer(&mut c, t0);
        assert!(out.contains("\r\nConnection: close\r\n\r\n{}"), "{out}");
        assert_eq!(
            c.wrote(c.out.len(), t0),
            Written::Last(CloseReason::BadRequest)
        );
        assert!(matches!(c.phase, Phase::Lingering { .. }));
        // The smuggled request is dropped, never forwarded.
        let (s, fwd) = step(&mut c);
        assert_eq!((s, fwd.as_str()), (Step::Read, ""));
        assert!(c.inbuf.is_empty());
    }

    #[test]
    fn a_body_is_read_to_its_end_before_the_request_goes_and_the_connection_ends_after() {
        let t0 = Instant::now();
        let mut c = conn(
            t0,
            b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel",
        );
        assert_eq!(step(&mut c).0, Step::Read);
        c.received(b"loGET /smuggled HTTP/1.1\r\n\r\n");
        let (s, fwd) = step(&mut c);
        assert_eq!(s, Step::Forward { head_only: false });
        assert_eq!(fwd, "POST /x HTTP/1.1\r\n\r\n");
        answer(&mut c, t0);
        assert_eq!(
            c.wrote(c.out.len(), t0),
            Written::Last(CloseReason::RequestBody)
        );

        // Chunked, with the smuggled request after the last chunk.
        let mut c = conn(
            t0,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        );
        let (s, fwd) = step(&mut c);
        assert_eq!(
            (s, fwd.as_str()),
            (
                Step::Forward { head_only: false },
                "POST / HTTP/1.1\r\n\r\n"
            )
        );
        assert!(c.out.is_empty());
    }

    #[test]
    fn bodies_over_the_limit_or_malformed_are_refused() {
        let t0 = Instant::now();
        // Announced too large: refused at once, nothing of it awaited.
        let mut c = conn(
            t0,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n",
        );
        let (_, fwd) = step(&mut c);
        assert_eq!(
            fwd,
            "POST / HTTP/1.1\r\nOrion-Refusal: body-too-large\r\n\r\n"
        );
        answer(&mut c, t0);
        assert_eq!(
            c.wrote(c.out.len(), t0),
            Written::Last(CloseReason::RequestBody)
        );
        // Chunked: counted as it comes.
        let mut c = conn(
            t0,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n",
        );
        assert_eq!(step(&mut c).0, Step::Read);
        c.received(&[b'a'; 100]);
        c.received(b"\r\n1\r\n");
        let (_, fwd) = step(&mut c);
        assert_eq!(
            fwd,
            "POST / HTTP/1.1\r\nOrion-Refusal: body-too-large\r\n\r\n"
        );
        let mut c = conn(
            t0,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n",
        );
        let (_, fwd) = step(&mut c);
        assert_eq!(
            fwd,
            "POST / HTTP/1.1\r\nOrion-Refusal: bad-chunked-body\r\n\r\n"
        );
        answer(&mut c, t0);
        assert_eq!(
            c.wrote(c.out.len(), t0),
            Written::Last(CloseReason::BadRequest)
        );
    }

    #[test]
    fn a_client_expecting_100_continue_gets_it_before_its_body_is_read() {
        let t0 = Instant::now();
        let mut c = conn(
            t0,
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(step(&mut c).0, Step::Write);
        assert_eq!(c.out, CONTINUE);
        assert_eq!(c.wrote(c.out.len(), t0), Written::Interim);
        assert_eq!(step(&mut c).0, Step::Read);
        c.received(b"hi");
        assert_eq!(step(&mut c).0, Step::Forward { head_only: false });
    }

    #[test]
    fn http_2_and_the_h2c_preface_are_refused_from_the_request_line_alone() {
        let t0 = Instant::now();
        for first in [
            &b"GET /health HTTP/2.0\r\n"[..],
            b"PRI * HTTP/2.0\r\n",
            b"GET / HTTP/3.0\r\nHost: x\r\n",
        ] {
            let mut c = conn(t0, first);
            let (s, fwd) = step(&mut c);
            assert_eq!(s, Step::Forward { head_only: false });
            assert!(
                fwd.ends_with(" HTTP/1.1\r\nOrion-Refusal: version\r\n\r\n"),
                "{fwd}"
            );
            answer(&mut c, t0);
            assert_eq!(
                c.wrote(c.out.len(), t0),
                Written::Last(CloseReason::BadRequest)
            );
        }
    }

    #[test]
    fn garbage_is_closed_with_the_fronts_own_400() {
        let t0 = Instant::now();
        for bytes in [
            &b"\x00\x01\x02\x03\xff\xfe\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        ] {
            let mut c = conn(t0, bytes);
            assert_eq!(step(&mut c).0, Step::Close(CloseReason::Malformed));
        }
    }

    #[test]
    fn a_head_that_outgrows_the_limit_unfinished_is_cut_off() {
        let t0 = Instant::now();
        let start = b"GET / HTTP/1.1\r\nX-Big: ";
        let mut c = conn(t0, start);
        assert_eq!(step(&mut c).0, Step::Read);
        // Room to the limit and one byte more, to see it exceeded.
        assert_eq!(c.read_room(&limits()), 1025 - start.len());
        let mut big = limits();
        big.head.max_bytes = 64 * 1024;
        assert_eq!(c.read_room(&big), READ_AHEAD);
        // Exactly the limit, unfinished: still read on.
        c.received(&vec![b'a'; 1024 - start.len()]);
        assert_eq!(step(&mut c).0, Step::Read);
        c.received(b"a");
        assert_eq!(step(&mut c).0, Step::Close(CloseReason::HeaderTooLarge));
    }

    #[test]
    fn a_bad_target_is_refused_with_a_stand_in_target() {
        let t0 = Instant::now();
        let mut c = conn(t0, "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes());
        let (_, fwd) = step(&mut c);
        assert_eq!(fwd, "GET * HTTP/1.1\r\nOrion-Refusal: bad-target\r\n\r\n");
    }

    #[test]
    fn http_1_0_and_connection_close_end_after_the_answer_uncounted() {
        let t0 = Instant::now();
        let mut c = conn(t0, b"GET / HTTP/1.0\r\n\r\n");
        step(&mut c);
        assert!(answer(&mut c, t0).contains("Connection: close\r\n"));
        assert_eq!(
            c.wrote(c.out.len(), t0),
            Written::Last(CloseReason::ClientAsked)
        );
        assert_eq!(CloseReason::ClientAsked.label(), None);

        let mut c = conn(t0, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        step(&mut c);
        assert!(answer(&mut c, t0).contains("\r\nConnection: keep-alive\r\n\r\n"));
        assert_eq!(c.wrote(c.out.len(), t0), Written::Answered);

        let mut c = conn(
            t0,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        step(&mut c);
        assert!(answer(&mut c, t0).contains("Connection: close\r\n"));
    }

    #[test]
    fn header_and_idle_deadlines() {
        let t0 = Instant::now();
        let l = limits();
        // Silent from the start: the header timeout, with a 408.
        let c = Conn::new(t0);
        assert_eq!(
            c.deadline(&l),
            Some((t0 + 10 * SEC, Expiry::Close(CloseReason::HeaderTimeout)))
        );
        assert_eq!(c.expired(&l, t0 + 10 * SEC - Duration::from_nanos(1)), None);
        assert_eq!(
            c.expired(&l, t0 + 10 * SEC),
            Some(Expiry::Close(CloseReason::HeaderTimeout))
        );
        assert_eq!(
            CloseReason::HeaderTimeout.response().map(|r| &r[..12]),
            Some(&b"HTTP/1.1 408"[..])
        );
        // A drip: still counted from the open, however it keeps sending.
        let mut c = conn(t0, b"GET / HT");
        step(&mut c);
        c.received(b"TP/1.1\r\n");
        assert_eq!(step(&mut c).0, Step::Read);
        assert_eq!(c.deadline(&l).unwrap().0, t0 + 10 * SEC);
        // After an answer: idle until a byte comes, then the header timeout
        // from the answer.
        let mut c = conn(t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        step(&mut c);
        answer(&mut c, t0 + SEC);
        c.wrote(c.out.len(), t0 + 2 * SEC);
        assert_eq!(
            c.deadline(&l).unwrap(),
            (t0 + 77 * SEC, Expiry::Close(CloseReason::IdleTimeout))
        );
        c.received(b"G");
        assert_eq!(
            c.deadline(&l).unwrap(),
            (t0 + 12 * SEC, Expiry::Close(CloseReason::HeaderTimeout))
        );
        // A body counts from the same start as its head.
        let mut c = conn(
            t0,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab",
        );
        step(&mut c);
        assert_eq!(
            c.deadline(&l).unwrap(),
            (t0 + 10 * SEC, Expiry::Close(CloseReason::RequestTimeout))
        );
        // Waiting for tiny_http: no deadline of the connection's own.
        let mut c = conn(t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        step(&mut c);
        assert_eq!(c.deadline(&l), None);
    }

    #[test]
    fn an_unread_answer_hits_the_send_timeout_or_the_pipeline_rule() {
        let t0 = Instant::now();
        let l = limits();
        let rq = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut c = conn(t0, rq);
        step(&mut c);
        answer(&mut c, t0);
        // Written in full at once: no deadline.
        assert_eq!(c.deadline(&l), None);
        assert_eq!(c.wrote(3, t0 + SEC), Written::Partly);
        assert_eq!(
            c.deadline(&l),
            Some((t0 + 11 * SEC, Expiry::Close(CloseReason::SendTimeout)))
        );
        // Progress moves it.
        c.wrote(1, t0 + 2 * SEC);
        assert_eq!(c.deadline(&l).unwrap().0, t0 + 12 * SEC);
        // Depth 4: four requests waiting behind is allowed, five is not.
        c.received(&rq.repeat(4));
        assert_eq!(
            c.deadline(&l).unwrap().1,
            Expiry::Close(CloseReason::SendTimeout)
        );
        c.received(rq);
        assert_eq!(
            c.deadline(&l),
            Some((
                t0 + 2 * SEC + PIPELINE_STALL,
                Expiry::Close(CloseReason::PipelineDepth)
            ))
        );
        assert_eq!(
            CloseReason::PipelineDepth.ending(),
            super::super::close::Ending::Abort
        );
        // Read-ahead stops at its cap.
        c.received(&vec![b'x'; READ_AHEAD]);
        assert!(!c.wants_read());
    }

    #[test]
    fn a_closing_connection_lingers_then_goes() {
        let t0 = Instant::now();
        let mut c = conn(t0, b"GET / HTTP/1.0\r\n\r\n");
        step(&mut c);
        answer(&mut c, t0);
        c.wrote(c.out.len(), t0 + SEC);
        assert_eq!(
            c.deadline(&limits()),
            Some((t0 + SEC + LINGER, Expiry::LingerOver))
        );
        assert!(c.wants_read());
        c.received(b"anything");
        assert!(c.inbuf.is_empty());
        assert_eq!(c.eof(), Some(CloseReason::ClientAsked));
    }

    #[test]
    fn a_half_closed_client_still_gets_its_answer() {
        let t0 = Instant::now();
        let mut c = conn(t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        step(&mut c);
        assert_eq!(c.eof(), None);
        assert!(answer(&mut c, t0).contains("Connection: close"));
        assert_eq!(
            c.wrote(c.out.len(), t0),
            Written::Last(CloseReason::ClientAsked)
        );
        // Between requests, an EOF just ends it.
        let mut c = conn(t0, b"GET / HT");
        step(&mut c);
        assert_eq!(c.eof(), Some(CloseReason::ClientAsked));
    }

    #[test]
    fn a_drain_closes_idle_connections_at_once_and_the_rest_after_their_answer() {
        let t0 = Instant::now();
        assert_eq!(Conn::new(t0).drain(), Some(CloseReason::Draining));
        let mut partial = conn(t0, b"GET / HTTP/1.1\r\nHo");
        step(&mut partial);
        assert_eq!(partial.drain(), None);
        partial.received(b"st: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
        assert!(matches!(step(&mut partial).0, Step::Forward { .. }));
        assert!(answer(&mut partial, t0).contains("Connection: close"));
        assert_eq!(
            partial.wrote(partial.out.len(), t0),
            Written::Last(CloseReason::Draining)
        );
        assert_eq!(CloseReason::Draining.label(), None);
    }

    #[test]
    fn shedding_takes_closing_then_idle_then_partial_oldest_first_never_a_request_in_flight() {
        let t0 = Instant::now();
        let idle_old = Conn::new(t0);
        let idle_new = Conn::new(t0 + SEC);
        let mut partial = conn(t0, b"GET / HT");
        step(&mut partial);
        let mut busy = conn(t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        step(&mut busy);
        assert_eq!(busy.shed_rank(), None);
        let all = [(1, &idle_new), (2, &partial), (3, &busy), (4, &idle_old)];
        let ranked = || {
            all.iter()
                .filter_map(|(k, c)| c.shed_rank().map(|r| (*k, r)))
        };
        assert_eq!(pick_shed(ranked()), Some(4));
        assert_eq!(idle_old.shed_reason(), Some(CloseReason::OverCapacity));
        assert_eq!(
            partial.shed_reason(),
            Some(CloseReason::OverCapacityPartial)
        );
        assert_eq!(pick_shed([(3, (0, t0 + 5 * SEC)), (4, (1, t0))]), Some(3));
        assert_eq!(pick_shed::<u8>([]), None);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let t0 = Instant::now();
        let mut c = conn(t0, b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(step(&mut c).0, Step::Forward { .. }));
    }
}
