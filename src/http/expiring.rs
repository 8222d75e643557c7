//! A map whose entries expire after a fixed age and whose size is capped: the `/route`
//! answers cached per caller, and the recent click-to-call requests deduplicated per agent
//! and lead. Neither grows with a flood of distinct callers or clicks: an insert first
//! drops the entries that aged out, then, at the cap, the oldest ones.
//!
//! Entries age by [`tokio::time::Instant`], so tests advance a paused clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Entries that expire `ttl` after they were inserted, at most `capacity` of them.
#[derive(Debug)]
pub struct ExpiringMap<K, V> {
    entries: HashMap<K, (Instant, V)>,
    /// Keys in insertion order with their insertion time; a key re-inserted or removed
    /// leaves a stale element, skipped when it reaches the front.
    order: VecDeque<(Instant, K)>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> ExpiringMap<K, V> {
    /// An empty map of at most `capacity` (at least 1) entries, each kept for `ttl`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The value under `key`, unless it is older than the age limit (then it is dropped).
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let now = Instant::now();
        let fresh = match self.entries.get(key) {
            Some((at, _)) => now.duration_since(*at) < self.ttl,
            None => return None,
        };
        if !fresh {
            self.entries.remove(key);
            return None;
        }
        self.entries.get(key).map(|(_, v)| v)
    }

    /// Whether a fresh value is under `key`.
    pub fn contains(&mut self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Puts `value` under `key` as of now; drops aged entries, then the oldest beyond the cap.
    pub fn insert(&mut self, key: K, value: V) {
        let now = Instant::now();
        self.drop_expired(now);
        while self.order.len() >= self.capacity {
            self.pop_oldest();
        }
        self.order.push_back((now, key.clone()));
        self.entries.insert(key, (now, value));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held now (fresh or not yet dropped), never more than the cap.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn drop_expired(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.ttl)
        {
            self.pop_oldest();
        }
    }

    /// Drops the front of the order, and its entry unless the key was inserted again since.
    fn pop_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|(t, _)| *t == at) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_with_age_and_are_dropped_on_the_next_insert() {
        let mut map = ExpiringMap::new(Duration::from_secs(60), 100);
        map.insert("+919611795983".to_owned(), "100".to_owned());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(
            map.get(&"+919611795983".to_owned()).map(String::as_str),
            Some("100")
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(map.get(&"+919611795983".to_owned()), None);
        assert!(map.is_empty(), "an aged entry read is dropped");
        // Aged entries nobody asks for again go at the next insert.
        for n in 0..50 {
            map.insert(format!("caller-{n}"), "100".to_owned());
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        map.insert("fresh".to_owned(), "101".to_owned());
        assert_eq!(map.len(), 1);
        assert_eq!(map.order.len(), 1, "the insertion order is pruned too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_keys_stays_within_the_cap_oldest_out_first() {
        let mut map = ExpiringMap::new(Duration::from_secs(3600), 1000);
        for n in 0..100_000u32 {
            map.insert(n, n);
            assert!(map.len() <= 1000);
            assert!(map.order.len() <= 1000);
        }
        assert_eq!(map.len(), 1000);
        assert!(!map.contains(&98_999), "the oldest went first");
        assert!(map.contains(&99_000));
        assert!(map.contains(&99_999));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_inserted_again_keeps_its_new_age_and_a_removed_key_is_gone() {
        let mut map = ExpiringMap::new(Duration::from_secs(10), 3);
        map.insert("a", 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        map.insert("a", 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first insertion aged out; its stale order element must not drop the second.
        map.insert("b", 3);
        assert_eq!(map.get(&"a"), Some(&2));
        map.remove(&"a");
        assert!(!map.contains(&"a"));
        // Stale order elements count against the cap, so the order never outgrows it.
        map.insert("c", 4);
        map.insert("d", 5);
        assert!(map.order.len() <= 3);
        assert_eq!(map.get(&"d"), Some(&5));
        assert_eq!(map.get(&"c"), Some(&4));
    }
}
