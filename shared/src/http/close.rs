//! Why and how a client connection is closed: one enum for every close the
//! front makes, whether on its own (a timeout, a head too large, over
//! capacity) or after a handler's answer (a refused head, a request body).
//!
//! Each variant knows the three things the code that carries a close out
//! needs, so no caller compares strings: the `reason` label it is counted
//! under in `http_connections_closed_total` (several variants can share
//! one), the bytes written first (the front's own final answers; a handler's
//! answer is written before the close), and how the socket is ended
//! ([`Ending`]). A connection the client closes is not counted: only the
//! server's closes are a defence worth a rate.

/// How a connection is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The answer is written, then the write side is shut (FIN) and what
    /// the peer still sends is read and dropped until it closes (a lingering
    /// close): closing with unread bytes would send a RST, which can destroy
    /// an answer the peer has not read yet.
    Graceful,
    /// Reset (RST): the peer is still sending (or does not read), so there
    /// is nothing left to deliver and draining it would cost more.
    Abort,
}

/// Every close the serving layer makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// No complete request head within the header timeout (a drip, or a
    /// connection that never sent a byte): 408, then EOF.
    HeaderTimeout,
    /// A keep-alive connection silent since its last answer for the idle
    /// timeout: EOF, no answer (there is no request to answer).
    IdleTimeout,
    /// More than the header limit arrived without the head ending: 431 and
    /// reset, as the peer is still sending.
    HeaderTooLarge,
    /// A complete head refused as too large (too long or too many fields):
    /// the handler's 431; counted as `header_too_large`.
    HeadRefused,
    /// A request body not complete within the header timeout (counted from
    /// the same start as its head): 408, then EOF.
    RequestTimeout,
    /// Shed over the connection cap, an idle or silent one: EOF.
    OverCapacity,
    /// Shed over the connection cap while a request head was arriving: 503.
    OverCapacityPartial,
    /// A head refused for its framing: the handler's 400/501/505, then EOF.
    BadRequest,
    /// Bytes that are no request line at all: the front's own 400, then
    /// EOF (nothing to forward; counted as `bad_request`).
    Malformed,
    /// A request with a body: answered, then EOF (none of our routes takes
    /// a body, so we never need to know where it ends).
    RequestBody,
    /// The client left its answers unread while more than
    /// `HTTP_PIPELINE_DEPTH` requests of its own waited behind them: reset.
    PipelineDepth,
    /// The peer acknowledged none of our bytes for the send timeout: reset.
    SendTimeout,
    /// The link to tiny_http failed with this request on it: the front's
    /// own 500, then EOF (never expected; logged at error).
    Internal,
    /// An idle connection closed at once during a graceful stop, or after
    /// its answer: not counted (it is no defence, only the end of the
    /// process).
    Draining,
    /// The client asked for the close (`Connection: close`, HTTP/1.0, or it
    /// shut its side down): after the answer; not counted.
    ClientAsked,
}

impl CloseReason {
    /// Every variant, for exhaustive tests.
    pub const ALL: [CloseReason; 15] = [
        CloseReason::HeaderTimeout,
        CloseReason::IdleTimeout,
        CloseReason::HeaderTooLarge,
        CloseReason::HeadRefused,
        CloseReason::RequestTimeout,
        CloseReason::OverCapacity,
        CloseReason::OverCapacityPartial,
        CloseReason::BadRequest,
        CloseReason::Malformed,
        CloseReason::RequestBody,
        CloseReason::PipelineDepth,
        CloseReason::SendTimeout,
        CloseReason::Internal,
        CloseReason::Draining,
        CloseReason::ClientAsked,
    ];

    /// Every `reason` label of `http_connections_closed_total`, exported
    /// from 0 so that a rate over it exists before the first close.
    pub const LABELS: [&'static str; 10] = [
        "header_timeout",
        "idle_timeout",
        "header_too_large",
        "request_timeout",
        "over_capacity",
        "bad_request",
        "request_body",
        "pipeline_depth",
        "send_timeout",
        "internal_error",
    ];

    /// The `reason` label this close is counted under (None: not counted).
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HeaderTooLarge | CloseReason::HeadRefused => "header_too_large",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::OverCapacity | CloseReason::OverCapacityPartial => "over_capacity",
            CloseReason::BadRequest | CloseReason::Malformed => "bad_request",
            CloseReason::RequestBody => "request_body",
            CloseReason::PipelineDepth => "pipeline_depth",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::Internal => "internal_error",
            CloseReason::Draining | CloseReason::ClientAsked => return None,
        })
    }

    /// The final answer the front writes itself before ending the
    /// connection (None: nothing to answer, or a handler has answered).
    pub fn response(self) -> Option<&'static [u8]> {
        match self {
            CloseReason::HeaderTimeout | CloseReason::RequestTimeout => Some(RESPONSE_408),
            CloseReason::HeaderTooLarge => Some(RESPONSE_431),
            CloseReason::OverCapacityPartial => Some(RESPONSE_503),
            CloseReason::Malformed => Some(RESPONSE_400),
            CloseReason::Internal => Some(RESPONSE_500),
            _ => None,
        }
    }

    /// How the socket is ended.
    pub fn ending(self) -> Ending {
        match self {
            CloseReason::HeaderTooLarge | CloseReason::SendTimeout | CloseReason::PipelineDepth => {
                Ending::Abort
            }
            _ => Ending::Graceful,
        }
    }
}

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_400: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_500: &[u8] =
    b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_label_is_used_and_every_counted_close_has_one_of_them() {
        let labels: HashSet<&str> = CloseReason::LABELS.into_iter().collect();
        assert_eq!(labels.len(), CloseReason::LABELS.len(), "distinct labels");
        let used: HashSet<&str> = CloseReason::ALL
            .into_iter()
            .filter_map(CloseReason::label)
            .collect();
        assert_eq!(used, labels);
        assert_eq!(CloseReason::Draining.label(), None);
        assert_eq!(CloseReason::ClientAsked.label(), None);
    }

    #[test]
    fn only_the_fronts_own_closes_write_an_answer_and_it_says_close() {
        for r in CloseReason::ALL {
            let Some(bytes) = r.response() else { continue };
            let text = std::str::from_utf8(bytes).expect("ascii");
            let status = match r {
                CloseReason::HeaderTimeout | CloseReason::RequestTimeout => "408",
                CloseReason::HeaderTooLarge => "431",
                CloseReason::OverCapacityPartial => "503",
                CloseReason::Malformed => "400",
                CloseReason::Internal => "500",
                other => panic!("{other:?} must leave the answer to its handler"),
            };
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
            assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
        }
    }

    #[test]
    fn a_peer_still_sending_or_not_reading_is_reset_and_only_then() {
        let aborted: Vec<CloseReason> = CloseReason::ALL
            .into_iter()
            .filter(|r| r.ending() == Ending::Abort)
            .collect();
        assert_eq!(
            aborted,
            [
                CloseReason::HeaderTooLarge,
                CloseReason::PipelineDepth,
                CloseReason::SendTimeout
            ]
        );
        // A head refused after it was read completely is answered, not reset.
        assert_eq!(CloseReason::HeadRefused.ending(), Ending::Graceful);
    }
}
