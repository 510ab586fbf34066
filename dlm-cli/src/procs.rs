//! What `/proc` says of the processes that asked for locks, for `dlm
//! locks`.
//!
//! The DLM records the pid of the process that made a lock's last
//! request. For `dlm lock` that is dlm itself, while the lock is held for
//! its command: the command inherits a descriptor of what owns the lock
//! (its number in `DLM_LOCK_FD`). So for a process named `dlm`, its
//! children are looked at, and one whose `DLM_LOCK_FD` names a descriptor
//! that is also open in dlm is shown as `inherited by PID (NAME)`; this
//! needs to read the child's environment, which only its own user and
//! root may: otherwise the children are only named. Nothing here is
//! guessed: what cannot be read is left out.

use std::collections::{HashMap, HashSet};

/// A look at `/proc`, made once per listing.
pub struct Table {
    /// Children of each pid.
    children: HashMap<u32, Vec<u32>>,
    /// Descriptions made so far.
    cache: HashMap<u32, String>,
}

/// A process's name (`comm`), if it still exists.
fn comm(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// The parent pid from `/proc/PID/stat`: the field after the `)` that
/// ends the name (a name may contain spaces and parentheses).
fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Where each open descriptor of `pid` leads (`socket:[N]`, a path).
fn fd_targets(pid: u32) -> HashSet<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

/// Where `pid`'s `DLM_LOCK_FD` leads, if it has one and it can be read.
fn lock_fd_target(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let fd = env
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"DLM_LOCK_FD="))?;
    let fd: u32 = std::str::from_utf8(fd).ok()?.parse().ok()?;
    let t = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(t.to_string_lossy().into_owned())
}

impl Table {
    /// Read the parent of every process.
    pub fn read() -> Table {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(parent) = ppid(pid) {
                    children.entry(parent).or_default().push(pid);
                }
            }
        }
        for c in children.values_mut() {
            c.sort_unstable();
        }
        Table {
            children,
            cache: HashMap::new(),
        }
    }

    /// What `pid` is now: its name, and for `dlm` who inherited the lock.
    pub fn describe(&mut self, pid: u32) -> String {
        if let Some(s) = self.cache.get(&pid) {
            return s.clone();
        }
        let s = self.look(pid);
        self.cache.insert(pid, s.clone());
        s
    }

    fn look(&self, pid: u32) -> String {
        if pid == 0 {
            return "-".to_string();
        }
        let Some(name) = comm(pid) else {
            return "exited".to_string();
        };
        if name != "dlm" {
            return name;
        }
        let kids = self.children.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
        if kids.is_empty() {
            return name;
        }
        let ours = fd_targets(pid);
        let mut inherited = Vec::new();
        let mut others = Vec::new();
        for &kid in kids {
            let kid_name = comm(kid).unwrap_or_else(|| "?".to_string());
            match lock_fd_target(kid) {
                Some(t) if ours.contains(&t) => inherited.push(format!("{kid} ({kid_name})")),
                _ => others.push(format!("{kid} ({kid_name})")),
            }
        }
        if !inherited.is_empty() {
            format!("dlm; inherited by {}", inherited.join(", "))
        } else {
            format!("dlm; child {}", others.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_described_by_its_name() {
        let me = std::process::id();
        let mut t = Table::read();
        let name = comm(me).expect("our own comm");
        assert!(t.describe(me).starts_with(&name), "{}", t.describe(me));
        assert_eq!(
            ppid(me),
            rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
        );
    }

    #[test]
    fn a_pid_that_is_gone_says_so() {
        let mut t = Table::read();
        // Above the largest pid Linux hands out (4194304).
        assert_eq!(t.describe(4_194_305), "exited");
        assert_eq!(t.describe(0), "-");
    }
}
