//! orion-api command line: the service by default, plus `healthcheck`,
//! `--version` and `--help`.
#![forbid(unsafe_code)]

use orion_shared::config::{exit_on_error, render_vars, Env, EXIT_CODES_HELP, EXIT_CONFIG};

/// mimalloc instead of musl's allocator. musl's malloc serialises every
/// allocation and free of every thread on one lock, and tiny_http allocates a
/// lot per request on two threads (the connection's and a handler's): under
/// load a third of the API's CPU went to that lock's futex wake-ups. mimalloc
/// keeps per-thread heaps and frees across threads without a lock (figures in
/// docs/decisions/2026-11-26-mimalloc.md). The worker keeps musl's: it is not throughput-bound.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BINARY: &str = "orion-api";

const USAGE: &str = "\
orion-api: the Orion HTTP API (/health, /ready, /, /metrics on PORT).

Usage:
  orion-api                 run the service (configured by the environment below)
  orion-api healthcheck     exit 0 if http://127.0.0.1:$PORT/health answers 200
                            within 2 s, else 1 (for images without curl or wget)
  orion-api --version | -V  print version and commit
  orion-api --help | -h     print this help
A command takes no other arguments than these.

";

/// Read by the allocator itself, before `main`, unvalidated.
const ALLOCATOR_VARS: &str =
    "  The allocator also reads mimalloc's own MIMALLOC_* options, unchecked; leave them unset.\n";

/// `--help`: the usage, every variable the API reads (from [`orion_api::config::vars`], the
/// table its configuration is tested against) and the exit codes.
fn help() -> String {
    format!(
        "{USAGE}{}{ALLOCATOR_VARS}\n{EXIT_CODES_HELP}",
        render_vars(&orion_api::config::vars())
    )
}

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some((command, rest)) = args.split_first() else {
        std::process::exit(orion_api::run());
    };
    let usage_error = |why: String| -> ! {
        eprintln!("{BINARY}: usage error: {why}; see '{BINARY} --help'");
        std::process::exit(EXIT_CONFIG);
    };
    if let Some(extra) = rest.first() {
        usage_error(format!("unexpected argument {extra:?} after {command}"));
    }
    let code = match command.as_str() {
        "--version" | "-V" | "version" => {
            println!("{}", orion_shared::build_info::version_line(BINARY));
            0
        }
        "--help" | "-h" | "help" => {
            print!("{}", help());
            0
        }
        "healthcheck" => {
            let env = Env::from_process();
            let port = exit_on_error(BINARY, env.port("PORT", orion_api::config::DEFAULT_PORT));
            orion_shared::healthcheck::run(port, "/health")
        }
        other => usage_error(format!("unknown command {other:?}")),
    };
    std::process::exit(code);
}
