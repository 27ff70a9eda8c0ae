//! The `drakkar` binary: see `drakkar --help` and `docs/api.md`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
