//! Real users and groups for a test: created with `useradd`/`groupadd`
//! under names unique to the test process (`dlmtest-<pid>-<tag>`), and
//! removed, by those names, when dropped. Creating them needs root; the
//! tests that use them skip (saying why) otherwise.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// Why helpers cannot run as other users here, if they cannot.
pub fn cannot_switch_users() -> Option<String> {
    if !rustix::process::getuid().is_root() {
        return Some("not root: cannot create users or run a helper as another uid".into());
    }
    let exe = std::env::current_exe().ok()?;
    let mode = std::fs::metadata(&exe).ok()?.permissions().mode();
    if mode & 0o005 != 0o005 {
        return Some(format!("{} is not executable by others", exe.display()));
    }
    for dir in exe.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        if m.permissions().mode() & 0o001 == 0 {
            return Some(format!("{} is not searchable by others", dir.display()));
        }
    }
    None
}

/// Run a user-database command, retrying while another process holds
/// the database's lock (useradd says "cannot lock"; exit status 10 for
/// userdel, 1 for useradd).
fn admin(cmd: &str, args: &[&str]) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..100 {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {cmd}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if !last.contains("lock") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{cmd} {}: {last}", args.join(" ")))
}

fn unique(tag: &str) -> String {
    format!("dlmtest-{}-{tag}", std::process::id())
}

fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, name])
        .output()
        .expect("run id");
    assert!(out.status.success(), "id {flag} {name}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

/// A group, deleted when dropped.
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

impl TestGroup {
    pub fn create(tag: &str) -> TestGroup {
        let name = unique(tag);
        admin("groupadd", &[&name]).expect("groupadd");
        let out = Command::new("getent")
            .args(["group", &name])
            .output()
            .expect("getent");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let gid = line
            .split(':')
            .nth(2)
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("no gid for {name}: {line}"));
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        if let Err(e) = admin("groupdel", &[&self.name]) {
            eprintln!("cleaning up: {e}");
        }
    }
}

/// A user without a home directory or login shell, deleted when dropped
/// (with the group of its name that `useradd` may have made for it).
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// User `dlmtest-<pid>-<tag>`, also a member of `groups` (names).
    pub fn create(tag: &str, groups: &[&str]) -> TestUser {
        let name = unique(tag);
        let mut args = vec!["-M", "-s", "/usr/sbin/nologin"];
        let list = groups.join(",");
        if !groups.is_empty() {
            args.extend(["-G", &list]);
        }
        args.push(&name);
        admin("useradd", &args).expect("useradd");
        let (uid, gid) = (id_of("-u", &name), id_of("-g", &name));
        TestUser { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Processes of the user are the test's, stopped before this runs.
        if let Err(e) = admin("userdel", &[&self.name]) {
            eprintln!("cleaning up: {e}");
        }
    }
}
