//! The lifecycle `orion_shared::service::serve` owns, seen from outside: the
//! open-files step logs after logging has started (it used to run before
//! and its warning was lost), and a stop with the most handler threads
//! allowed joins every one of them and still exits 0 at once.
mod common;

use std::time::{Duration, Instant};

use common::*;

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn the_open_files_step_logs_after_logging_has_started() {
    // Soft 1,024, hard 4,096: the step raises the soft limit to the hard one.
    let mut api = ServiceProcess::start_with(&SPEC, &[], |cmd| {
        limit_child_open_files(cmd, 1024, 4096);
    });
    let lines = {
        api.signal(libc::SIGTERM);
        let (status, _) = api.wait_exit(Duration::from_secs(10)).expect("exit");
        assert_eq!(status.code(), Some(0));
        api.wait_output_closed(Duration::from_secs(10));
        api.stdout_lines()
    };
    let at = |message: &str| {
        lines
            .iter()
            .position(|l| json(l)["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in:\n{}", lines.join("\n")))
    };
    let budget = json(&lines[at("open-files budget")]);
    assert_eq!(budget["level"], "info");
    assert_eq!(budget["service"], "api");
    assert_eq!(budget["open_files_limit"], 4096, "{budget}");
    // One descriptor per connection, two per link to tiny_http (one per
    // handler thread), 64 spare.
    let listening = json(&lines[at("api listening")]);
    let links = listening["threads"].as_u64().unwrap().clamp(1, 16);
    assert_eq!(budget["needed"], 512 + 2 * links + 64, "{budget}");
    assert!(at("open-files budget") < at("api listening"));
    assert_eq!(listening["open_files_limit"], 4096);
}

#[test]
fn a_stop_joins_every_one_of_256_handler_threads_and_exits_0_at_once() {
    let mut api = ServiceProcess::start(&SPEC, &[("HTTP_THREADS", "256")]);
    // Requests spread over the handlers, each on its own connection
    // (`Connection: close`: the subject is the handler threads, not the
    // drain of idle connections, which shutdown.rs covers).
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let addr = api.addr();
            std::thread::spawn(move || {
                for _ in 0..4 {
                    assert_eq!(
                        orion_shared::testing::http_get(addr, "/health")
                            .unwrap()
                            .status,
                        200
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let t0 = Instant::now();
    api.signal(libc::SIGTERM);
    let (status, _) = api.wait_exit(Duration::from_secs(10)).expect("exit");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0));
    // A drain that waited for SHUTDOWN_TIMEOUT (10 s) would take longer.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let stopped = json(&api.wait_log(Duration::from_secs(5), |l| {
        l.contains("\"message\":\"api stopped\"")
    }));
    assert_eq!(stopped["exit_code"], 0, "{stopped}");
    assert_eq!(stopped["drained"], true, "{stopped}");
    assert_eq!(stopped["handler_threads"], 256, "{stopped}");
    assert_eq!(stopped["handlers_joined"], 256, "{stopped}");
}
