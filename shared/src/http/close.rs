//! Why and how a client connection is closed: one enum for every close the
//! serving layer makes, whether the connection guard decides it on its own
//! (a timeout, a head too large, over capacity) or a handler asks for it
//! after its answer (a refused head, a request body, a pipeline overflow).
//!
//! Each variant knows the three things the code that carries a close out
//! needs, so no caller compares strings: the `reason` label it is counted
//! under in `http_connections_closed_total` (several variants can share
//! one), the bytes written first (the guard's own final answers; a handler
//! writes its own), and how the socket is ended ([`Ending`]).

/// How a connection is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both directions shut after what was written: the peer reads the
    /// answer, then EOF.
    Graceful,
    /// Reset (RST): the peer is still sending (or does not read), so there
    /// is nothing left to deliver and draining it would cost more.
    Abort,
    /// Only the read side is shut: the handler's answer can still go out,
    /// and tiny_http ends the connection after it.
    ReadSide,
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
    /// tiny_http has read more than the header limit of a head it is still
    /// parsing (the guard's rule): 431 and reset, as the peer is still
    /// sending.
    HeaderTooLarge,
    /// A complete head the handler refused as too large (too long or too
    /// many fields): the handler wrote the 431; counted as `header_too_large`.
    HeadRefused,
    /// A request in flight for longer than the header timeout (a body
    /// dripping into tiny_http's drain): the read side is shut so the
    /// handler's answer still goes out.
    RequestTimeout,
    /// Shed over the connection cap, an idle or silent one: EOF.
    OverCapacity,
    /// Shed over the connection cap while a request head was arriving: 503.
    OverCapacityPartial,
    /// A head the handler refused as malformed (framing): its 400/501 is
    /// written, then EOF.
    BadRequest,
    /// A request with a body: answered, then EOF (none of our routes takes
    /// a body, so we never need to know where it ends).
    RequestBody,
    /// The connection pipelined past its depth (`lanes`).
    PipelineDepth,
    /// The peer acknowledged none of our bytes for the send timeout: reset.
    SendTimeout,
    /// An idle connection closed at once during a graceful stop: not
    /// counted (it is no defence, only the end of the process).
    Draining,
}

impl CloseReason {
    /// Every variant, for exhaustive tests.
    pub const ALL: [CloseReason; 12] = [
        CloseReason::HeaderTimeout,
        CloseReason::IdleTimeout,
        CloseReason::HeaderTooLarge,
        CloseReason::HeadRefused,
        CloseReason::RequestTimeout,
        CloseReason::OverCapacity,
        CloseReason::OverCapacityPartial,
        CloseReason::BadRequest,
        CloseReason::RequestBody,
        CloseReason::PipelineDepth,
        CloseReason::SendTimeout,
        CloseReason::Draining,
    ];

    /// Every `reason` label of `http_connections_closed_total`, exported
    /// from 0 so that a rate over it exists before the first close.
    pub const LABELS: [&'static str; 9] = [
        "header_timeout",
        "idle_timeout",
        "header_too_large",
        "request_timeout",
        "over_capacity",
        "bad_request",
        "request_body",
        "pipeline_depth",
        "send_timeout",
    ];

    /// The `reason` label this close is counted under (None: not counted).
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HeaderTooLarge | CloseReason::HeadRefused => "header_too_large",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::OverCapacity | CloseReason::OverCapacityPartial => "over_capacity",
            CloseReason::BadRequest => "bad_request",
            CloseReason::RequestBody => "request_body",
            CloseReason::PipelineDepth => "pipeline_depth",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::Draining => return None,
        })
    }

    /// The final answer the guard writes before ending the connection
    /// (None: nothing to answer, or the handler has answered already).
    pub fn response(self) -> Option<&'static [u8]> {
        match self {
            CloseReason::HeaderTimeout => Some(RESPONSE_408),
            CloseReason::HeaderTooLarge => Some(RESPONSE_431),
            CloseReason::OverCapacityPartial => Some(RESPONSE_503),
            _ => None,
        }
    }

    /// How the socket is ended.
    pub fn ending(self) -> Ending {
        match self {
            CloseReason::HeaderTooLarge | CloseReason::SendTimeout => Ending::Abort,
            CloseReason::RequestTimeout => Ending::ReadSide,
            _ => Ending::Graceful,
        }
    }
}

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

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
    }

    #[test]
    fn only_the_guards_own_closes_write_an_answer_and_it_says_close() {
        for r in CloseReason::ALL {
            let Some(bytes) = r.response() else { continue };
            let text = std::str::from_utf8(bytes).expect("ascii");
            let status = match r {
                CloseReason::HeaderTimeout => "408",
                CloseReason::HeaderTooLarge => "431",
                CloseReason::OverCapacityPartial => "503",
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
            [CloseReason::HeaderTooLarge, CloseReason::SendTimeout]
        );
        // A head refused after it was read completely is answered, not reset.
        assert_eq!(CloseReason::HeadRefused.ending(), Ending::Graceful);
        assert_eq!(CloseReason::RequestTimeout.ending(), Ending::ReadSide);
    }
}
