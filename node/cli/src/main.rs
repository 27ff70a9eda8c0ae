//! The `drakkar` binary: see `drakkar --help` and `docs/api.md`.

/// mimalloc instead of the system allocator: malloc/free was 8-15 % of a node's CPU with glibc's
/// (docs/performance.md). Only the binary sets it; the library leaves the choice to its users.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    drakkar_cli::cli::main()
}
