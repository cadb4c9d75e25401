//! The `basalt` binary.

fn main() -> std::process::ExitCode {
    node::cli::main()
}
