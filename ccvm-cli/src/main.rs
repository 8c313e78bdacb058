//! The `ccvm` executable: everything lives in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ccvm::run(std::env::args_os().skip(1).collect()))
}
