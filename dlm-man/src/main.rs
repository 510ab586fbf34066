//! `dlm-man man DIR` writes the man pages into DIR; `dlm-man completions
//! DIR` writes the bash, zsh and fish completions into DIR/bash, DIR/zsh
//! and DIR/fish. See the `dlm_man` library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: dlm-man man DIR | dlm-man completions DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, dir) = match args.as_slice() {
        [what, dir] => (what.as_str(), PathBuf::from(dir)),
        [h] if h == "-h" || h == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(64);
        }
    };
    let written = match what {
        "man" => dlm_man::write_man_pages(&dir),
        "completions" => dlm_man::write_completions(&dir),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(64);
        }
    };
    match written {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dlm-man: cannot write into {}: {e}", dir.display());
            ExitCode::from(73)
        }
    }
}
