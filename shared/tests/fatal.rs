//! `serve`'s fatal path, in-process (its own test binary: `serve` installs
//! the process's logger and signal handler): work that ends before a stop
//! is fatal, so the process exits 1 at once, to be restarted, instead of
//! living on without it.
use std::time::{Duration, Instant};

use orion_shared::config::Env;
use orion_shared::http::{Reply, Router};
use orion_shared::service::{serve, CommonConfig, Parts, Spec, Work, WorkEnd};

#[test]
fn work_that_ends_by_itself_makes_serve_exit_1_at_once() {
    let common = CommonConfig::from_env(&Env::from_pairs([
        ("LOG_LEVEL", "off"),
        // A delay and a timeout a graceful stop would wait for.
        ("SHUTDOWN_DELAY", "30s"),
    ]))
    .unwrap();
    let spec = Spec {
        name: "test",
        binary: "test",
        port: 0,
        listening: "test listening",
    };
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let code = serve(&common, spec, |_| Parts {
            router: Router::new().get("/", || Reply::json(200, &serde_json::json!({}))),
            request_metrics: None,
            work: Some(Work {
                name: "test-work",
                run: Box::new(|| {
                    std::thread::sleep(Duration::from_millis(200));
                    WorkEnd {
                        ok: true,
                        how: "returned",
                    }
                }),
                stop: Box::new(|| {}),
            }),
        });
        let _ = tx.send(code);
    });
    // Without the fatal path it would wait for a signal that never comes.
    let code = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("serve did not return after its work ended");
    assert_eq!(code, 1);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}
