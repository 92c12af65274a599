//! A governor state store with a hard bound on the number of keys.
//!
//! governor's own keyed stores grow with every new key until `retain_recent` runs, so a client that
//! sends each request with a new key (spoofed header, new address) could grow them without limit
//! between sweeps. This store is sharded; a shard that is full first drops keys whose state has
//! fully refilled (forgetting those changes nothing: a fresh key behaves the same), and only if that
//! frees nothing, the least recently seen eighth of the shard (counted as `evicted`: those clients get
//! a fresh budget, the price of bounded memory).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, QuantaClock, Reference};
use governor::nanos::Nanos;
use governor::state::StateStore;

const SHARDS: usize = 16;

struct Slot {
    /// GCRA theoretical arrival time, relative to the store's start.
    tat: Nanos,
    /// Last time this key was seen, same scale.
    seen: u64,
}

/// Cheap to clone: clones share the same keys (the limiter owns one, the metrics read another).
pub struct BoundedStore<K>(Arc<Inner<K>>);

impl<K> Clone for BoundedStore<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

struct Inner<K> {
    shards: Vec<Mutex<HashMap<K, Slot>>>,
    hasher: RandomState,
    per_shard: usize,
    clock: QuantaClock,
    start: <QuantaClock as Clock>::Instant,
    evicted: AtomicU64,
}

impl<K: Hash + Eq + Clone> BoundedStore<K> {
    /// `clock` must be the clock of the limiter that uses this store, created just before it, so that
    /// this store's notion of "now" is the limiter's (up to the nanoseconds between the two).
    pub fn new(max_keys: usize, clock: QuantaClock) -> Self {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        Self(Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard,
            start: clock.now(),
            clock,
            evicted: AtomicU64::new(0),
        }))
    }

    pub fn len(&self) -> usize {
        self.0.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys forgotten while their budget was still in use.
    pub fn evicted(&self) -> u64 {
        self.0.evicted.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        self.0.clock.now().duration_since(self.0.start).as_u64()
    }

    fn make_room(&self, shard: &mut HashMap<K, Slot>, now: u64) {
        shard.retain(|_, slot| slot.tat.as_u64() > now);
        if shard.len() < self.0.per_shard {
            return;
        }
        let drop = (shard.len() / 8).max(1);
        let mut seen: Vec<u64> = shard.values().map(|slot| slot.seen).collect();
        let (_, cutoff, _) = seen.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        let before = shard.len();
        shard.retain(|_, slot| slot.seen > cutoff);
        self.0
            .evicted
            .fetch_add((before - shard.len()) as u64, Ordering::Relaxed);
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let index = (self.0.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked mid-update of plain numbers: the
        // data is still usable.
        let mut shard = self.0.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = self.now();
        if !shard.contains_key(key) && shard.len() >= self.0.per_shard {
            self.make_room(&mut shard, now);
        }
        // Known keys (the common case) are updated in place, without cloning the key.
        if let Some(slot) = shard.get_mut(key) {
            let (result, tat) = f(Some(slot.tat))?;
            *slot = Slot { tat, seen: now };
            return Ok(result);
        }
        let (result, tat) = f(None)?;
        shard.insert(key.clone(), Slot { tat, seen: now });
        Ok(result)
    }
}
