//! Logins between the redirect to the provider and its callback, keyed by the `state` parameter. Anyone can start
//! one with a GET, so the table is bounded in time and size; time is passed in so the rules are tested directly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a person has to finish logging in at the provider; the same as a pending registration waits.
pub const LOGIN_TTL: Duration = Duration::from_secs(15 * 60);

/// At most this many logins are in flight; starting another drops the oldest.
pub const MAX_LOGINS: usize = 1024;

/// In-flight logins, oldest dropped first when full, expired ones never returned.
#[derive(Debug)]
pub struct LoginTable<T> {
    entries: BTreeMap<String, (Instant, T)>,
    ttl: Duration,
    capacity: usize,
}

impl<T> LoginTable<T> {
    /// An empty table with these limits.
    pub fn new(ttl: Duration, capacity: usize) -> LoginTable<T> {
        LoginTable { entries: BTreeMap::new(), ttl, capacity: capacity.max(1) }
    }

    /// Records a login started at `now` under `state`.
    pub fn insert(&mut self, state: String, login: T, now: Instant) {
        self.entries.retain(|_, (started, _)| now.saturating_duration_since(*started) < self.ttl);
        while self.entries.len() >= self.capacity {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (started, _))| *started).map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(state, (now, login));
    }

    /// Removes and returns the login for `state` unless it has expired; each state is usable once.
    pub fn take(&mut self, state: &str, now: Instant) -> Option<T> {
        let (started, login) = self.entries.remove(state)?;
        (now.saturating_duration_since(started) < self.ttl).then_some(login)
    }

    /// How many logins are held (expired ones included until the next insert).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_taken_once() {
        let t0 = Instant::now();
        let mut table = LoginTable::new(Duration::from_secs(60), 10);
        table.insert("s1".into(), 1, t0);
        assert_eq!(table.take("s2", t0), None);
        assert_eq!(table.take("s1", t0 + Duration::from_secs(59)), Some(1));
        assert_eq!(table.take("s1", t0), None, "replaying the callback finds nothing");
    }

    #[test]
    fn expired_logins_are_refused_and_pruned() {
        let t0 = Instant::now();
        let mut table = LoginTable::new(Duration::from_secs(60), 10);
        table.insert("old".into(), 1, t0);
        table.insert("older".into(), 2, t0);
        assert_eq!(table.take("old", t0 + Duration::from_secs(60)), None);
        table.insert("new".into(), 3, t0 + Duration::from_secs(61));
        assert_eq!(table.len(), 1, "the expired entry was dropped by the insert");
        assert_eq!(table.take("new", t0 + Duration::from_secs(62)), Some(3));
    }

    #[test]
    fn a_full_table_drops_the_oldest() {
        let t0 = Instant::now();
        let mut table = LoginTable::new(Duration::from_secs(600), 3);
        for (i, state) in ["c", "a", "b", "d"].into_iter().enumerate() {
            table.insert(state.into(), i, t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(table.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(table.take("c", now), None, "the first one in is the first one out, whatever its key");
        assert_eq!((table.take("a", now), table.take("b", now), table.take("d", now)), (Some(1), Some(2), Some(3)));
        assert!(table.is_empty());
    }
}
