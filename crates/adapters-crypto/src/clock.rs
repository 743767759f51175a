//! The system clock, a manual clock for tests, and the OS randomness source.

use std::sync::Mutex;

use iam_domain::Timestamp;
use iam_ports::{Clock, Rng};
use rand::RngCore as _;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        use chrono::SubsecRound as _;
        // PostgreSQL keeps microseconds; finer times would not survive a round trip.
        chrono::Utc::now().trunc_subsecs(6)
    }
}

/// A clock that moves only when told to: expiry and TOTP windows become testable.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock frozen at `at` (truncated to microseconds, as stored).
    pub fn new(at: Timestamp) -> Self {
        use chrono::SubsecRound as _;
        Self(Mutex::new(at.trunc_subsecs(6)))
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Random bytes from the operating system's CSPRNG (through rand's reseeding thread-local
/// ChaCha generator, which is seeded and periodically reseeded from the OS).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Rng for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        rand::rng().fill_bytes(buf);
    }
}
