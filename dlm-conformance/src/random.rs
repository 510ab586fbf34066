//! Seeded random scenarios for differential runs (kernel against engine).
//!
//! A seed deterministically gives a script in the scenario language, so a
//! failing seed prints a script that can be saved as a scenario file and
//! replayed. [`shrink`] looks for the smallest failing script.

use crate::{run, Scenario, Target};

/// A small, deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const MODES: [&str; 6] = ["NL", "CR", "CW", "PR", "PW", "EX"];
const OWNERS: [&str; 3] = ["A", "B", "C"];
const RESOURCES: [&str; 3] = ["r0", "r1", "r2"];

/// The script for `seed`: `len` operations over three owners and three
/// resources, with random flags.
///
/// Linux 6.1 oopses (a double `list_del`) when a lock that is on no queue
/// but has not ended is unlocked: an orphan whose waiting request was
/// cancelled when its owner closed, or an orphan that another owner
/// unlocked (its completion is never queued, so it never ends). The
/// sequences keep clear of it: `PERSISTENT` new requests also carry
/// `NOQUEUE`, sequences that use `PERSISTENT` never purge, and in them a
/// close retires every label taken before it, so no operation can reach an
/// orphan (by its label, or by an older label whose lock id it reuses).
pub fn script(seed: u64, len: usize) -> String {
    let mut r = Rng::new(seed);
    let persistent_mode = r.chance(50);
    let mut out = String::new();
    let mut open = [false; 3];
    let mut labels = 0usize;
    let mut retired = 0usize;
    for o in 0..3 {
        out.push_str(&format!("open {}\n", OWNERS[o]));
        open[o] = true;
    }
    for _ in 0..len {
        let o = r.below(3);
        let who = OWNERS[o];
        if !open[o] {
            out.push_str(&format!("open {who}\n"));
            open[o] = true;
            continue;
        }
        let mut flags = Vec::new();
        let roll = r.below(100);
        let usable = labels - retired;
        let lbl = if usable > 0 {
            retired + 1 + r.below(usable)
        } else {
            0
        };
        let line = match roll {
            0..=29 => {
                labels += 1;
                let mode = r.pick(&MODES);
                for (f, p) in [
                    ("NOQUEUE", 15),
                    ("VALBLK", 30),
                    ("HEADQUE", 5),
                    ("NOORDER", 5),
                    ("ALTPR", 5),
                    ("ALTCW", 5),
                    ("NOQUEUEBAST", 5),
                ] {
                    if r.chance(p) {
                        flags.push(f);
                    }
                }
                if mode == "NL" && r.chance(20) {
                    flags.retain(|f| *f != "NOQUEUE");
                    flags.push("EXPEDITE");
                }
                if persistent_mode && r.chance(30) {
                    flags.push("PERSISTENT");
                    if !flags.contains(&"NOQUEUE") && !flags.contains(&"EXPEDITE") {
                        flags.push("NOQUEUE");
                    }
                }
                let nobast = if r.chance(15) { " nobast" } else { "" };
                format!(
                    "lock {who} {mode} {} {}{nobast} -> L{labels}",
                    r.pick(&RESOURCES),
                    flags.join(" ")
                )
            }
            30..=54 if lbl > 0 => {
                let mode = r.pick(&MODES);
                for (f, p) in [
                    ("NOQUEUE", 15),
                    ("VALBLK", 40),
                    ("IVVALBLK", 5),
                    ("QUECVT", 10),
                    ("CONVDEADLK", 10),
                    ("NODLCKWT", 5),
                    ("ALTPR", 3),
                    ("ALTCW", 3),
                ] {
                    if r.chance(p) {
                        flags.push(f);
                    }
                }
                let lvb = if r.chance(40) {
                    format!(" lvb=v{}", r.below(100))
                } else {
                    String::new()
                };
                format!("convert {who} L{lbl} {mode} {}{lvb}", flags.join(" "))
            }
            55..=66 if lbl > 0 => {
                for (f, p) in [("VALBLK", 30), ("IVVALBLK", 5), ("FORCEUNLOCK", 10)] {
                    if r.chance(p) {
                        flags.push(f);
                    }
                }
                let lvb = if r.chance(40) {
                    format!(" lvb=u{}", r.below(100))
                } else {
                    String::new()
                };
                format!("unlock {who} L{lbl} {}{lvb}", flags.join(" "))
            }
            67..=72 if lbl > 0 => format!("cancel {who} L{lbl}"),
            73..=75 if lbl > 0 => format!("deadlock {who} L{lbl}"),
            76..=77 if !persistent_mode => {
                let pid = if r.chance(50) { "self" } else { "0" };
                format!("purge {who} 0 {pid}")
            }
            78..=80 => {
                open[o] = false;
                if persistent_mode {
                    retired = labels;
                }
                format!("close {who}")
            }
            _ => format!("read {who}"),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (o, w) in OWNERS.iter().enumerate() {
        if open[o] {
            out.push_str(&format!("read {w}\n"));
        }
    }
    out
}

/// Run `sc` on two fresh targets and return the first difference, if any.
pub fn differ(
    sc: &Scenario,
    make_a: &mut dyn FnMut() -> Result<Box<dyn Target>, String>,
    make_b: &mut dyn FnMut() -> Result<Box<dyn Target>, String>,
) -> Result<Option<String>, String> {
    let ta = run(sc, make_a()?.as_mut())?;
    let tb = run(sc, make_b()?.as_mut())?;
    Ok(crate::diff(&ta, &tb))
}

/// Drop lines from a failing script while it still fails; returns the
/// smallest failing script found.
pub fn shrink(
    text: &str,
    make_a: &mut dyn FnMut() -> Result<Box<dyn Target>, String>,
    make_b: &mut dyn FnMut() -> Result<Box<dyn Target>, String>,
) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let fails = |ls: &[String],
                 a: &mut dyn FnMut() -> Result<Box<dyn Target>, String>,
                 b: &mut dyn FnMut() -> Result<Box<dyn Target>, String>| {
        let t = ls.join("\n");
        match Scenario::parse("shrink", &t) {
            Ok(sc) => matches!(differ(&sc, a, b), Ok(Some(_))),
            Err(_) => false,
        }
    };
    let mut chunk = lines.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        let mut progress = false;
        while i < lines.len() {
            let mut cand = lines.clone();
            let end = (i + chunk).min(cand.len());
            cand.drain(i..end);
            if !cand.is_empty() && fails(&cand, make_a, make_b) {
                lines = cand;
                progress = true;
            } else {
                i += chunk;
            }
        }
        if !progress {
            chunk /= 2;
        }
    }
    lines.join("\n")
}
