//! A request with callbacks on a lockspace where nothing delivers
//! callbacks logs one warning; with an event loop, dispatch() or a polled
//! fd, none. Runs on a private dlmd.

use std::sync::Mutex;

use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName};

/// Every warning logged in this test binary.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.level() <= log::Level::Warn {
            WARNINGS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn warnings_about(ls: &str) -> usize {
    let w = WARNINGS.lock().unwrap();
    w.iter()
        .filter(|m| m.contains(&format!("lockspace {ls}:")) && m.contains("nothing delivers"))
        .count()
}

#[test]
fn callbacks_without_delivery_warn_once() {
    log::set_logger(&Capture).expect("the only logger");
    log::set_max_level(log::LevelFilter::Warn);
    let _daemon = dlm_testkit::PrivateDaemon::start();
    let dlm = Dlm::open().unwrap();
    let made = |n: &str| {
        dlm.create_lockspace(
            &LockspaceName::new(n).unwrap(),
            LockspaceFlags::empty(),
            0o600,
        )
        .unwrap()
    };
    let res = |n: &str| ResourceName::new(n).unwrap();

    // Nothing delivers: one warning, however many requests.
    let quiet = made("quiet");
    for r in ["a", "b", "c"] {
        quiet
            .request(LockRequest::new(res(r), LockMode::Ex), |_, _| {})
            .unwrap();
    }
    assert_eq!(warnings_about("quiet"), 1);
    // A waiting call never warns, with callbacks for later or without
    // (`dlm lock` sets up delivery once it has the lock).
    let plain = made("plain");
    let l = plain
        .lock(LockRequest::new(res("a"), LockMode::Ex))
        .unwrap();
    drop(l);
    let later = plain
        .lock(
            LockRequest::new(res("b"), LockMode::Ex)
                .on_lost(|_, _| {})
                .on_blocking(|_, _| {}),
        )
        .unwrap();
    drop(later);
    assert_eq!(warnings_about("plain"), 0);
    // An event loop, dispatch() or a polled fd first: no warning.
    let looped = made("looped");
    looped.start_event_loop().unwrap();
    looped
        .request(LockRequest::new(res("a"), LockMode::Ex), |_, _| {})
        .unwrap();
    let dispatched = made("dispatched");
    dispatched.dispatch().unwrap();
    dispatched
        .request(LockRequest::new(res("a"), LockMode::Ex), |_, _| {})
        .unwrap();
    let polled = made("polled");
    let _fd = std::os::fd::AsRawFd::as_raw_fd(&polled);
    polled
        .request(
            LockRequest::new(res("a"), LockMode::Ex).on_blocking(|_, _| {}),
            |_, _| {},
        )
        .unwrap();
    for ls in ["looped", "dispatched", "polled"] {
        assert_eq!(warnings_about(ls), 0, "{ls}");
    }
}
