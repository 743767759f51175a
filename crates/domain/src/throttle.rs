//! Failure counters for throttling: a leaky bucket per key that drains by itself, so whoever is
//! throttled recovers without anyone's help, and an attacker cannot lock the rightful user out.

use chrono::Duration;

use crate::Timestamp;

/// A stored failure counter: the score at `updated_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counter {
    pub score: f64,
    pub updated_at: Timestamp,
}

/// How many failures a key may collect within a window before it is slowed down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Failures tolerated: the bucket's size.
    pub threshold: u32,
    /// The time the bucket takes to drain from full to empty.
    pub window: Duration,
}

impl Rule {
    /// Failures drained per second.
    pub fn leak_per_sec(&self) -> f64 {
        f64::from(self.threshold) / self.window.num_seconds().max(1) as f64
    }

    /// The score of `counter` now, after draining since it was stored.
    pub fn score(&self, counter: Option<Counter>, now: Timestamp) -> f64 {
        counter.map_or(0.0, |c| {
            let elapsed = (now - c.updated_at).num_milliseconds().max(0) as f64 / 1000.0;
            (c.score - elapsed * self.leak_per_sec()).max(0.0)
        })
    }

    /// `None` if an attempt may go ahead now; otherwise how long to wait. Each failure past the
    /// threshold adds `window / threshold` to the wait, so delays grow with persistence.
    pub fn wait(&self, counter: Option<Counter>, now: Timestamp) -> Option<Duration> {
        let over = self.score(counter, now) - f64::from(self.threshold) + 1.0;
        if over <= 0.0 {
            return None;
        }
        let secs = (over / self.leak_per_sec()).ceil().max(1.0);
        Some(Duration::seconds(secs as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rule() -> Rule {
        Rule {
            threshold: 5,
            window: Duration::minutes(15),
        }
    }

    fn at(secs: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn drains_and_recovers_by_itself() {
        let r = rule();
        assert_eq!(r.wait(None, at(0)), None);
        let four = Counter {
            score: 4.0,
            updated_at: at(0),
        };
        assert_eq!(r.wait(Some(four), at(0)), None, "below the threshold");
        let five = Counter {
            score: 5.0,
            updated_at: at(0),
        };
        // One failure drains every 180 s: the sixth attempt waits that long.
        assert_eq!(r.wait(Some(five), at(0)), Some(Duration::seconds(180)));
        assert_eq!(r.wait(Some(five), at(90)), Some(Duration::seconds(90)));
        assert_eq!(r.wait(Some(five), at(180)), None, "recovered");
        assert!((r.score(Some(five), at(15 * 60)) - 0.0).abs() < f64::EPSILON);
    }

    #[test]
    fn delays_grow_with_persistence() {
        let r = rule();
        let waits: Vec<_> = [5.0, 6.0, 8.0]
            .iter()
            .map(|s| {
                r.wait(
                    Some(Counter {
                        score: *s,
                        updated_at: at(0),
                    }),
                    at(0),
                )
            })
            .collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::seconds(180)),
                Some(Duration::seconds(360)),
                Some(Duration::seconds(720))
            ]
        );
    }
}
