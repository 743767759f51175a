//! Time and randomness, injected so that rules stay testable with a frozen clock.

use iam_domain::Timestamp;

/// The current time.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> Timestamp;
}

/// A cryptographically secure source of random bytes.
pub trait Rng: Send + Sync {
    /// Fills `buf` with random bytes. Must not fail silently: an unusable source is a fatal error.
    fn fill(&self, buf: &mut [u8]);
}

/// Returns `N` random bytes from a `dyn Rng`.
pub fn random<const N: usize>(rng: &dyn Rng) -> [u8; N] {
    let mut buf = [0; N];
    rng.fill(&mut buf);
    buf
}
