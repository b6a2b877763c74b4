//! tiny_http's handler threads: each takes the next request from tiny_http's
//! queue, routes it, answers it through tiny_http, and counts and logs it.
//!
//! Every request here was composed by the front (`upstream.rs`): a method, a
//! target, and either nothing else or the front's refusal. So a handler
//! never reads a body, never closes a connection and never waits on a
//! client; the front does all of that. What stays here is what a request
//! means to the service: the route, the reply, `http_requests_total`,
//! `http_request_duration_seconds` and the access log line.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus::IntCounter;
use tiny_http::{Header, Method, Response};

use super::framing::{route_path, Refusal, REFUSAL_FIELD};
use super::upstream::PROBE_FIELD;
use super::{Reply, RequestMetrics, Router};

/// What the handler threads share.
pub struct App {
    pub router: Router,
    pub metrics: Option<RequestMetrics>,
    pub panics: IntCounter,
    /// Set once the front sealed tiny_http's listener: the accept error that
    /// tiny_http then queues is expected.
    pub sealed: AtomicBool,
    /// Set before the handlers are unblocked for good.
    pub stopping: AtomicBool,
}

impl App {
    pub fn new(router: Router, metrics: Option<RequestMetrics>, panics: IntCounter) -> App {
        App {
            router,
            metrics,
            panics,
            sealed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }
}

/// A handler thread's life: requests until the server stops.
pub fn handler_loop(app: &App, http: &tiny_http::Server) {
    loop {
        match http.recv() {
            Ok(rq) => handle(app, rq),
            Err(_) if app.stopping.load(Ordering::Acquire) => return,
            // The only other error tiny_http queues is its accept loop's,
            // and the one accept that fails is the one the front ends by
            // sealing the listener (server.rs); nothing is lost by it.
            Err(e) => {
                if !app.sealed.load(Ordering::Acquire) {
                    log::warn!(error = e.to_string().as_str(); "unexpected error from tiny_http's queue");
                }
            }
        }
    }
}

/// Answers one request.
fn handle(app: &App, rq: tiny_http::Request) {
    let start = Instant::now();
    // A canonical request has at most one field: the front's refusal or
    // its probe.
    let mut refusal = None;
    if let Some(h) = rq.headers().first() {
        if h.field.equiv(PROBE_FIELD) {
            let _ = rq.respond(Response::empty(200));
            return;
        }
        if h.field.equiv(REFUSAL_FIELD) {
            refusal = Refusal::from_code(h.value.as_str());
        }
    }
    let method = method_label(rq.method());
    let route = app.router.find(route_path(rq.url()));
    let route_label = route.map_or("unmatched", |r| r.path);
    let reply = match refusal {
        Some(r) => Reply::error(r.status(), r.message()),
        None => route_reply(app, &rq, route, method, route_label),
    };
    let status = reply.status;
    // Probes and scrapes stay at debug whatever they answer: `/ready`'s 503
    // during a stop is the stop protocol, not a fault (a handler's panic is
    // logged at error where it happens).
    let level = if route.is_some_and(|r| r.quiet) {
        log::Level::Debug
    } else if status >= 500 {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    // Only a request that will be logged pays for a copy of its path.
    let shown: Option<String> = log::log_enabled!(target: crate::logging::access_target(), level)
        .then(|| shown_path(route_path(rq.url())));
    let mut response = Response::from_data(reply.body)
        .with_status_code(status)
        // Content-Length always: the front reads answers by their length.
        .with_chunked_threshold(usize::MAX);
    response.add_header(header("Content-Type", reply.content_type));
    for (name, value) in &reply.headers {
        response.add_header(header(name, value));
    }
    if let Err(e) = rq.respond(response) {
        log::debug!(error = e.to_string().as_str(); "writing an answer to the front failed");
    }
    let elapsed = start.elapsed();
    if let Some(m) = &app.metrics {
        let labels = [method, route_label, &status.to_string()];
        m.requests.with_label_values(&labels).inc();
        m.duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
    if let Some(shown) = shown {
        log::log!(target: crate::logging::access_target(), level, method = method, route = route_label, path = shown.as_str(), status = status, duration_ms = crate::logging::millis(elapsed); "request");
    }
}

/// The answer of the route (404, 405 or the handler's reply).
fn route_reply(
    app: &App,
    rq: &tiny_http::Request,
    route: Option<&super::Route>,
    method: &'static str,
    route_label: &'static str,
) -> Reply {
    match route {
        None => Reply::error(404, "no such route"),
        Some(_) if !matches!(rq.method(), Method::Get | Method::Head) => {
            Reply::error(405, "only GET and HEAD are allowed here")
                .with_header("Allow", "GET, HEAD")
        }
        Some(r) => match catch_unwind(AssertUnwindSafe(|| r.call())) {
            Ok(reply) => reply,
            Err(_) => {
                app.panics.inc();
                log::error!(method = method, route = route_label; "handler panicked; answered 500");
                Reply::error(500, "internal error")
            }
        },
    }
}

/// The logged copy of a request's path: its first 256 characters.
fn shown_path(path: &str) -> String {
    let end = path.char_indices().nth(256).map_or(path.len(), |(i, _)| i);
    path[..end].to_string()
}

fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        Method::Options => "OPTIONS",
        Method::Connect => "CONNECT",
        Method::Trace => "TRACE",
        Method::NonStandard(_) => "other",
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_path_is_its_first_256_characters() {
        for path in [
            String::new(),
            "/health".to_string(),
            "/".repeat(256),
            "/".repeat(257),
            "é".repeat(300),
            "𝄞".repeat(256) + "x",
            format!("/{}", "ß".repeat(400)),
        ] {
            let want: String = path.chars().take(256).collect();
            assert_eq!(shown_path(&path), want);
        }
    }
}
