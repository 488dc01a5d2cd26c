//! The one backoff formula of the operator, for the HTTP client's in-process retries and the
//! controller's requeue of a failing object alike: exponential, capped, with full jitter.
use std::time::Duration;

use rand::RngExt;

/// The delay before retry number `attempt` (0-based): uniform in
/// `[0, min(cap, base * 2^attempt)]` ("full jitter": retries of many callers that failed
/// together spread over the whole window instead of clustering at its top).
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32, rng: &mut impl RngExt) -> Duration {
    let nanos = ceiling(base, cap, attempt).as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The top of the window of retry number `attempt`.
pub fn ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_per_attempt_up_to_the_cap_without_overflow() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(300));
        let ceilings: Vec<_> = (0..4).map(|a| ceiling(base, cap, a).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8]);
        assert_eq!(ceiling(base, cap, 9), cap);
        assert_eq!(ceiling(base, cap, u32::MAX), cap);
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_window() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(300));
        let mut rng = rand::rng();
        let samples: Vec<_> = (0..400)
            .map(|_| full_jitter(base, cap, 3, &mut rng))
            .collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(
            samples.iter().any(|d| *d < Duration::from_secs(1)),
            "low end reached"
        );
        assert!(
            samples.iter().any(|d| *d > Duration::from_secs(7)),
            "high end reached"
        );
    }
}
