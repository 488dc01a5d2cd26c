//! When a SecurityProvider is reconciled again: one classification of errors
//! ([`ErrorClass::of`]) and one decision over it ([`next`]), for a reconcile that reported its
//! failure in status and for an error that escaped it alike.
use std::time::Duration;

use kube::runtime::controller::Action;

use super::context::Settings;
use super::record::ObjectRecord;
use crate::backoff::full_jitter;
use crate::error::{Error, TERMINAL_RECHECK};

/// First backoff of a failing object; it doubles per consecutive failure up to
/// [`Settings::max_backoff`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How a failure is retried: the one classification of an [`Error`] that every requeue
/// decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying can help: back off per object, never sooner than the remote asked.
    Transient { retry_after: Option<Duration> },
    /// A Secret is missing, incomplete or refused. Secrets are read by name, never watched:
    /// looked at again at the next resync.
    Secret,
    /// Terminal, but the remote side can change without any watched change (see
    /// [`Error::rechecked_when_terminal`]): checked again after [`TERMINAL_RECHECK`].
    Rechecked,
    /// Retrying cannot help until a watched object (spec, annotation, connection) changes.
    Terminal,
    /// A deletion stopped retrying ([`Error::CleanupBlocked`]): reported with its escape
    /// hatch, it waits for a change.
    Blocked,
    /// A deletion waits one progress interval for a create that may still land.
    Deferred,
}

impl ErrorClass {
    /// The class of `error`.
    pub fn of(error: &Error) -> ErrorClass {
        match error {
            Error::CleanupDeferred(_) => ErrorClass::Deferred,
            Error::CleanupBlocked { .. } => ErrorClass::Blocked,
            Error::SecretNotFound(_)
            | Error::SecretKeyMissing { .. }
            | Error::SecretNotOptedIn(_)
            | Error::SecretTypeRefused { .. }
            | Error::SecretAccessDenied { .. } => ErrorClass::Secret,
            _ if error.rechecked_when_terminal() => ErrorClass::Rechecked,
            _ if error.is_terminal() => ErrorClass::Terminal,
            _ => ErrorClass::Transient {
                retry_after: error.retry_after(),
            },
        }
    }
}

/// How a reconcile ended, as far as its requeue goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Reconciled (or deliberately withheld, or blocked in status); `settling`: the remote
    /// state is still changing (creating, refreshing).
    Done { settling: bool },
    /// Failed with an error of `class`. `deleting`: the failure is the remote cleanup's, which
    /// is retried with backoff whatever the class until it is [`ErrorClass::Blocked`] (see
    /// [`super::context::MAX_CLEANUP_ATTEMPTS`]).
    Failed { class: ErrorClass, deleting: bool },
}

/// When a provider is reconciled again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// After this delay.
    After(Duration),
    /// When the object or something it depends on changes.
    OnChange,
}

impl From<Requeue> for Action {
    fn from(requeue: Requeue) -> Action {
        match requeue {
            Requeue::After(delay) => Action::requeue(delay),
            Requeue::OnChange => Action::await_change(),
        }
    }
}

/// When to reconcile again after `ending`; updates the failure count and settling mark of
/// `record`.
pub fn next(ending: Ending, record: &mut ObjectRecord, settings: &Settings) -> Requeue {
    let (class, deleting) = match ending {
        Ending::Done { settling } => {
            record.failures = 0;
            record.settling = settling;
            return Requeue::After(if settling {
                settings.progress_interval
            } else {
                resync_delay(settings.resync_interval)
            });
        }
        Ending::Failed { class, deleting } => (class, deleting),
    };
    match class {
        ErrorClass::Deferred => Requeue::After(settings.progress_interval),
        ErrorClass::Transient { retry_after } => back_off(record, retry_after, settings),
        ErrorClass::Secret | ErrorClass::Rechecked | ErrorClass::Terminal if deleting => {
            back_off(record, None, settings)
        }
        terminal => {
            record.failures = 0;
            match terminal {
                ErrorClass::Secret => Requeue::After(resync_delay(settings.resync_interval)),
                ErrorClass::Rechecked => Requeue::After(TERMINAL_RECHECK),
                _ => Requeue::OnChange,
            }
        }
    }
}

/// Counts one more failure of `record` and returns its backoff, never shorter than the remote
/// asked for.
fn back_off(
    record: &mut ObjectRecord,
    retry_after: Option<Duration>,
    settings: &Settings,
) -> Requeue {
    record.failures = record.failures.saturating_add(1);
    let attempt = record.failures - 1;
    let backoff = full_jitter(
        FIRST_BACKOFF,
        settings.max_backoff,
        attempt,
        &mut rand::rng(),
    );
    Requeue::After(retry_after.map_or(backoff, |after| after.max(backoff)))
}

/// The resync delay with ±10 % jitter, so objects created together don't resync together.
pub fn resync_delay(interval: Duration) -> Duration {
    let base = interval.as_millis() as u64;
    let spread = base / 10;
    Duration::from_millis(base - spread + rand::random_range(0..=2 * spread))
}

/// When a provider that was refused a slot (its namespace or connection holds its share)
/// tries again: soon, so it is served within seconds of a slot of its share freeing, and
/// spread so the waiting ones don't all come back at once.
pub fn busy_requeue() -> Requeue {
    Requeue::After(Duration::from_millis(rand::random_range(500..=2000)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{RemoteError, RemoteErrorKind};

    fn settings() -> Settings {
        Settings {
            resync_interval: Duration::from_secs(300),
            progress_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            ..Settings::default()
        }
    }

    fn remote(kind: RemoteErrorKind) -> Error {
        Error::Remote(RemoteError::transport("remote", "read", kind, "x"))
    }

    fn delay(requeue: Requeue) -> Option<Duration> {
        match requeue {
            Requeue::After(delay) => Some(delay),
            Requeue::OnChange => None,
        }
    }

    #[test]
    fn errors_fall_in_one_class_each() {
        let secret = Error::SecretNotFound("s".into());
        assert_eq!(ErrorClass::of(&secret), ErrorClass::Secret);
        let refused = Error::SecretTypeRefused {
            name: "s".into(),
            type_: "kubernetes.io/tls".into(),
        };
        assert_eq!(ErrorClass::of(&refused), ErrorClass::Secret);
        assert_eq!(
            ErrorClass::of(&remote(RemoteErrorKind::Unauthorized)),
            ErrorClass::Rechecked
        );
        assert_eq!(
            ErrorClass::of(&remote(RemoteErrorKind::InvalidConfiguration)),
            ErrorClass::Terminal
        );
        assert_eq!(
            ErrorClass::of(&Error::InvalidSpec("x".into())),
            ErrorClass::Terminal
        );
        assert_eq!(
            ErrorClass::of(&remote(RemoteErrorKind::Unavailable)),
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            ErrorClass::of(&Error::CleanupDeferred("x".into())),
            ErrorClass::Deferred
        );
    }

    #[test]
    fn transient_failures_back_off_within_a_doubling_window_and_success_resets_it() {
        let settings = settings();
        let mut record = ObjectRecord::default();
        let failed = Ending::Failed {
            class: ErrorClass::Transient { retry_after: None },
            deleting: false,
        };
        for (attempt, ceiling) in [1u64, 2, 4, 8, 16, 32, 60, 60].into_iter().enumerate() {
            let after = delay(next(failed, &mut record, &settings)).unwrap();
            assert!(
                after <= Duration::from_secs(ceiling),
                "{attempt}: {after:?}"
            );
        }
        assert_eq!(record.failures, 8);
        let done = next(Ending::Done { settling: true }, &mut record, &settings);
        assert_eq!(done, Requeue::After(settings.progress_interval));
        assert_eq!((record.failures, record.settling), (0, true));
        let resync = delay(next(
            Ending::Done { settling: false },
            &mut record,
            &settings,
        ));
        let resync = resync.unwrap();
        assert!((270..=330).contains(&resync.as_secs()), "{resync:?}");
        assert!(!record.settling);
    }

    #[test]
    fn a_retry_after_is_a_floor_of_the_backoff() {
        let mut record = ObjectRecord::default();
        let class = ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(42)),
        };
        let ending = Ending::Failed {
            class,
            deleting: false,
        };
        let action = next(ending, &mut record, &settings());
        assert_eq!(action, Requeue::After(Duration::from_secs(42)));
    }

    #[test]
    fn terminal_failures_wait_for_a_change_a_resync_or_a_recheck_and_reset_the_backoff() {
        let settings = settings();
        let cases = [
            (ErrorClass::Terminal, None),
            (ErrorClass::Blocked, None),
            (ErrorClass::Rechecked, Some(TERMINAL_RECHECK)),
        ];
        for (class, expected) in cases {
            let mut record = ObjectRecord::default();
            record.failures = 3;
            let ending = Ending::Failed {
                class,
                deleting: false,
            };
            let action = next(ending, &mut record, &settings);
            assert_eq!(delay(action), expected, "{class:?}");
            assert_eq!(record.failures, 0);
        }
        let mut record = ObjectRecord::default();
        let ending = Ending::Failed {
            class: ErrorClass::Secret,
            deleting: false,
        };
        let secret = delay(next(ending, &mut record, &settings)).unwrap();
        assert!((270..=330).contains(&secret.as_secs()), "{secret:?}");
    }

    #[test]
    fn a_deletion_backs_off_on_every_failure_until_it_is_blocked() {
        let settings = settings();
        let mut record = ObjectRecord::default();
        for class in [
            ErrorClass::Secret,
            ErrorClass::Terminal,
            ErrorClass::Rechecked,
        ] {
            let ending = Ending::Failed {
                class,
                deleting: true,
            };
            let after = delay(next(ending, &mut record, &settings)).unwrap();
            assert!(after <= Duration::from_secs(4), "{class:?}: {after:?}");
        }
        assert_eq!(record.failures, 3);
        let blocked = Ending::Failed {
            class: ErrorClass::Blocked,
            deleting: true,
        };
        assert_eq!(next(blocked, &mut record, &settings), Requeue::OnChange);
        let deferred = Ending::Failed {
            class: ErrorClass::Deferred,
            deleting: true,
        };
        let action = next(deferred, &mut record, &settings);
        assert_eq!(action, Requeue::After(settings.progress_interval));
    }
}
