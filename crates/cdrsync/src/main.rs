//! The `cdrsync` binary: everything lives in the library's [`cdrsync::cli`].

fn main() -> std::process::ExitCode {
    cdrsync::cli::main()
}
