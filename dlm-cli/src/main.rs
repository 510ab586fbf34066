//! `dlm`: the operator's command for the Linux DLM and its fallback. The
//! work is done in the `dlm_cli` library, which the man page and
//! completion generator (`dlm-man`) reads the same definitions from.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    dlm_cli::main()
}
