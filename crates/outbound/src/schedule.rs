//! When to try a deferred message again, and when to give up: Postfix's
//! queue manager rules, as pure functions of the message's age.

use std::time::{Duration, SystemTime};

/// Retry and lifetime settings, with Postfix's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Shortest wait after a failed attempt (`minimal_backoff_time`, 300 s).
    pub minimal_backoff: Duration,
    /// Longest wait (`maximal_backoff_time`, 4000 s).
    pub maximal_backoff: Duration,
    /// Age at which a message that still fails is returned to its sender
    /// (`maximal_queue_lifetime`, 5 days).
    pub lifetime: Duration,
    /// The same for a bounce message (null sender)
    /// (`bounce_queue_lifetime`, 5 days).
    pub bounce_lifetime: Duration,
    /// Age after which the sender is told once that the message is still
    /// queued (`delay_warning_time`; `None`: never, Postfix's default).
    pub delay_warning: Option<Duration>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            lifetime: Duration::from_secs(5 * 86_400),
            bounce_lifetime: Duration::from_secs(5 * 86_400),
            delay_warning: None,
        }
    }
}

/// What to do with a recipient whose attempt failed temporarily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    RetryAt(SystemTime),
    /// The message is too old: bounce it.
    Expire,
}

impl Schedule {
    /// After a temporary failure at `now` of a message that arrived at
    /// `arrival`: Postfix waits as long as the message has been queued,
    /// but at least `minimal_backoff` and at most `maximal_backoff` (so the
    /// waits double), and gives up once it is older than its lifetime.
    pub fn after_failure(
        &self,
        arrival: SystemTime,
        now: SystemTime,
        bounce: bool,
    ) -> AfterFailure {
        let age = now.duration_since(arrival).unwrap_or_default();
        let lifetime = if bounce {
            self.bounce_lifetime
        } else {
            self.lifetime
        };
        if age >= lifetime {
            return AfterFailure::Expire;
        }
        let wait = age.clamp(
            self.minimal_backoff,
            self.maximal_backoff.max(self.minimal_backoff),
        );
        AfterFailure::RetryAt(now + wait)
    }

    /// Whether a delay warning is due at `now` for a message that arrived
    /// at `arrival` (the caller sends at most one per message).
    pub fn delay_warning_due(&self, arrival: SystemTime, now: SystemTime) -> bool {
        self.delay_warning
            .is_some_and(|w| now.duration_since(arrival).unwrap_or_default() >= w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn waits_double_between_the_bounds_then_the_message_expires() {
        let s = Schedule::default();
        let t0 = at(1_000_000);
        // First failure right after arrival: the minimal wait.
        assert_eq!(
            s.after_failure(t0, t0, false),
            AfterFailure::RetryAt(at(1_000_300))
        );
        // Retried at +300 s, failed: waits its age, 300 s; then 600 s, ...
        assert_eq!(
            s.after_failure(t0, at(1_000_600), false),
            AfterFailure::RetryAt(at(1_001_200))
        );
        assert_eq!(
            s.after_failure(t0, at(1_003_000), false),
            AfterFailure::RetryAt(at(1_006_000))
        );
        assert_eq!(
            s.after_failure(t0, at(1_005_000), false),
            AfterFailure::RetryAt(at(1_009_000)),
            "capped at maximal_backoff"
        );
        assert_eq!(
            s.after_failure(t0, at(1_000_000 + 5 * 86_400), false),
            AfterFailure::Expire
        );
        let short = Schedule {
            bounce_lifetime: Duration::from_secs(3600),
            ..s
        };
        assert_eq!(
            short.after_failure(t0, at(1_003_600), true),
            AfterFailure::Expire
        );
        assert!(matches!(
            short.after_failure(t0, at(1_003_600), false),
            AfterFailure::RetryAt(_)
        ));
        // A clock that went back counts as age 0.
        assert_eq!(
            s.after_failure(t0, at(999_000), false),
            AfterFailure::RetryAt(at(999_300))
        );
    }

    #[test]
    fn delay_warning_only_when_configured() {
        let t0 = at(0);
        assert!(!Schedule::default().delay_warning_due(t0, at(10 * 86_400)));
        let s = Schedule {
            delay_warning: Some(Duration::from_secs(4 * 3600)),
            ..Schedule::default()
        };
        assert!(!s.delay_warning_due(t0, at(4 * 3600 - 1)));
        assert!(s.delay_warning_due(t0, at(4 * 3600)));
    }
}
