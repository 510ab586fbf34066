//! The man pages and shell completions of dlm-rs's programs, made from
//! the same clap definitions the programs parse their arguments with, so
//! that they cannot drift apart.
//!
//! - man pages: `dlm(1)` and one page per subcommand (`dlm-lock(1)`,
//!   `dlm-daemon-stop(1)`, ...), `dlmd(8)` and `dlm-controld(8)`;
//! - completions for bash, zsh and fish, of each program.
//!
//! The `dlm-man` program writes them: `dlm-man man DIR`,
//! `dlm-man completions DIR`.
#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// A program, its clap definition and its man section.
pub struct Program {
    /// The program's name.
    pub name: &'static str,
    /// Its man page section: 1 for users' commands, 8 for daemons.
    pub section: &'static str,
    /// Its clap definition.
    pub command: fn() -> clap::Command,
}

/// The programs dlm-rs installs.
pub const PROGRAMS: [Program; 3] = [
    Program {
        name: "dlm",
        section: "1",
        command: dlm_cli::command,
    },
    Program {
        name: "dlmd",
        section: "8",
        command: dlmd::cli::command,
    },
    Program {
        name: "dlm-controld",
        section: "8",
        command: dlm_controld::cli::command,
    },
];

/// The shells completions are made for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The pages of `cmd` (named `name`) and of its visible subcommands, as
/// (file name, roff text), parents first.
fn pages(cmd: clap::Command, name: &str, section: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd
        .name(name.to_string())
        .bin_name(name.replace('-', " "))
        .disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_string())
        .section(section)
        .manual("dlm-rs")
        .source(format!("dlm-rs {}", env!("CARGO_PKG_VERSION")))
        .render(&mut text)?;
    out.push((format!("{name}.{section}"), keep_layout(&text)));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        out.extend(pages(sub.clone(), &sub_name, section)?);
    }
    Ok(out)
}

/// The text after the options (clap's `after_help`, which clap_mangen
/// puts in an `EXTRA` section) is laid out for a terminal already, with
/// its tables and indented paragraphs: keep its lines as they are (`.nf`)
/// rather than let roff fill them, under the heading `DETAILS`.
fn keep_layout(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_extra = false;
    for line in text.lines() {
        if line.starts_with(".SH ") && in_extra {
            out.push_str(".fi\n");
            in_extra = false;
        }
        if line == ".SH EXTRA" {
            out.push_str(".SH DETAILS\n.nf\n");
            in_extra = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if in_extra {
        out.push_str(".fi\n");
    }
    out.into_bytes()
}

/// Every man page, as (file name, roff text).
pub fn man_pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for p in &PROGRAMS {
        out.extend(pages((p.command)(), p.name, p.section)?);
    }
    Ok(out)
}

/// Write every man page into `dir`; returns the files written.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (file, text) in man_pages()? {
        let path = dir.join(file);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// The file name a completion script of `program` for `shell` is
/// installed under: `dlm` (bash), `_dlm` (zsh), `dlm.fish` (fish).
pub fn completion_file(shell: Shell, program: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{program}"),
        Shell::Fish => format!("{program}.fish"),
        _ => program.to_string(),
    }
}

/// The completion script of `program` for `shell`.
pub fn completion(shell: Shell, p: &Program) -> Vec<u8> {
    let mut cmd = (p.command)();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, p.name, &mut out);
    out
}

/// Write every completion script into `dir/<shell>/`; returns the files
/// written.
pub fn write_completions(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for shell in SHELLS {
        let sub = dir.join(shell.to_string());
        std::fs::create_dir_all(&sub)?;
        for p in &PROGRAMS {
            let path = sub.join(completion_file(shell, p.name));
            std::fs::write(&path, completion(shell, p))?;
            written.push(path);
        }
    }
    Ok(written)
}
