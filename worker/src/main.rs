//! `orion-worker`: see `orion_worker::cli` for the commands.
#![forbid(unsafe_code)]

fn main() {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(orion_worker::cli::main(args));
}
