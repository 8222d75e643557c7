//! How a configuration reload (SIGHUP) treats each key: applied live, or read once at start
//! and so reported as needing a restart.
//!
//! Every table implements [`ReloadKeys`] beside its type. An implementation destructures
//! the running value without `..`, so a field added to a table does not compile until it is
//! classified as live or restart; a test (`config::tests`) also checks that every key serde
//! accepts is among the keys compared. A key can therefore not be silently neither.

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// The running daemon applies the new value.
    Live,
    /// The value is read once at start; a change needs a restart.
    Restart,
}

/// One key a comparison looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The dotted key, e.g. `store.path`; a table compared whole is named by its table.
    pub key: &'static str,
    /// When a change of it takes effect.
    pub apply: Apply,
    /// Whether the new value differs from the running one.
    pub changed: bool,
}

/// Every key a comparison looked at, in file order.
#[derive(Debug, Default)]
pub struct KeyChanges {
    keys: Vec<KeyChange>,
}

impl KeyChanges {
    /// Compares a key the running daemon applies.
    pub fn live<T: PartialEq + ?Sized>(&mut self, key: &'static str, old: &T, new: &T) {
        self.record(key, Apply::Live, old != new);
    }

    /// Compares a key read once at start.
    pub fn restart<T: PartialEq + ?Sized>(&mut self, key: &'static str, old: &T, new: &T) {
        self.record(key, Apply::Restart, old != new);
    }

    /// Compares an optional table: its keys one by one when both sides have it; the table
    /// appearing or disappearing is a change of `key` that needs a restart.
    pub fn optional<T: ReloadKeys>(&mut self, key: &'static str, old: &Option<T>, new: &Option<T>) {
        match (old, new) {
            (Some(old), Some(new)) => old.compare(new, self),
            (None, None) => self.record(key, Apply::Restart, false),
            _ => self.record(key, Apply::Restart, true),
        }
    }

    fn record(&mut self, key: &'static str, apply: Apply, changed: bool) {
        self.keys.push(KeyChange {
            key,
            apply,
            changed,
        });
    }

    /// Every key compared.
    pub fn all(&self) -> &[KeyChange] {
        &self.keys
    }

    /// The keys that changed and take effect as `apply` says.
    pub fn changed(&self, apply: Apply) -> Vec<&'static str> {
        self.keys
            .iter()
            .filter(|k| k.changed && k.apply == apply)
            .map(|k| k.key)
            .collect()
    }
}

/// A table of the file whose keys a reload classifies.
pub trait ReloadKeys {
    /// Compares every key of `self` (the running value) with `new`: one call on `changes`
    /// per key (or per sub-table compared whole). Destructure `self` without `..`.
    fn compare(&self, new: &Self, changes: &mut KeyChanges);
}
