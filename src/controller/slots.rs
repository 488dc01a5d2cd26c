//! Who holds the controller's reconcile slots. kube-runtime runs at most `--concurrency`
//! reconciles at once and does not serve waiting objects in arrival order, so a tenant whose
//! remote hangs could hold every slot and starve the others. Each reconcile therefore takes a
//! slot in this ledger before any work: its namespace may hold at most
//! [`SlotLimits::namespace`] slots however many connections it makes, and its connection at
//! most [`SlotLimits::connection`]. While several namespaces are active (asked for a slot in
//! the last [`ACTIVE_WINDOW`]), each namespace's share is also at most `1/N` of the slots
//! (at least one), so N tenants each get theirs. A reconcile refused a slot gives the
//! controller's slot back at once and is requeued shortly after, so the free slots go to
//! other namespaces.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use crate::api::ProviderConnection;

/// How long a namespace counts as active after it last asked for a slot: longer than the
/// requeue of a refused reconcile (at most 2 s), so a waiting namespace stays counted.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(10);

/// The most reconcile slots one namespace and one connection may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLimits {
    /// All the controller's slots (`--concurrency`).
    pub total: usize,
    /// Slots the providers of one namespace hold at once, over all its connections.
    pub namespace: usize,
    /// Slots the providers of one connection hold at once.
    pub connection: usize,
}

impl SlotLimits {
    /// The limits over `concurrency` slots. A requested limit of 0 means half of
    /// `concurrency`; each is at least 1 and at most `concurrency`, and a connection never
    /// gets more than its namespace (it could not use them).
    pub fn new(concurrency: u16, namespace: u16, connection: u16) -> Self {
        let share = |requested: u16| {
            let slots = match requested {
                0 => concurrency / 2,
                n => n.min(concurrency),
            };
            usize::from(slots.max(1))
        };
        let namespace = share(namespace);
        SlotLimits {
            total: usize::from(concurrency.max(1)),
            namespace,
            connection: share(connection).min(namespace),
        }
    }
}

/// Why a reconcile got no slot: which share its owner already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRefused {
    /// The namespace holds [`SlotLimits::namespace`] slots, or its `1/N` of all slots while N
    /// namespaces are active.
    NamespaceShare,
    /// The connection holds [`SlotLimits::connection`] slots.
    ConnectionShare,
}

impl SlotRefused {
    /// The share named in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotRefused::NamespaceShare => "namespace",
            SlotRefused::ConnectionShare => "connection",
        }
    }
}

/// Slots held per namespace and per connection; an owner holding none has no entry, so
/// deleted namespaces and connections leave nothing behind.
#[derive(Default, Debug)]
struct Held {
    namespaces: HashMap<String, usize>,
    /// When each namespace last asked for a slot (pruned past [`ACTIVE_WINDOW`]).
    asked: HashMap<String, Instant>,
    connections: HashMap<ObjectRef<ProviderConnection>, usize>,
}

/// The account of reconcile slots held, with its limits.
#[derive(Debug)]
pub struct SlotLedger {
    limits: SlotLimits,
    held: Mutex<Held>,
}

impl SlotLedger {
    /// An empty ledger with `limits`.
    pub fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(SlotLedger {
            limits,
            held: Mutex::new(Held::default()),
        })
    }

    /// The limits this ledger enforces.
    pub fn limits(&self) -> SlotLimits {
        self.limits
    }

    /// A slot for a reconcile of a provider of `connection` (namespaced like the provider),
    /// held until the returned guard is dropped; refused when the namespace or the connection
    /// already holds its share. Never waits: a waiting reconcile would hold the controller's
    /// slot it runs in.
    pub fn try_take(
        self: &Arc<Self>,
        connection: &ObjectRef<ProviderConnection>,
    ) -> Result<ReconcileSlot, SlotRefused> {
        self.try_take_at(connection, Instant::now())
    }

    fn try_take_at(
        self: &Arc<Self>,
        connection: &ObjectRef<ProviderConnection>,
        now: Instant,
    ) -> Result<ReconcileSlot, SlotRefused> {
        let namespace = connection.namespace.clone().unwrap_or_default();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.asked
            .retain(|_, at| now.duration_since(*at) < ACTIVE_WINDOW);
        held.asked.insert(namespace.clone(), now);
        let share = self.namespace_share(held.asked.len());
        if held.namespaces.get(&namespace).copied().unwrap_or(0) >= share {
            return Err(SlotRefused::NamespaceShare);
        }
        if held.connections.get(connection).copied().unwrap_or(0) >= self.limits.connection {
            return Err(SlotRefused::ConnectionShare);
        }
        *held.namespaces.entry(namespace).or_insert(0) += 1;
        *held.connections.entry(connection.clone()).or_insert(0) += 1;
        Ok(ReconcileSlot {
            ledger: self.clone(),
            connection: connection.clone(),
        })
    }

    /// The slots one namespace may hold while `active` namespaces ask for slots: its
    /// configured share, and at most `1/active` of all slots (at least one).
    fn namespace_share(&self, active: usize) -> usize {
        let fair = (self.limits.total / active.max(1)).max(1);
        self.limits.namespace.min(fair)
    }

    /// Slots the providers of `namespace` hold now.
    pub fn held_by_namespace(&self, namespace: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.namespaces.get(namespace).copied().unwrap_or(0)
    }

    /// Gives back one slot of `connection` and its namespace.
    fn release(&self, connection: &ObjectRef<ProviderConnection>) {
        let namespace = connection.namespace.clone().unwrap_or_default();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        release_one(&mut held.namespaces, namespace);
        release_one(&mut held.connections, connection.clone());
    }
}

/// Counts one slot of `owner` as given back, dropping the entry at zero.
fn release_one<K: std::hash::Hash + Eq>(held: &mut HashMap<K, usize>, owner: K) {
    if let std::collections::hash_map::Entry::Occupied(mut count) = held.entry(owner) {
        *count.get_mut() -= 1;
        if *count.get() == 0 {
            count.remove();
        }
    }
}

/// One reconcile slot, given back to its [`SlotLedger`] when dropped (however the reconcile
/// ends, including a panic or a cancelled future).
#[derive(Debug)]
pub struct ReconcileSlot {
    ledger: Arc<SlotLedger>,
    connection: ObjectRef<ProviderConnection>,
}

impl Drop for ReconcileSlot {
    fn drop(&mut self) {
        self.ledger.release(&self.connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(namespace: &str, name: &str) -> ObjectRef<ProviderConnection> {
        ObjectRef::new(name).within(namespace)
    }

    #[test]
    fn limits_default_to_half_the_concurrency_and_stay_within_it() {
        let limits = |c, n, k| SlotLimits::new(c, n, k);
        let pair = |namespace, connection| SlotLimits {
            total: 0,
            namespace,
            connection,
        };
        let limits = |c, n, k| SlotLimits {
            total: 0,
            ..limits(c, n, k)
        };
        assert_eq!(limits(16, 0, 0), pair(8, 8));
        assert_eq!(limits(4, 0, 0), pair(2, 2));
        // At least one slot each, even with a single one in all.
        assert_eq!(limits(1, 0, 0), pair(1, 1));
        assert_eq!(limits(3, 0, 0), pair(1, 1));
        // Explicit limits are capped by the concurrency...
        assert_eq!(limits(4, 9, 9), pair(4, 4));
        assert_eq!(limits(16, 6, 3), pair(6, 3));
        // ...and a connection never gets more than its namespace.
        assert_eq!(limits(16, 2, 0), pair(2, 2));
        assert_eq!(limits(16, 3, 10), pair(3, 3));
    }

    #[test]
    fn a_namespace_holds_its_share_however_many_connections_it_makes() {
        let ledger = SlotLedger::new(SlotLimits::new(4, 0, 0));
        let greedy: Vec<_> = (0..3)
            .map(|i| connection("greedy", &format!("c{i}")))
            .collect();
        let held: Vec<_> = greedy
            .iter()
            .filter_map(|c| ledger.try_take(c).ok())
            .collect();
        assert_eq!(
            held.len(),
            2,
            "two connections take the namespace's 2 slots"
        );
        assert_eq!(ledger.held_by_namespace("greedy"), 2);
        assert_eq!(
            ledger.try_take(&greedy[2]).unwrap_err(),
            SlotRefused::NamespaceShare,
            "a third connection gets nothing more"
        );
        // Another namespace gets the rest of the slots.
        let other = connection("other", "c0");
        let other_held = [ledger.try_take(&other), ledger.try_take(&other)];
        assert!(other_held.iter().all(Result::is_ok));
        assert_eq!(ledger.held_by_namespace("other"), 2);
    }

    #[test]
    fn a_connection_holds_its_share_within_its_namespace() {
        let ledger = SlotLedger::new(SlotLimits::new(16, 6, 2));
        let first = connection("team", "first");
        let _held = [ledger.try_take(&first), ledger.try_take(&first)];
        assert_eq!(
            ledger.try_take(&first).unwrap_err(),
            SlotRefused::ConnectionShare
        );
        // The namespace's other connection still has slots.
        assert!(ledger.try_take(&connection("team", "second")).is_ok());
    }

    #[test]
    fn a_dropped_slot_is_given_back_and_no_entry_is_left() {
        let ledger = SlotLedger::new(SlotLimits::new(2, 1, 1));
        let c = connection("team", "c");
        let slot = ledger.try_take(&c).unwrap();
        assert_eq!(
            ledger.try_take(&c).unwrap_err(),
            SlotRefused::NamespaceShare
        );
        drop(slot);
        assert_eq!(ledger.held_by_namespace("team"), 0);
        let again = ledger.try_take(&c).expect("the slot was given back");
        drop(again);
        let held = ledger.held.lock().unwrap();
        assert!(held.namespaces.is_empty() && held.connections.is_empty());
    }

    #[test]
    fn with_n_namespaces_active_each_holds_at_most_its_nth() {
        // A namespace alone may use its configured share (all 6 here)...
        let ledger = SlotLedger::new(SlotLimits::new(6, 6, 6));
        let start = Instant::now();
        let first = connection("first", "c");
        let mut held: Vec<_> = (0..6)
            .filter_map(|_| ledger.try_take_at(&first, start).ok())
            .collect();
        assert_eq!(held.len(), 6);
        // ...until others ask: with three active, each may hold 2; the first gets no new slot
        // until its own reconciles end and it is back under its third.
        let (second, third) = (connection("second", "c"), connection("third", "c"));
        // (kube-runtime runs no more than 6 reconciles: these two only ask, and count.)
        drop((
            ledger.try_take_at(&second, start),
            ledger.try_take_at(&third, start),
        ));
        assert_eq!(
            ledger.try_take_at(&first, start).unwrap_err(),
            SlotRefused::NamespaceShare,
            "over its third: nothing more for the first"
        );
        held.truncate(1); // five of the first namespace's reconciles end
        let second_held: Vec<_> = (0..3)
            .filter_map(|_| ledger.try_take_at(&second, start).ok())
            .collect();
        assert_eq!(
            second_held.len(),
            2,
            "the second gets its third of the slots"
        );
        let third_held: Vec<_> = (0..3)
            .filter_map(|_| ledger.try_take_at(&third, start).ok())
            .collect();
        assert_eq!(third_held.len(), 2, "so does the third");
        let _back = ledger
            .try_take_at(&first, start)
            .expect("the first is back to 2");
        assert_eq!(
            ledger.try_take_at(&first, start).unwrap_err(),
            SlotRefused::NamespaceShare
        );
        // Namespaces that stop asking stop counting: alone again, the first may use 6.
        let later = start + ACTIVE_WINDOW + Duration::from_secs(1);
        drop((second_held, third_held));
        let more: Vec<_> = (0..6)
            .filter_map(|_| ledger.try_take_at(&first, later).ok())
            .collect();
        assert_eq!(more.len() + 2, 6);
    }
}
