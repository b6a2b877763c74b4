//! The serving layer in-process: a panicking handler answers 500, is counted,
//! and the server keeps serving.
use std::net::SocketAddr;
use std::time::Duration;

use orion_shared::http::{HttpConfig, Reply, RequestMetrics, Router, Server};
use orion_shared::shutdown::Shutdown;

// The services' test helpers, compiled into this test too (the `testing`
// feature is enabled only through the services' dev-dependencies); they
// name `crate::config`.
use orion_shared::config;
#[allow(dead_code)]
#[path = "../src/testing.rs"]
mod testing;
// What `testing.rs` reaches as `crate::http`.
#[allow(unused_imports)]
use orion_shared::http;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = testing::http_get(addr, path).unwrap();
    (r.status, r.text())
}

#[test]
fn a_panicking_handler_answers_500_and_the_server_lives_on() {
    let registry = orion_shared::metrics::new_registry("test");
    let metrics = RequestMetrics::register(&registry);
    let router = Router::new()
        .get("/boom", || panic!("handler exploded"))
        .get("/ok", || Reply::json(200, &serde_json::json!({"ok": true})));
    let server = Server::start(
        &HttpConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
        router,
        Some(metrics),
        &registry,
        Shutdown::new(),
    )
    .unwrap();
    let addr = server.local_addr();
    for _ in 0..3 {
        let (status, body) = get(addr, "/boom");
        assert_eq!(status, 500);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 500);
        assert_eq!(get(addr, "/ok").0, 200);
    }
    // A request is counted after its answer is written: poll briefly.
    let want = r#"http_requests_total{method="GET",route="/boom",status_code="500"} 3"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = String::from_utf8(orion_shared::metrics::encode(&registry)).unwrap();
        if text.contains(want) || std::time::Instant::now() >= deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(text.contains("http_handler_panics_total 3"), "{text}");
    assert!(text.contains(want), "{text}");
}
