//! `[store]`: where the SQLite outbox lives, how durable its commits are and how long
//! delivered rows are kept.

use std::path::PathBuf;

use serde::Deserialize;

use super::reload::{KeyChanges, ReloadKeys};

/// `[store]`: where the outbox lives and how long delivered rows are kept.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite database file.
    pub path: PathBuf,
    /// SQLite `synchronous` pragma: `full` survives power loss, `normal` survives process crashes.
    pub synchronous: Synchronous,
    /// Delivered rows are pruned after this many days.
    pub delivered_retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/pbxlink/pbxlink.db"),
            synchronous: Synchronous::Full,
            delivered_retention_days: 30,
        }
    }
}

/// SQLite durability level, set explicitly on every connection.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is fsynced: nothing committed is lost, even on power loss.
    Full,
    /// WAL commits are fsynced at checkpoints: a process crash loses nothing, a power cut may.
    Normal,
}

/// The store is opened once at start: every key needs a restart.
impl ReloadKeys for StoreConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let StoreConfig {
            path,
            synchronous,
            delivered_retention_days,
        } = self;
        changes.restart("store.path", path, &new.path);
        changes.restart("store.synchronous", synchronous, &new.synchronous);
        changes.restart(
            "store.delivered_retention_days",
            delivered_retention_days,
            &new.delivered_retention_days,
        );
    }
}
