//! A budget for the `Created` Events of one connection: the first [`PER_WINDOW`] creates in a
//! [`WINDOW`] get an Event each on their SecurityProvider; the creates beyond it get one Event
//! between them, on the ProviderConnection, when the window ends. A handful of providers
//! applied by hand keep their own Events; a mass apply of thousands costs a few Events
//! instead of one write per provider (an Event is one API-server write: about an eighth of
//! the API server's work per created provider, BENCHMARKS.md "Issue 26"). Each provider's
//! create is recorded either way in its status (`remoteId`, the `Ready` condition).
//! Failures are never budgeted: one Warning per change of a failure, as before.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// `Created` Events per connection per window on the providers themselves.
pub const PER_WINDOW: u32 = 10;
/// Names listed in a summary Event (the rest are counted).
const NAMES_SHOWN: usize = 5;

/// What to do with one create's Event.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Publish it on the provider.
    Publish,
    /// Held for the window's summary; `summary_due` is when the window ends, given to the
    /// first create held in a window only (whoever gets it publishes the summary then).
    Held { summary_due: Option<Instant> },
}

/// The creates beyond the budget in one window.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// How many.
    pub count: u32,
    /// The first few names.
    pub names: Vec<String>,
}

impl Summary {
    /// The summary Event's note.
    pub fn note(&self) -> String {
        let mut note = format!(
            "created {} more remote providers in {} s (SecurityProviders {}",
            self.count,
            WINDOW.as_secs(),
            self.names.join(", ")
        );
        let unnamed = self.count as usize - self.names.len();
        if unnamed > 0 {
            note.push_str(&format!(" and {unnamed} others"));
        }
        note.push_str(&format!(
            "); beyond {PER_WINDOW} creates per {} s a connection's creates are summed up here instead of an Event on each provider, whose status records its create",
            WINDOW.as_secs()
        ));
        note
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    published: u32,
    held: Summary,
}

/// The windows of every connection, keyed by `namespace/name` of the connection.
#[derive(Default)]
pub struct CreatedEvents {
    windows: Mutex<HashMap<String, Window>>,
}

impl CreatedEvents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides the Event of the create of provider `name` through `connection` at `now`.
    pub fn admit(&self, connection: &str, name: &str, now: Instant) -> Admission {
        let mut windows = self.lock();
        // Windows that ended with nothing held are forgotten (a summary takes its own).
        windows.retain(|_, w| now < w.started + WINDOW || w.held.count > 0);
        let window = windows.entry(connection.to_owned()).or_insert(Window {
            started: now,
            published: 0,
            held: Summary {
                count: 0,
                names: Vec::new(),
            },
        });
        if now >= window.started + WINDOW && window.held.count == 0 {
            window.started = now;
            window.published = 0;
        }
        if window.published < PER_WINDOW && window.held.count == 0 {
            window.published += 1;
            return Admission::Publish;
        }
        window.held.count += 1;
        if window.held.names.len() < NAMES_SHOWN {
            window.held.names.push(name.to_owned());
        }
        let first = window.held.count == 1;
        Admission::Held {
            summary_due: first.then_some(window.started + WINDOW),
        }
    }

    /// Takes the summary of `connection`'s window, which ends a window that held creates.
    pub fn take_summary(&self, connection: &str) -> Option<Summary> {
        let window = self.lock().remove(connection)?;
        (window.held.count > 0).then_some(window.held)
    }

    /// How many connections have a window open (unit tests).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_creates_get_their_own_events_the_rest_one_summary() {
        let events = CreatedEvents::default();
        let t0 = Instant::now();
        for i in 0..PER_WINDOW {
            assert_eq!(
                events.admit("ns/conn", &format!("p{i}"), t0),
                Admission::Publish
            );
        }
        // Another connection has a budget of its own.
        assert_eq!(events.admit("ns/other", "q", t0), Admission::Publish);
        let first_held = events.admit("ns/conn", "p10", t0 + Duration::from_secs(1));
        assert_eq!(
            first_held,
            Admission::Held {
                summary_due: Some(t0 + WINDOW)
            }
        );
        for i in 11..30 {
            assert_eq!(
                events.admit("ns/conn", &format!("p{i}"), t0 + Duration::from_secs(2)),
                Admission::Held { summary_due: None }
            );
        }
        let summary = events.take_summary("ns/conn").unwrap();
        assert_eq!(summary.count, 20);
        assert_eq!(summary.names, ["p10", "p11", "p12", "p13", "p14"]);
        let note = summary.note();
        assert!(
            note.starts_with("created 20 more remote providers in 10 s (SecurityProviders p10, p11, p12, p13, p14 and 15 others)"),
            "{note}"
        );
        assert_eq!(events.take_summary("ns/conn"), None);
        // After the summary, the next create starts a new window with a full budget.
        let later = t0 + WINDOW + Duration::from_secs(1);
        assert_eq!(events.admit("ns/conn", "p30", later), Admission::Publish);
    }

    #[test]
    fn a_window_without_held_creates_ends_by_itself() {
        let events = CreatedEvents::default();
        let t0 = Instant::now();
        for i in 0..PER_WINDOW {
            events.admit("ns/conn", &format!("p{i}"), t0);
        }
        // The window ended: the budget is full again, and no summary was due.
        let later = t0 + WINDOW;
        assert_eq!(events.admit("ns/conn", "next", later), Admission::Publish);
        assert_eq!(events.take_summary("ns/conn"), None);
        // Idle connections' windows are forgotten.
        events.admit("ns/c2", "x", later);
        events.admit("ns/c3", "y", later + WINDOW);
        assert_eq!(events.open(), 1);
    }
}
