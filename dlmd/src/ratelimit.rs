//! The log's rate limit: one token bucket shared by every connection.
//!
//! Whatever a client can make the daemon log at `info` or `warn` level
//! (protocol errors, refused connections, denied requests) passes through
//! one [`LogLimiter`]. Up to `burst` such lines are written at once, and
//! then `rate` a second; lines past that are written at `debug` level
//! instead, and counted. When the limit is first reached the daemon says
//! so, and every [`SUMMARY_EVERY`] after that (and at shutdown) one line
//! says how many were held back since the last such line; a period with
//! none ends the episode. Being shared, the bucket bounds the log however
//! many connections a peer opens: a client that reconnects gets no fresh
//! allowance. Under a steady flood the log grows by `rate` lines a second
//! and one summary per period.
//!
//! The limiter is plain arithmetic over the [`Instant`]s it is given; the
//! server asks it, logs, and wakes up for a summary that is due.

use std::fmt;
use std::time::{Duration, Instant};

/// Lines admitted per second once a burst is spent.
pub const RATE: u32 = 5;
/// Lines admitted at once after a quiet spell.
pub const BURST: u32 = 50;
/// While lines are being held back, a count of them is logged this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it at its level.
    Log,
    /// Log it at `debug` level only. `true` for the first line held back
    /// in an episode: say that the limit took effect.
    Hold(bool),
}

/// How many lines were held back, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Lines held back.
    pub count: u64,
    /// From the first of them to now.
    pub over: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "suppressed {} client-triggered log line(s) in the last {:.1} s \
             (log rate limit: {RATE} a second, bursts of {BURST}; they are logged at debug level)",
            self.count,
            self.over.as_secs_f64()
        )
    }
}

/// A token bucket for log lines.
#[derive(Debug)]
pub struct LogLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    held: u64,
    /// When the first line of the current count was held back.
    held_since: Option<Instant>,
}

impl LogLimiter {
    /// A full bucket: `burst` lines at once, then `rate` a second.
    pub fn new(rate: u32, burst: u32, now: Instant) -> LogLimiter {
        LogLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled: now,
            held: 0,
            held_since: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.refilled = now;
    }

    /// Whether one more line may be logged at `now`.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Log;
        }
        // An episode runs from the first line held back until a period
        // passes without one.
        let first = self.held_since.is_none();
        self.held += 1;
        self.held_since.get_or_insert(now);
        Verdict::Hold(first)
    }

    /// When the next summary is due, if lines are being held back.
    pub fn due(&self) -> Option<Instant> {
        self.held_since.map(|t| t + SUMMARY_EVERY)
    }

    /// The summary, if one is due at `now`. The count starts again and
    /// the episode goes on; a period with nothing held back ends it.
    pub fn summary_due(&mut self, now: Instant) -> Option<Summary> {
        match self.due() {
            Some(t) if now >= t => {
                let s = self.summary_now(now);
                if s.is_some() {
                    self.held_since = Some(now);
                }
                s
            }
            _ => None,
        }
    }

    /// The count so far, if lines were held back (at shutdown); the
    /// episode ends.
    pub fn summary_now(&mut self, now: Instant) -> Option<Summary> {
        let since = self.held_since.take()?;
        let count = std::mem::take(&mut self.held);
        (count > 0).then(|| Summary {
            count,
            over: now.saturating_duration_since(since),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2, 3, t0);
        for _ in 0..3 {
            assert_eq!(l.admit(t0), Verdict::Log);
        }
        assert_eq!(l.admit(t0), Verdict::Hold(true), "the limit takes effect");
        assert_eq!(l.admit(t0), Verdict::Hold(false));
        assert_eq!(l.admit(t0 + ms(100)), Verdict::Hold(false));
        // Half a second at 2 a second buys one line.
        assert_eq!(l.admit(t0 + ms(500)), Verdict::Log);
        assert_eq!(l.admit(t0 + ms(500)), Verdict::Hold(false), "same episode");
        // A long quiet spell refills to the burst, not beyond.
        let t1 = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.admit(t1), Verdict::Log);
        }
        assert!(matches!(l.admit(t1), Verdict::Hold(_)));
    }

    #[test]
    fn summaries_come_periodically_while_lines_are_held() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(0, 1, t0);
        assert_eq!(l.due(), None);
        assert_eq!(l.admit(t0), Verdict::Log);
        assert_eq!(l.summary_due(t0 + SUMMARY_EVERY), None, "nothing held");
        for i in 0..10 {
            assert_eq!(l.admit(t0 + ms(i)), Verdict::Hold(i == 0));
        }
        assert_eq!(l.due(), Some(t0 + SUMMARY_EVERY));
        assert_eq!(l.summary_due(t0 + ms(10)), None, "not yet");
        let t1 = t0 + SUMMARY_EVERY;
        assert_eq!(
            l.summary_due(t1),
            Some(Summary {
                count: 10,
                over: SUMMARY_EVERY
            })
        );
        assert_eq!(l.due(), Some(t1 + SUMMARY_EVERY), "still limiting");
        assert_eq!(l.admit(t1), Verdict::Hold(false), "not a new episode");
        assert_eq!(l.summary_due(t1 + SUMMARY_EVERY).map(|s| s.count), Some(1));
        // A period with nothing held back ends the episode.
        assert_eq!(l.summary_due(t1 + SUMMARY_EVERY * 2), None);
        assert_eq!(l.due(), None);
        assert_eq!(l.admit(t1 + SUMMARY_EVERY * 3), Verdict::Hold(true));
        assert_eq!(
            l.summary_now(t1 + SUMMARY_EVERY * 3 + ms(20)),
            Some(Summary {
                count: 1,
                over: ms(20)
            }),
            "what is held at shutdown"
        );
        assert_eq!(l.summary_now(t1 + SUMMARY_EVERY * 4), None);
    }

    #[test]
    fn the_summary_says_what_and_how_long() {
        let s = Summary {
            count: 1234,
            over: ms(2500),
        };
        let text = s.to_string();
        assert!(text.starts_with("suppressed 1234 "), "{text}");
        assert!(text.contains("in the last 2.5 s"), "{text}");
    }
}
