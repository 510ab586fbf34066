//! `dlm-conformance`: run the scenarios against a target.
//!
//! ```text
//! dlm-conformance run --target engine|kernel|daemon=SOCKET [--golden DIR] [--write DIR]
//!                     [--model 6.1|6.12]
//! dlm-conformance random --target kernel|daemon=SOCKET [--seeds N] [--start S] [--len L]
//!                        [--max-failures F] [--model 6.1|6.12]
//! ```
//!
//! `--model` is the kernel the in-process engine follows (the `engine`
//! target, and the other side of `random`); by default the running
//! kernel's series when it is 6.1 or 6.12, else 6.12.
//!
//! `run` without `--golden`/`--write` prints every trace between
//! `=== trace NAME ===` and `=== end NAME ===` lines, which is how the
//! kernel's traces leave the QEMU guest. `random` runs seeded random
//! scripts on the target and on the in-process engine and compares them;
//! a failure prints the seed and the smallest failing script found, and
//! the run goes on until `F` seeds (default 1) have failed. The exit status
//! is 0 only if everything matched.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use dlm_conformance::random::{script, shrink};
use dlm_conformance::{
    diff, run, running_kernel_model, scenarios, DeviceTarget, EngineTarget, KernelModel, Scenario,
    Target,
};

enum Which {
    Engine(KernelModel),
    Kernel,
    Daemon(PathBuf),
}

fn make(which: &Which, tag: &str) -> Result<Box<dyn Target>, String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("c{}-{tag}-{n}", std::process::id() % 100_000);
    let name: String = name.chars().take(60).collect();
    Ok(match which {
        Which::Engine(m) => Box::new(EngineTarget::with_model(*m)),
        Which::Kernel => Box::new(DeviceTarget::kernel(&name)?),
        Which::Daemon(p) => Box::new(DeviceTarget::daemon(p, &name)?),
    })
}

fn arg_value(args: &[String], key: &str) -> Option<String> {
    args.iter()
        .position(|a| a == key)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dlm-conformance: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: &[String]) -> Result<bool, String> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let target = arg_value(args, "--target").unwrap_or_else(|| "engine".into());
    let model = match arg_value(args, "--model") {
        Some(m) => m.parse::<KernelModel>().map_err(|e| e.to_string())?,
        None => running_kernel_model(),
    };
    let which = match target.as_str() {
        "engine" => Which::Engine(model),
        "kernel" => Which::Kernel,
        t => match t.strip_prefix("daemon=") {
            Some(p) => Which::Daemon(PathBuf::from(p)),
            None => return Err(format!("unknown target {t:?}")),
        },
    };
    match cmd {
        "run" => {
            let golden = arg_value(args, "--golden").map(PathBuf::from);
            let write = arg_value(args, "--write").map(PathBuf::from);
            let mut ok = true;
            for sc in scenarios()? {
                let mut t = make(&which, &sc.name)?;
                let trace = run(&sc, t.as_mut())?;
                drop(t);
                if let Some(dir) = &write {
                    std::fs::write(dir.join(format!("{}.trace", sc.name)), &trace)
                        .map_err(|e| e.to_string())?;
                }
                match &golden {
                    Some(dir) => {
                        let path = dir.join(format!("{}.trace", sc.name));
                        let want = std::fs::read_to_string(&path)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        match diff(&want, &trace) {
                            None => println!("ok   {}", sc.name),
                            Some(d) => {
                                ok = false;
                                println!("FAIL {}\n{d}", sc.name);
                            }
                        }
                    }
                    None if write.is_none() => {
                        println!("=== trace {} ===\n{trace}=== end {} ===", sc.name, sc.name);
                    }
                    None => {}
                }
            }
            Ok(ok)
        }
        "random" => {
            let seeds: u64 = arg_value(args, "--seeds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(100);
            let start: u64 = arg_value(args, "--start")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            let len: usize = arg_value(args, "--len")
                .and_then(|s| s.parse().ok())
                .unwrap_or(40);
            let max_failures: usize = arg_value(args, "--max-failures")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1)
                .max(1);
            let mut a = || make(&which, "ra");
            let mut b = || make(&Which::Engine(model), "rb");
            let mut failed = Vec::new();
            let mut tried = 0u64;
            for seed in start..start + seeds {
                tried += 1;
                let text = script(seed, len);
                let sc = Scenario::parse(&format!("seed{seed}"), &text)?;
                let ta = run(&sc, a()?.as_mut())?;
                let tb = run(&sc, b()?.as_mut())?;
                if let Some(d) = diff(&ta, &tb) {
                    println!("random: seed {seed} differs (target against engine)\n{d}");
                    let small = shrink(&text, &mut a, &mut b);
                    println!("smallest failing script for seed {seed}:\n{small}");
                    failed.push(seed);
                    if failed.len() >= max_failures {
                        break;
                    }
                }
            }
            if failed.is_empty() {
                println!(
                    "random: {seeds} sequences of {len} operations matched ({start}..{}), engine model {model}",
                    start + seeds
                );
                return Ok(true);
            }
            let list: Vec<String> = failed.iter().map(u64::to_string).collect();
            println!(
                "random: {} of {tried} sequences of {len} operations differed (engine model {model}), seeds {}",
                failed.len(),
                list.join(" ")
            );
            Ok(false)
        }
        _ => {
            Err("usage: dlm-conformance run|random --target engine|kernel|daemon=SOCKET ...".into())
        }
    }
}
