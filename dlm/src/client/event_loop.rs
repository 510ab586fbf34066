//! The event-loop thread, and [`Lockspace`] as a [`mio::event::Source`]:
//! both poll the lockspace's one fd.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use dlm_proto::error::Result;

use super::lockspace::{Inner, Lockspace};

pub(crate) struct EventLoop {
    waker: mio::Waker,
    stop: AtomicBool,
}

impl EventLoop {
    /// Make the thread end.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

const DEVICE: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

impl Lockspace {
    /// Start the event-loop thread: from now on every callback runs there.
    /// Idempotent.
    pub fn start_event_loop(&self) -> Result<()> {
        self.delivery_used();
        let mut guard = self
            .inner
            .event_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A loop that stopped on an error may be started again.
        if guard.is_some() && self.inner.loop_running.load(Ordering::SeqCst) {
            return Ok(());
        }
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&self.inner.fd),
            DEVICE,
            mio::Interest::READABLE,
        )?;
        let ev = Arc::new(EventLoop {
            waker,
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&self.inner);
        let ev2 = ev.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dlm-ls-{}", self.inner.name))
            .spawn(move || event_loop(poll, weak, ev2))?;
        *self
            .inner
            .loop_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(thread.thread().id());
        *guard = Some(ev);
        self.inner.loop_running.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn event_loop(mut poll: mio::Poll, inner: Weak<Inner>, ev: Arc<EventLoop>) {
    let mut events = mio::Events::with_capacity(16);
    loop {
        if ev.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("dlm event loop: poll failed: {e}");
            break;
        }
        if ev.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let ls = Lockspace { inner };
        if let Err(e) = ls.dispatch() {
            log::error!("lockspace {}: event loop stops: {e}", ls.inner.name);
            break;
        }
    }
    // Stopped by an error (the daemon went away, say): waiting calls must
    // not wait for this loop any more; they read the device themselves
    // and meet the error.
    if let Some(inner) = inner.upgrade() {
        let st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        inner.loop_running.store(false, Ordering::SeqCst);
        // Futures waiting for the loop are polled again (woken once the
        // lock is let go), and find out.
        #[cfg(feature = "async")]
        let wakers: Vec<std::task::Waker> = {
            let mut st = st;
            st.slots
                .iter_mut()
                .filter(|s| s.live)
                .filter_map(|s| s.waker.take())
                .collect()
        };
        #[cfg(not(feature = "async"))]
        drop(st);
        #[cfg(feature = "async")]
        wakers.into_iter().for_each(std::task::Waker::wake);
        inner.wake_waiters();
    }
}

/// The lockspace's one fd (see [`Lockspace`]'s docs), readable when
/// [`dispatch`](Lockspace::dispatch) has work. `mio` registers it
/// edge-triggered: call `dispatch` on every event (it reads until nothing
/// is left).
impl mio::event::Source for Lockspace {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.as_raw_fd()).deregister(registry)
    }
}
