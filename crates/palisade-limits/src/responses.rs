//! Active responses: temporary blocks and tightened limits on one client address or one principal,
//! each with an expiry. Detectors add them when an alert opens, operators through the admin API.
//!
//! The table is read on every request, so the common case (no response active) is one atomic load.
//! With a shared store, every gateway publishes what it adds to a Redis hash and picks up what the
//! others added; revocations go to a second hash, so a response that Redis lost (a restart) is
//! published again instead of being lifted, while one revoked anywhere is lifted everywhere.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use palisade_core::config::Rate;
use serde::{Deserialize, Serialize};

use crate::shared::{SharedStore, StoreError};

/// Who a response applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A client address (IPv4-mapped IPv6 is stored as IPv4).
    Ip(IpAddr),
    /// An authenticated principal's subject.
    Subject(String),
}

impl Target {
    pub fn ip(address: IpAddr) -> Target {
        Target::Ip(address.to_canonical())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Block,
    Limit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Limit => "limit",
        }
    }
}

/// One response as it is listed, stored in Redis and recorded in audit events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveResponse {
    /// Random, unguessable; names the response in the admin API.
    pub id: String,
    #[serde(flatten)]
    pub target: Target,
    pub action: Action,
    /// For `limit`: the rate the target is held to (`1/s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Why: the alert's message, or the operator's reason.
    pub reason: String,
    /// `detector:<name>` or `admin`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<u64>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub expires_at: u64,
}

impl ActiveResponse {
    /// A new response with a fresh id, applying from `now` for `ttl`.
    pub fn new(target: Target, action: Action, rate: Option<Rate>, ttl: Duration, now: u64) -> ActiveResponse {
        let id: [u8; 12] = rand::random();
        ActiveResponse {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            target,
            action,
            rate: rate.map(|r| format!("{r:?}")),
            reason: String::new(),
            source: "admin".into(),
            alert_id: None,
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs().max(1)),
        }
    }
}

/// What the request path must do about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Blocked,
    Limited { retry_after: Duration },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("{0} responses are active already (detection.max_responses)")]
    Full(usize),
    #[error("invalid rate {0:?}")]
    InvalidRate(String),
}

struct Entry {
    response: ActiveResponse,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Published to the shared store.
    shared: bool,
}

#[derive(Default)]
struct Entries {
    ips: HashMap<IpAddr, Entry>,
    subjects: HashMap<String, Entry>,
}

impl Entries {
    fn map_of(&mut self, target: &Target) -> Option<&mut Entry> {
        match target {
            Target::Ip(ip) => self.ips.get_mut(ip),
            Target::Subject(subject) => self.subjects.get_mut(subject),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Entry> {
        self.ips.values().chain(self.subjects.values())
    }

    fn remove_where(&mut self, mut condition: impl FnMut(&Entry) -> bool) -> Vec<ActiveResponse> {
        let mut removed = Vec::new();
        let mut take = |entry: &Entry| {
            let gone = condition(entry);
            if gone {
                removed.push(entry.response.clone());
            }
            !gone
        };
        self.ips.retain(|_, entry| take(entry));
        self.subjects.retain(|_, entry| take(entry));
        removed
    }
}

pub struct ResponseTable {
    entries: RwLock<Entries>,
    /// Entries in the table (the request path's fast check).
    active: AtomicUsize,
    max: AtomicUsize,
}

/// The Redis hash of active responses (id → JSON) and of revoked ones (id → expiry).
pub const SHARED_KEY: &str = "palisade:responses";
pub const REVOKED_KEY: &str = "palisade:responses:revoked";

impl ResponseTable {
    pub fn new(max: usize) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
    }

    /// What applies to a request from `ip` at second `now`, if anything.
    pub fn check_ip(&self, ip: IpAddr, now: u64) -> Option<Enforcement> {
        if self.is_empty() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        enforce(entries.ips.get(&ip.to_canonical())?, now)
    }

    /// What applies to a request made as `subject` at second `now`, if anything.
    pub fn check_subject(&self, subject: &str, now: u64) -> Option<Enforcement> {
        if self.is_empty() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        enforce(entries.subjects.get(subject)?, now)
    }

    /// Whether `subject` is blocked (not merely limited) at second `now`: a quarantined workload
    /// identity, checked for every request on a connection that presented it, without spending a
    /// tightened limit's budget.
    pub fn blocks_subject(&self, subject: &str, now: u64) -> bool {
        if self.is_empty() {
            return false;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .subjects
            .get(subject)
            .is_some_and(|entry| entry.limiter.is_none() && entry.response.expires_at > now)
    }

    /// Adds `response`, replacing one on the same target. Returns the replaced one.
    pub fn insert(&self, response: ActiveResponse) -> Result<Option<ActiveResponse>, ResponseError> {
        self.insert_entry(response, false)
    }

    fn insert_entry(&self, response: ActiveResponse, shared: bool) -> Result<Option<ActiveResponse>, ResponseError> {
        let limiter = match (&response.action, &response.rate) {
            (Action::Limit, Some(rate)) => Some(limiter(rate)?),
            (Action::Limit, None) => return Err(ResponseError::InvalidRate(String::new())),
            (Action::Block, _) => None,
        };
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let max = self.max.load(Ordering::Relaxed);
        let exists = entries.map_of(&response.target).is_some();
        if !exists && entries.ips.len() + entries.subjects.len() >= max {
            return Err(ResponseError::Full(max));
        }
        let entry = Entry {
            response,
            limiter,
            shared,
        };
        let replaced = match entry.response.target.clone() {
            Target::Ip(ip) => entries.ips.insert(ip, entry),
            Target::Subject(subject) => entries.subjects.insert(subject, entry),
        };
        self.active
            .store(entries.ips.len() + entries.subjects.len(), Ordering::Relaxed);
        Ok(replaced.map(|entry| entry.response))
    }

    /// Removes the response with `id`.
    pub fn remove(&self, id: &str) -> Option<ActiveResponse> {
        self.remove_where(|entry| entry.response.id == id).pop()
    }

    /// Removes the responses expired at `now` and returns them.
    pub fn expire(&self, now: u64) -> Vec<ActiveResponse> {
        self.remove_where(|entry| entry.response.expires_at <= now)
    }

    fn remove_where(&self, condition: impl FnMut(&Entry) -> bool) -> Vec<ActiveResponse> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let removed = entries.remove_where(condition);
        self.active
            .store(entries.ips.len() + entries.subjects.len(), Ordering::Relaxed);
        removed
    }

    /// Every response, oldest first.
    pub fn list(&self) -> Vec<ActiveResponse> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<ActiveResponse> = entries.all().map(|entry| entry.response.clone()).collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// Brings the table in line with the shared store: publishes what is not there yet (new here,
    /// or lost by the store), takes over what other gateways added, and lifts what was revoked.
    /// Returns the responses taken over and those lifted.
    pub async fn synchronize(
        &self,
        store: &SharedStore,
        now: u64,
    ) -> Result<(Vec<ActiveResponse>, Vec<ActiveResponse>), StoreError> {
        let remote: HashMap<String, String> = store.query(redis::cmd("HGETALL").arg(SHARED_KEY)).await?;
        let revoked: HashMap<String, u64> = store.query(redis::cmd("HGETALL").arg(REVOKED_KEY)).await?;
        let lifted = self.remove_where(|entry| revoked.contains_key(&entry.response.id));
        let local: HashSet<String> = self.list().into_iter().map(|r| r.id).collect();
        let mut taken_over = Vec::new();
        let mut stale = Vec::new();
        for (id, json) in &remote {
            let Ok(response) = serde_json::from_str::<ActiveResponse>(json) else {
                stale.push(id.clone());
                continue;
            };
            if response.expires_at <= now || revoked.contains_key(id) {
                stale.push(id.clone());
            } else if !local.contains(id) {
                // Two responses on one target (taken on two gateways at once, or one replaced): the
                // newer wins everywhere and the older leaves the store.
                let newer_here = self
                    .newest_for(&response.target)
                    .is_some_and(|(created, other)| (created, other.as_str()) > (response.created_at, id.as_str()));
                if newer_here {
                    stale.push(id.clone());
                } else if self.insert_entry(response.clone(), true).is_ok() {
                    taken_over.push(response);
                }
            }
        }
        for response in self.unpublished(&remote) {
            let json = serde_json::to_string(&response).unwrap_or_default();
            store
                .query::<()>(redis::cmd("HSET").arg(SHARED_KEY).arg(&response.id).arg(json))
                .await?;
            self.mark_shared(&response.id);
        }
        if !stale.is_empty() {
            store
                .query::<()>(redis::cmd("HDEL").arg(SHARED_KEY).arg(&stale))
                .await?;
        }
        let old_revocations: Vec<&String> = revoked.iter().filter(|(_, e)| **e <= now).map(|(id, _)| id).collect();
        if !old_revocations.is_empty() {
            store
                .query::<()>(redis::cmd("HDEL").arg(REVOKED_KEY).arg(&old_revocations))
                .await?;
        }
        Ok((taken_over, lifted))
    }

    /// Records a revocation in the shared store so that every gateway lifts the response.
    pub async fn publish_revocation(store: &SharedStore, response: &ActiveResponse) -> Result<(), StoreError> {
        store
            .query::<()>(
                redis::cmd("HSET")
                    .arg(REVOKED_KEY)
                    .arg(&response.id)
                    .arg(response.expires_at),
            )
            .await?;
        store
            .query::<()>(redis::cmd("HDEL").arg(SHARED_KEY).arg(&response.id))
            .await
    }

    /// The creation time and id of the response on `target` here, if any.
    fn newest_for(&self, target: &Target) -> Option<(u64, String)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = match target {
            Target::Ip(ip) => entries.ips.get(ip),
            Target::Subject(subject) => entries.subjects.get(subject),
        }?;
        Some((entry.response.created_at, entry.response.id.clone()))
    }

    fn unpublished(&self, remote: &HashMap<String, String>) -> Vec<ActiveResponse> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .all()
            .filter(|entry| !entry.shared || !remote.contains_key(&entry.response.id))
            .map(|entry| entry.response.clone())
            .collect()
    }

    fn mark_shared(&self, id: &str) {
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entries = &mut *guard;
        for entry in entries.ips.values_mut().chain(entries.subjects.values_mut()) {
            if entry.response.id == id {
                entry.shared = true;
            }
        }
    }
}

fn enforce(entry: &Entry, now: u64) -> Option<Enforcement> {
    if entry.response.expires_at <= now {
        return None;
    }
    match &entry.limiter {
        None => Some(Enforcement::Blocked),
        Some(limiter) => match limiter.check() {
            Ok(()) => None,
            Err(not_until) => Some(Enforcement::Limited {
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(&DefaultClock::default())),
            }),
        },
    }
}

fn limiter(rate: &str) -> Result<DefaultDirectRateLimiter, ResponseError> {
    let invalid = || ResponseError::InvalidRate(rate.to_string());
    let rate = Rate::parse(rate).map_err(|_| invalid())?;
    let count = NonZeroU32::new(rate.count).ok_or_else(invalid)?;
    let quota = Quota::with_period(rate.period / rate.count)
        .ok_or_else(invalid)?
        .allow_burst(count);
    Ok(RateLimiter::direct(quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ip: &str, now: u64, ttl: u64) -> ActiveResponse {
        ActiveResponse::new(
            Target::ip(ip.parse().unwrap()),
            Action::Block,
            None,
            Duration::from_secs(ttl),
            now,
        )
    }

    #[test]
    fn a_block_applies_to_its_address_until_it_expires() {
        let table = ResponseTable::new(10);
        assert!(table.is_empty());
        table.insert(block("192.0.2.1", 100, 60)).unwrap();
        assert_eq!(
            table.check_ip("192.0.2.1".parse().unwrap(), 100),
            Some(Enforcement::Blocked)
        );
        assert_eq!(
            table.check_ip("::ffff:192.0.2.1".parse().unwrap(), 159),
            Some(Enforcement::Blocked),
            "IPv4-mapped IPv6 is the same client"
        );
        assert_eq!(table.check_ip("192.0.2.2".parse().unwrap(), 100), None);
        assert_eq!(table.check_ip("192.0.2.1".parse().unwrap(), 160), None, "expired");
        assert_eq!(table.expire(160).len(), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn a_limit_lets_the_rate_through_and_refuses_the_rest() {
        let table = ResponseTable::new(10);
        let limit = ActiveResponse::new(
            Target::Subject("mallory".into()),
            Action::Limit,
            Some(Rate::parse("2/min").unwrap()),
            Duration::from_secs(60),
            0,
        );
        let written = limit.rate.clone().unwrap();
        assert_eq!(Rate::parse(&written), Rate::parse("2/min"), "{written} reads back");
        table.insert(limit).unwrap();
        assert_eq!(table.check_subject("mallory", 1), None);
        assert_eq!(table.check_subject("mallory", 1), None);
        assert!(matches!(
            table.check_subject("mallory", 1),
            Some(Enforcement::Limited { retry_after }) if retry_after > Duration::from_secs(20)
        ));
        assert_eq!(table.check_subject("alice", 1), None);
    }

    #[test]
    fn the_table_is_bounded_and_responses_are_revocable_by_id() {
        let table = ResponseTable::new(2);
        let first = block("192.0.2.1", 0, 60);
        table.insert(first.clone()).unwrap();
        table.insert(block("192.0.2.2", 0, 60)).unwrap();
        assert_eq!(table.insert(block("192.0.2.3", 0, 60)), Err(ResponseError::Full(2)));
        let again = block("192.0.2.1", 10, 60);
        assert_eq!(
            table.insert(again).unwrap(),
            Some(first.clone()),
            "same target: replaced"
        );
        let listed = table.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(table.remove(&listed[0].id).map(|r| r.id), Some(listed[0].id.clone()));
        assert_eq!(table.remove("unknown"), None);
        assert_eq!(table.list().len(), 1);
    }

    #[test]
    fn responses_serialize_flat_and_round_trip() {
        let response = block("192.0.2.9", 5, 10);
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["ip"], "192.0.2.9");
        assert_eq!(json["action"], "block");
        assert_eq!(json["expires_at"], 15);
        let back: ActiveResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, response);
    }
}
