//! What this process remembers about each SecurityProvider between its reconciles: one
//! record per object, taken at the start of a reconcile, put back at its end (by
//! [`Visit`]'s drop, whatever the path) and forgotten in one place.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;

use super::context::Context;
use super::execute::recorded_secrets_hash;
use super::slots::ReconcileSlot;
use crate::api::{ProviderConnection, SecurityProvider};

/// Everything remembered about one object. The default (an object that is in sync and never
/// failed) is not stored at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Consecutive failed reconciles, for backoff (see [`super::requeue`]).
    pub failures: u32,
    /// The reason of the latest failure (for one warning per change).
    pub failure_reason: Option<&'static str>,
    /// The remote state was settling at the last reconcile: the next read must be fresh, a
    /// snapshot would show the old state.
    pub settling: bool,
    /// The secrets fingerprint in status (`secretsHash`) as this process last wrote it, where
    /// it can differ from the cached status (which may not show our own write yet; a stale hash
    /// would send the same values twice). None: the cached status is right.
    secrets_sent: Option<Option<String>>,
    /// Consecutive cleanup attempts that failed permanently (bounded by
    /// [`super::context::MAX_CLEANUP_ATTEMPTS`]).
    cleanup_failures: u32,
    /// The deletion already waited once for a create that may still land.
    cleanup_deferred: bool,
}

impl ObjectRecord {
    /// Records the reason of this reconcile's failure (None: it did not fail) and returns the
    /// one recorded before, if this process saw one.
    pub fn replace_failure_reason(&mut self, reason: Option<&'static str>) -> Option<&'static str> {
        std::mem::replace(&mut self.failure_reason, reason)
    }

    /// The hash of the secret values `sp`'s remote provider last received: as this process
    /// last wrote it in status, else as the (cached) status says.
    pub fn secrets_hash_sent(&self, sp: &SecurityProvider) -> Option<String> {
        match &self.secrets_sent {
            Some(hash) => hash.clone(),
            None => recorded_secrets_hash(sp),
        }
    }

    /// Remembers the secrets fingerprint just written in `sp`'s status, only where it can
    /// differ from what the cached status will show: an object without secret values (most
    /// of them) keeps no hash.
    pub fn remember_secrets_hash(&mut self, sp: &SecurityProvider, hash: Option<String>) {
        let cached = recorded_secrets_hash(sp);
        self.secrets_sent = (hash.is_some() || cached.is_some()).then_some(hash);
    }

    /// Counts one more permanent cleanup failure and returns the count.
    pub fn cleanup_failed(&mut self) -> u32 {
        self.cleanup_failures = self.cleanup_failures.saturating_add(1);
        self.cleanup_failures
    }

    /// True the first time it is asked, false afterwards: the deletion of an object whose
    /// create may still land waits once.
    pub fn defer_cleanup_once(&mut self) -> bool {
        !std::mem::replace(&mut self.cleanup_deferred, true)
    }
}

/// The records of every object, behind one lock held only to take or put back a record.
#[derive(Default)]
pub struct ObjectRecords {
    records: Mutex<HashMap<ObjectRef<SecurityProvider>, ObjectRecord>>,
}

impl ObjectRecords {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SecurityProvider>, ObjectRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the record of `object` out (a default one when none is kept). The controller
    /// runs one reconcile of an object at a time, so nobody else needs it meanwhile.
    pub fn take(&self, object: &ObjectRef<SecurityProvider>) -> ObjectRecord {
        self.lock().remove(object).unwrap_or_default()
    }

    /// Puts a record back; a default record is dropped (nothing to remember).
    pub fn put_back(&self, object: ObjectRef<SecurityProvider>, record: ObjectRecord) {
        if record != ObjectRecord::default() {
            self.lock().insert(object, record);
        }
    }

    /// Forgets `object` entirely.
    pub fn forget(&self, object: &ObjectRef<SecurityProvider>) {
        self.lock().remove(object);
    }

    /// A copy of the record of `object` (unit tests).
    #[cfg(test)]
    pub(crate) fn peek(&self, object: &ObjectRef<SecurityProvider>) -> ObjectRecord {
        self.lock().get(object).cloned().unwrap_or_default()
    }

    /// How many records are kept (unit tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One reconcile's hold on its object, from [`Context::begin`]: its reconcile slot, its
/// connection as the cache showed it, and its record. Dropped at the end of the reconcile,
/// whatever the path: the record goes back, or the object is forgotten.
pub struct Visit<'a> {
    ctx: &'a Context,
    object: ObjectRef<SecurityProvider>,
    /// What is remembered about the object; changed in place by the reconcile.
    pub record: ObjectRecord,
    /// The ProviderConnection the object names (None: not in the cache).
    pub connection: Option<Arc<ProviderConnection>>,
    _slot: Option<ReconcileSlot>,
    forgotten: bool,
}

impl<'a> Visit<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        object: ObjectRef<SecurityProvider>,
        record: ObjectRecord,
        connection: Option<Arc<ProviderConnection>>,
        slot: Option<ReconcileSlot>,
    ) -> Self {
        Visit {
            ctx,
            object,
            record,
            connection,
            _slot: slot,
            forgotten: false,
        }
    }

    /// The object is gone for good (its deletion finished): nothing of it is kept.
    pub fn forget(&mut self) {
        self.forgotten = true;
    }
}

impl Drop for Visit<'_> {
    fn drop(&mut self) {
        if self.forgotten {
            self.ctx.forget_object(&self.object);
        } else {
            let record = std::mem::take(&mut self.record);
            self.ctx.records.put_back(self.object.clone(), record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> ObjectRef<SecurityProvider> {
        ObjectRef::new("sp").within("ns")
    }

    fn with_recorded_hash(hash: Option<&str>) -> SecurityProvider {
        let mut sp = crate::controller::fixtures::provider();
        sp.status = serde_json::from_value(serde_json::json!({"coveo": {"secretsHash": hash}}))
            .expect("a status");
        sp
    }

    #[test]
    fn a_default_record_is_not_kept_and_a_taken_record_comes_back_when_put_back() {
        let records = ObjectRecords::default();
        records.put_back(object(), ObjectRecord::default());
        assert_eq!(records.len(), 0);
        let mut record = records.take(&object());
        record.failures = 2;
        record.settling = true;
        records.put_back(object(), record.clone());
        assert_eq!(records.take(&object()), record);
        assert_eq!(records.len(), 0, "taken out");
        records.put_back(object(), record);
        records.forget(&object());
        assert_eq!(records.peek(&object()), ObjectRecord::default());
    }

    #[test]
    fn the_hash_written_last_wins_over_a_stale_cached_status_and_is_kept_only_when_needed() {
        let stale = with_recorded_hash(Some("old"));
        let mut record = ObjectRecord::default();
        assert_eq!(record.secrets_hash_sent(&stale).as_deref(), Some("old"));
        record.remember_secrets_hash(&stale, Some("new".into()));
        assert_eq!(record.secrets_hash_sent(&stale).as_deref(), Some("new"));
        // Values removed: the written None must win over the cached "old".
        record.remember_secrets_hash(&stale, None);
        assert_eq!(record.secrets_hash_sent(&stale), None);
        // No values, none cached: nothing to remember.
        let none = with_recorded_hash(None);
        record.remember_secrets_hash(&none, None);
        assert_eq!(record, ObjectRecord::default());
    }

    #[test]
    fn a_cleanup_defers_once_and_counts_its_failures() {
        let mut record = ObjectRecord::default();
        assert!(record.defer_cleanup_once());
        assert!(!record.defer_cleanup_once());
        assert_eq!(record.cleanup_failed(), 1);
        assert_eq!(record.cleanup_failed(), 2);
    }
}
