//! orion-api command line: the service by default, plus `healthcheck`,
//! `--version` and `--help`.
#![forbid(unsafe_code)]

/// mimalloc instead of musl's allocator. musl's malloc serialises every
/// allocation and free of every thread on one lock, and tiny_http allocates a
/// lot per request on two threads (the connection's and a handler's): under
/// load a third of the API's CPU went to that lock's futex wake-ups. mimalloc
/// keeps per-thread heaps and frees across threads without a lock (figures in
/// README, Benchmarks). The worker keeps musl's: it is not throughput-bound.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
orion-api — the Orion HTTP API

USAGE:
    orion-api                 run the service (configured by environment variables)
    orion-api healthcheck     GET http://127.0.0.1:$PORT/health; exit 0 if 200, else 1 (within 2 s)
    orion-api --version       print version and commit
    orion-api --help          print this help

ENVIRONMENT (defaults in brackets):
    PORT [8000]  NODE_ENV|APP_ENV [development]  LOG_LEVEL [info]
    SHUTDOWN_DELAY [0s]  SHUTDOWN_TIMEOUT [10s]
    HTTP_THREADS [CPUs, 2-16]  HTTP_HEADER_TIMEOUT [10s]  HTTP_IDLE_TIMEOUT [75s]
    HTTP_MAX_CONNECTIONS [512]  HTTP_SEND_TIMEOUT [10s]  HTTP_PIPELINE_DEPTH [16]
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None => orion_api::run(),
        Some("--version" | "-V" | "version") => {
            println!("{}", orion_shared::build_info::version_line("orion-api"));
            0
        }
        Some("--help" | "-h" | "help") => {
            print!("{HELP}");
            0
        }
        Some("healthcheck") => {
            let env = orion_shared::config::Env::from_process();
            let port = orion_shared::config::exit_on_error("orion-api", env.port("PORT", 8000));
            orion_shared::healthcheck::run(port, "/health")
        }
        Some(other) => {
            eprintln!("orion-api: unknown argument {other:?}; see --help");
            2
        }
    };
    std::process::exit(code);
}
