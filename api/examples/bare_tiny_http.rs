//! The floor under orion-api's benchmark: tiny_http 0.12 used the way its
//! own README shows (threads blocking in `recv`, then `respond`), answering
//! every request with a fixed JSON body and writing one access-log line per
//! request to a file, as nginx does in the same benchmark. No connection
//! guard, no lanes, no framing checks, no metrics, no JSON log: what any
//! server built on tiny_http pays before doing anything of its own.
//!
//! `PORT` (required), `BARE_BODY` (the body), `BARE_LOG` (the log file),
//! `BARE_THREADS` (default 2). Started by `bench/api_bench.py`; never
//! shipped. On mimalloc, as orion-api is (`src/main.rs` says why).
#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

fn main() {
    let var = |name: &str| std::env::var(name).ok();
    let port: u16 = var("PORT")
        .and_then(|p| p.parse().ok())
        .expect("PORT: a port number");
    let body = Arc::new(var("BARE_BODY").unwrap_or_else(|| "{\"status\":\"ok\"}".into()));
    let threads: usize = var("BARE_THREADS")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let log = var("BARE_LOG").map(|path| {
        Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("BARE_LOG: a writable file"),
        )
    });
    let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).expect("listen"));
    let content_type =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
            .expect("header");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (server, body, log, content_type) = (
                server.clone(),
                body.clone(),
                log.clone(),
                content_type.clone(),
            );
            std::thread::spawn(move || {
                while let Ok(rq) = server.recv() {
                    let line = format!("{} {} 200\n", rq.method(), rq.url());
                    let response = tiny_http::Response::from_string(body.as_str())
                        .with_header(content_type.clone());
                    let _ = rq.respond(response);
                    if let Some(mut f) = log.as_deref() {
                        let _ = f.write_all(line.as_bytes());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
