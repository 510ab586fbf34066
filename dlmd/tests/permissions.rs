//! Access control: who may manage lockspaces, who may open them, and who
//! a per-user daemon serves. Needs root (to run a helper as another uid);
//! skipped otherwise.
#![forbid(unsafe_code)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use dlm_proto::{Errno, LockFlags as F, LockMode as M};

const NOBODY: u32 = 65534;

macro_rules! skip_unless_possible {
    () => {
        if let Some(why) = users::cannot_switch_users() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn probe(socket: &Path, ls: &str) -> Vec<String> {
    let sock = socket.to_str().expect("utf-8 path");
    let (_p, out) = spawn_helper("probe", &[sock, ls], Some(NOBODY));
    std::iter::from_fn(|| out.line()).collect()
}

#[test]
fn lockspace_modes_and_admin_rights_on_the_system_daemon() {
    skip_unless_possible!();
    let d = Daemon::start_with(&["--system"]);
    let sock_mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(sock_mode & 0o777, 0o666, "the system socket is open to all");
    let (_ctl, mut ls, minor) = d.lockspace("secret");
    let lkid = ls.lock(&req(M::Ex, b"r", F::empty()));
    assert_eq!(ls.wait_ast().status, 0);
    let eperm = neg(Errno::EPERM);
    let eacces = neg(Errno::EACCES);
    assert_eq!(
        probe(&d.socket, "secret"),
        [
            "hello 0".to_string(),
            format!("create {eperm}"),
            format!("open {eacces}"),
            format!("query {eacces}"),
        ],
        "0600 keeps uid {NOBODY} out; only root creates"
    );
    let chmod =
        |c: &mut Client, mode: u32| c.call(dlm_proto::wire::Kind::Chmod, &mode.to_le_bytes());
    assert_eq!(chmod(&mut ls, 0o666), 0);
    assert_eq!(
        probe(&d.socket, "secret"),
        [
            "hello 0".to_string(),
            format!("create {eperm}"),
            format!("open {minor}"),
            "query 1".to_string(),
        ],
        "0666 lets everyone in"
    );
    let info = ls.lockspaces();
    assert_eq!((info[0].mode, info[0].uid), (0o666, 0));
    assert!(ls.locks("secret").iter().any(|l| i64::from(l.lkid) == lkid));
    let log = d.log_text();
    assert!(
        log.contains("may not open lockspace secret"),
        "logged:\n{log}"
    );
}

/// A lockspace's group permission counts for a peer in that group as a
/// supplementary group (`useradd -G`), as it would on a device node; not
/// for a peer in neither.
#[test]
fn supplementary_groups_get_the_group_permission() {
    skip_unless_possible!();
    let team = users::TestGroup::create("team");
    let member = users::TestUser::create("m", &[&team.name]);
    let outsider = users::TestUser::create("o", &[]);
    assert_ne!(member.gid, team.gid, "the group is a supplementary one");
    let d = Daemon::start_with(&["--system"]);
    let sock = d.socket.to_str().expect("utf-8 path").to_string();
    // Root, with the team as its primary group, makes a 0660 lockspace:
    // its group is the team.
    let (_creator, out) = spawn_helper_ids("create", &[&sock, "team-ls", "660"], 0, team.gid);
    let created = out.line().expect("the creator answers");
    let minor: i64 = created
        .strip_prefix("created ")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{created}"));
    let info = d.control().lockspaces();
    assert_eq!((info[0].gid, info[0].mode), (team.gid, 0o660));
    let eperm = neg(Errno::EPERM);
    let eacces = neg(Errno::EACCES);
    let probe_as = |u: &users::TestUser| -> Vec<String> {
        let (_p, out) = spawn_helper_as("probe", &[&sock, "team-ls"], u);
        std::iter::from_fn(|| out.line()).collect()
    };
    assert_eq!(
        probe_as(&member),
        [
            "hello 0".to_string(),
            format!("create {eperm}"),
            format!("open {minor}"),
            "query 0".to_string(),
        ],
        "uid {} is in group {} as a supplementary group",
        member.uid,
        team.gid
    );
    assert_eq!(
        probe_as(&outsider),
        [
            "hello 0".to_string(),
            format!("create {eperm}"),
            format!("open {eacces}"),
            format!("query {eacces}"),
        ],
        "uid {} is not in group {}",
        outsider.uid,
        team.gid
    );
}

/// On the system daemon a uid other than root lists only the lockspaces
/// it may open; root lists all.
#[test]
fn unprivileged_users_list_only_what_they_may_open() {
    skip_unless_possible!();
    let team = users::TestGroup::create("seers");
    let member = users::TestUser::create("s", &[&team.name]);
    let outsider = users::TestUser::create("t", &[]);
    let d = Daemon::start_with(&["--system"]);
    let sock = d.socket.to_str().expect("utf-8 path").to_string();
    let chmod =
        |c: &mut Client, mode: u32| c.call(dlm_proto::wire::Kind::Chmod, &mode.to_le_bytes());
    let (_c1, mut open, _) = d.lockspace("everyone");
    assert_eq!(chmod(&mut open, 0o666), 0);
    let (_c2, _secret, _) = d.lockspace("secret");
    let (_creator, out) = spawn_helper_ids("create", &[&sock, "team-only", "660"], 0, team.gid);
    assert!(out.line().is_some_and(|l| l.starts_with("created ")));
    let list_as = |u: &users::TestUser| {
        let (_p, out) = spawn_helper_as("list", &[&sock], u);
        out.line().expect("the helper answers")
    };
    assert_eq!(list_as(&outsider), "lockspaces everyone");
    assert_eq!(list_as(&member), "lockspaces everyone,team-only");
    let mut names: Vec<String> = d
        .control()
        .lockspaces()
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    assert_eq!(names, ["everyone", "secret", "team-only"], "root sees all");
}

#[test]
fn a_user_daemon_serves_only_its_user() {
    skip_unless_possible!();
    let d = Daemon::start_with(&["--user"]);
    let sock_mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(sock_mode & 0o777, 0o600, "a per-user socket is private");
    // Open the socket itself up, to check the daemon's own refusal.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert_eq!(
        probe(&d.socket, "any"),
        ["hello closed".to_string()],
        "uid {NOBODY} is turned away"
    );
    let mut ctl = d.control();
    assert!(
        ctl.create("mine", 0) >= 0,
        "root, the daemon's user, is served"
    );
    let log = d.log_text();
    assert!(log.contains("refused a connection"), "logged:\n{log}");
    assert!(
        log.contains(&format!("uid {NOBODY}")),
        "with the uid:\n{log}"
    );
}
