//! The server lifecycle.
//!
//! `Server::start` binds the listener itself (so the guard knows its fd and
//! port), hands it to tiny_http and starts `threads` handler threads that
//! share one `Arc<tiny_http::Server>`, plus the connection guard.
//!
//! Graceful stop, in this order (the contract Kubernetes relies on):
//! 1. the owner flips readiness (its `/ready` answers 503) and waits its
//!    shutdown delay while we keep serving;
//! 2. [`Server::stop_accepting`]: `shutdown(2)` on the listening socket ends
//!    tiny_http's blocking accept, so new connections are refused;
//! 3. [`Server::drain`]: the guard closes every connection as soon as it is
//!    idle (right after its response; tiny_http does not let a handler set
//!    `Connection: close`), and we wait until every open connection is gone
//!    and no request is in flight, up to the timeout.
//!
//! tiny_http's accept loop also ends for good on any accept error (EMFILE,
//! ENFILE, ENOBUFS...). It then pushes that error to the request queue; the
//! handler thread that receives it, outside a stop, reports it as fatal
//! through [`Shutdown::fatal`], and the process exits non-zero so the
//! orchestrator restarts it: never a live process that accepts nothing.

use std::borrow::Cow;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};
use tiny_http::{Header, Method, Response};

use super::guard::{Guard, Limits};
use super::{HttpConfig, Reply, RequestMetrics, Router};
use crate::shutdown::Shutdown;

/// Receive buffer per connection (the kernel doubles it: 64 KiB in effect).
const RECV_BUFFER: usize = 32 * 1024;

/// What the handler threads share.
struct App {
    router: Router,
    metrics: Option<RequestMetrics>,
    panics: IntCounter,
    guard: Guard,
    max_body: u64,
    shutdown: Shutdown,
}

pub struct Server {
    app: Arc<App>,
    http: Arc<tiny_http::Server>,
    listener_fd: RawFd,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr` and starts serving `router`. `metrics` enables the
    /// per-request metrics (the API has them; the worker's health port does
    /// not need them).
    pub fn start(
        cfg: &HttpConfig,
        addr: SocketAddr,
        router: Router,
        metrics: Option<RequestMetrics>,
        registry: &Registry,
        shutdown: Shutdown,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let listener_fd = listener.as_raw_fd();
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux.
        // tiny_http writes the head and the body of a response separately;
        // with Nagle on, a keep-alive client's delayed ACK would hold the
        // body back for 40 ms.
        super::sys::set_nodelay(listener_fd);
        // A small fixed receive buffer (also inherited): our requests are a
        // few hundred bytes and carry no body we read, and `shutdown(2)`
        // does not discard what is already queued, so after the guard cuts
        // off an oversized header tiny_http still reads (and buffers) at
        // most this much more. Autotuning would let that grow to megabytes.
        super::sys::set_recv_buffer(listener_fd, RECV_BUFFER);
        let guard = Guard::start(
            Limits {
                header_timeout: cfg.header_timeout,
                idle_timeout: cfg.idle_timeout,
                max_connections: cfg.max_connections,
                max_header_bytes: cfg.max_header_bytes,
            },
            addr.port(),
            listener_fd,
            registry,
            {
                let shutdown = shutdown.clone();
                Box::new(move |why: String| {
                    log::error!(reason = why.as_str(); "HTTP accept loop is dead; exiting so the orchestrator restarts us");
                    shutdown.fatal(why);
                })
            },
        )?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let panics = IntCounter::new(
            "http_handler_panics_total",
            "Request handlers that panicked (answered 500; the process lives on).",
        )
        .expect("metric");
        crate::metrics::register(registry, &panics);
        let app = Arc::new(App {
            router,
            metrics,
            panics,
            guard,
            max_body: cfg.max_body_bytes,
            shutdown,
        });
        let http = Arc::new(http);
        for i in 0..cfg.threads {
            let (app, http) = (app.clone(), http.clone());
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || handler_loop(&app, &http))?;
        }
        Ok(Server {
            app,
            http,
            listener_fd,
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting: new connections are refused from here on.
    pub fn stop_accepting(&self) {
        if !self.app.guard.close_listener() {
            return;
        }
        // Linux wakes a blocked accept with EINVAL when its socket is shut
        // down, and takes the socket out of the LISTEN state.
        super::sys::shutdown(self.listener_fd, true, true);
    }

    /// Waits until no connection is open and no request in flight, up to
    /// `timeout`. Returns whether everything finished.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.stop_accepting();
        self.app.guard.start_draining();
        let deadline = Instant::now() + timeout;
        loop {
            let (open, in_flight) = self.app.guard.open_and_in_flight();
            if open == 0 && in_flight == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                log::warn!(open_connections = open, in_flight = in_flight; "shutdown timeout reached with work in flight");
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();
        self.app.guard.stop();
        for _ in 0..64 {
            self.http.unblock();
        }
    }
}

fn handler_loop(app: &App, http: &tiny_http::Server) {
    loop {
        match http.recv() {
            Ok(rq) => handle(app, rq),
            Err(e) => {
                if app.guard.listener_closed() {
                    return;
                }
                if e.to_string() == "thread unblocked" {
                    return;
                }
                log::error!(error = e.to_string().as_str(); "HTTP accept loop died; exiting so the orchestrator restarts us");
                app.shutdown.fatal(format!("accept loop died: {e}"));
                return;
            }
        }
    }
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

fn is_chunked(rq: &tiny_http::Request) -> bool {
    rq.headers().iter().any(|h| {
        h.field.equiv("Transfer-Encoding")
            && h.value.as_str().to_ascii_lowercase().contains("chunked")
    })
}

fn handle(app: &App, mut rq: tiny_http::Request) {
    let start = Instant::now();
    let peer = rq.remote_addr().copied();
    app.guard.request_started(peer);
    let method = method_label(rq.method());
    let route = app.router.find(rq.url().split('?').next().unwrap_or(""));
    let route_label = route.map_or("unmatched", |r| r.path);
    let quiet = route.is_some_and(|r| r.quiet);

    // Bodies: none of our routes takes one. Too large → 413 without reading
    // it (the guard shuts the read side so tiny_http's drain ends at once).
    let too_large = match rq.body_length() {
        Some(n) => n as u64 > app.max_body,
        None if is_chunked(&rq) => {
            // Count (never store) up to the limit; the guard bounds the time.
            let mut buf = [0u8; 8192];
            let mut total = 0u64;
            let reader = rq.as_reader();
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => {
                        total += n as u64;
                        if total > app.max_body {
                            break true;
                        }
                    }
                }
            }
        }
        None => false,
    };
    let reply = if too_large {
        app.guard.shut_read(peer);
        Reply::error(
            413,
            &format!("request body larger than {} bytes", app.max_body),
        )
    } else {
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
    };
    let status = reply.status;
    let level = if status >= 500 {
        log::Level::Warn
    } else if quiet {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    // Only a request that will be logged pays for a copy of its path.
    let shown: Option<String> = log::log_enabled!(level).then(|| {
        rq.url()
            .split('?')
            .next()
            .unwrap_or("")
            .chars()
            .take(256)
            .collect()
    });
    let mut response = Response::from_data(reply.body).with_status_code(status);
    response.add_header(header("Content-Type", reply.content_type));
    for (name, value) in &reply.headers {
        response.add_header(header(name, value));
    }
    if let Err(e) = rq.respond(response) {
        log::debug!(error = e.to_string().as_str(); "writing response failed");
    }
    app.guard.request_finished(peer);

    let elapsed = start.elapsed();
    if let Some(m) = &app.metrics {
        let code = status_label(status);
        let labels = [method, route_label, &code];
        m.requests.with_label_values(&labels).inc();
        m.duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
    if let Some(shown) = shown {
        log::log!(level, method = method, route = route_label, path = shown.as_str(), status = status, duration_ms = elapsed.as_secs_f64() * 1000.0; "request");
    }
}

/// The `status_code` label; the codes we answer with need no allocation.
fn status_label(status: u16) -> Cow<'static, str> {
    match status {
        200 => "200".into(),
        400 => "400".into(),
        404 => "404".into(),
        405 => "405".into(),
        413 => "413".into(),
        500 => "500".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}
