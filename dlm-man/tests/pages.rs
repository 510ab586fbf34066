//! The man pages and completions name every subcommand and option of the
//! programs' clap definitions, and the pages render with man(1).
#![forbid(unsafe_code)]

use std::process::Command;

use dlm_man::{completion, man_pages, PROGRAMS, SHELLS};

/// roff text as a reader sees the words: `\-` is a plain `-`.
fn plain(roff: &[u8]) -> String {
    String::from_utf8_lossy(roff).replace("\\-", "-")
}

/// Every visible long option of `cmd` (and `-h`/`--help`).
fn longs(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// Check `cmd`'s page and its subcommands' pages, recursively.
fn check(cmd: &clap::Command, page: &str, pages: &[(String, Vec<u8>)], section: &str) {
    let file = format!("{page}.{section}");
    let text = plain(
        &pages
            .iter()
            .find(|(f, _)| *f == file)
            .unwrap_or_else(|| panic!("no page {file}"))
            .1,
    );
    for opt in longs(cmd) {
        assert!(text.contains(&opt), "{file} lacks {opt}");
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_page = format!("{page}-{}", sub.get_name());
        assert!(text.contains(&sub_page), "{file} does not list {sub_page}");
        check(sub, &sub_page, pages, section);
    }
}

#[test]
fn every_subcommand_and_option_has_its_place_in_the_pages() {
    let pages = man_pages().expect("pages");
    for p in &PROGRAMS {
        let mut cmd = (p.command)();
        cmd.build();
        check(&cmd, p.name, &pages, p.section);
    }
    let names: Vec<&str> = pages.iter().map(|(f, _)| f.as_str()).collect();
    for want in [
        "dlm.1",
        "dlm-lock.1",
        "dlm-daemon-stop.1",
        "dlmd.8",
        "dlm-controld.8",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("bench-worker")),
        "hidden: {names:?}"
    );
    let lock = plain(
        &pages
            .iter()
            .find(|(f, _)| f == "dlm-lock.1")
            .expect("dlm-lock.1")
            .1,
    );
    assert!(
        lock.contains("77       permission denied"),
        "the exit table is in dlm-lock(1)"
    );
}

#[test]
fn completions_know_every_subcommand_and_option() {
    for shell in SHELLS {
        for p in &PROGRAMS {
            let text = String::from_utf8(completion(shell, p)).expect("UTF-8");
            let mut cmd = (p.command)();
            cmd.build();
            let mut stack = vec![cmd];
            while let Some(c) = stack.pop() {
                for opt in longs(&c) {
                    // fish names long options without their dashes.
                    let bare = opt.trim_start_matches('-');
                    assert!(
                        text.contains(bare),
                        "{shell} completion of {} lacks {opt}",
                        p.name
                    );
                }
                for sub in c.get_subcommands().filter(|s| !s.is_hide_set()) {
                    assert!(text.contains(sub.get_name()), "{shell}: {}", sub.get_name());
                    stack.push(sub.clone());
                }
            }
        }
    }
}

/// Text without man's overstrikes (`X\x08X` for bold, `_\x08X` for
/// underline).
fn unbold(s: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    for c in s.chars() {
        if c == '\x08' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn the_pages_render_without_warnings() {
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("SKIPPED the_pages_render_without_warnings: needs man (apt-get install man-db)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for path in dlm_man::write_man_pages(dir.path()).expect("write pages") {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .output()
            .expect("man -l");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", path.display());
        assert!(err.trim().is_empty(), "{}: {err}", path.display());
        let text = unbold(&String::from_utf8_lossy(&out.stdout));
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{}: {text}",
            path.display()
        );
    }
}
