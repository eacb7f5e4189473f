//! The time source. Everything that waits (schedules, grace periods, overdue thresholds,
//! takeovers) reads the time through a [`Clock`], so a test can move time forward by
//! days in a moment with a [`ManualClock`].

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A source of wall-clock time (for records and schedules) and monotonic time (for
/// durations and timeouts).
pub trait Clock: Send + Sync + Debug {
    /// The wall-clock time.
    fn now(&self) -> SystemTime;
    /// The monotonic time.
    fn instant(&self) -> Instant;
    /// Seconds since the Unix epoch (0 before it).
    fn unix(&self) -> i64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to (tests). Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: (SystemTime, Instant),
    offset: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock {
            base: (start, Instant::now()),
            offset: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += d;
    }
    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.base.0 + self.offset()
    }
    fn instant(&self) -> Instant {
        self.base.1 + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = ManualClock::new(start);
        let i0 = c.instant();
        assert_eq!(c.unix(), 1_000_000);
        let d = c.clone();
        d.advance(Duration::from_secs(30 * 86400));
        assert_eq!(c.unix(), 1_000_000 + 30 * 86400);
        assert_eq!(c.instant() - i0, Duration::from_secs(30 * 86400));
        let s: &dyn Clock = &SystemClock;
        assert!(s.unix() > 1_700_000_000);
    }
}
