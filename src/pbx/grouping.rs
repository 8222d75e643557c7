//! Grouping a PBX's pending records into calls, shared by every CDR assembler: records that
//! share a key (Asterisk: a linkedid or a channel; FreeSWITCH: a leg uuid) are joined with a
//! union-find, groups come out in the order of their first record, and the groups a caller
//! takes are removed from its pending list in one pass.

use std::collections::HashMap;

/// A union-find over string keys.
#[derive(Debug, Default)]
pub struct KeyedUnionFind {
    ids: HashMap<String, usize>,
    parent: Vec<usize>,
}

impl KeyedUnionFind {
    /// The node of `key`, created on first use.
    pub fn node(&mut self, key: &str) -> usize {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.parent.len();
        self.ids.insert(key.to_owned(), id);
        self.parent.push(id);
        id
    }

    /// The representative of `x`'s set (with path halving).
    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Joins the sets of `a` and `b`.
    pub fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb.max(ra)] = rb.min(ra);
        }
    }

    /// Record indices grouped by the set of each record's node (`node_of[i]` is record `i`'s),
    /// groups in the order of their first record.
    pub fn groups(&mut self, node_of: Vec<usize>) -> Vec<Vec<usize>> {
        let mut by_root: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for (i, node) in node_of.into_iter().enumerate() {
            let root = self.find(node);
            by_root
                .entry(root)
                .or_insert_with(|| {
                    order.push(root);
                    Vec::new()
                })
                .push(i);
        }
        order
            .into_iter()
            .filter_map(|root| by_root.remove(&root))
            .collect()
    }
}

/// The groups of `pending` for which `keep` is false (they are taken), each as its members.
pub fn select<P>(
    pending: &[P],
    groups: Vec<Vec<usize>>,
    keep: impl Fn(&[&P]) -> bool,
) -> Vec<(Vec<usize>, Vec<&P>)> {
    groups
        .into_iter()
        .filter_map(|group| {
            let members: Vec<&P> = group.iter().map(|&i| &pending[i]).collect();
            (!keep(&members)).then_some((group, members))
        })
        .collect()
}

/// Takes the groups of `pending` for which `keep` is false: each taken group's members go
/// through `assemble`, and the indices of every taken record come back for
/// [`remove_taken`] (called by the owner of `pending` once `assemble`'s borrows end).
pub fn take<P, T>(
    pending: &[P],
    groups: Vec<Vec<usize>>,
    keep: impl Fn(&[&P]) -> bool,
    mut assemble: impl FnMut(&[&P]) -> T,
) -> (Vec<T>, Vec<usize>) {
    let taken = select(pending, groups, keep);
    let assembled = taken.iter().map(|(_, members)| assemble(members)).collect();
    let indices = taken.into_iter().flat_map(|(group, _)| group).collect();
    (assembled, indices)
}

/// When a group of pending records is a complete call, the same rule for every CDR
/// assembler: a group with its root record is complete once no record came for `settle_ms`,
/// or once all its records ended well before the newest record seen (a backlog read at
/// once); a group without its root is released after `max_call_secs` without a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settling {
    settle_ms: i64,
    /// A group whose records all ended this long before the newest record seen is complete
    /// whatever its read time (bounds memory while a backlog is read).
    watermark_lag_ms: i64,
    /// A group without its root is released after this long without new records.
    max_call_ms: i64,
    /// The latest end of any record seen.
    newest_end_ms: i64,
}

impl Settling {
    /// The rule for `settle_ms` and `max_call_secs` (the sources' settings).
    pub fn new(settle_ms: u64, max_call_secs: u64) -> Self {
        let settle_ms = i64::try_from(settle_ms).unwrap_or(i64::MAX);
        Self {
            settle_ms,
            watermark_lag_ms: settle_ms.max(60_000),
            max_call_ms: i64::try_from(max_call_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            newest_end_ms: i64::MIN,
        }
    }

    /// Notes a record that ended at `end_ms`.
    pub fn saw_end(&mut self, end_ms: i64) {
        self.newest_end_ms = self.newest_end_ms.max(end_ms);
    }

    /// Whether a group is still waiting at `now_ms`: `last_read_ms` is when its newest
    /// record was read, `has_root` whether its root record is in, `last_end_ms` the latest
    /// end of its records.
    pub fn waits(
        &self,
        now_ms: i64,
        last_read_ms: Option<i64>,
        has_root: bool,
        last_end_ms: Option<i64>,
    ) -> bool {
        let quiet_for = now_ms.saturating_sub(last_read_ms.unwrap_or(now_ms));
        if !has_root {
            return quiet_for < self.max_call_ms;
        }
        let last_end = last_end_ms.unwrap_or(self.newest_end_ms);
        let overtaken = self.newest_end_ms.saturating_sub(last_end) >= self.watermark_lag_ms;
        !(quiet_for >= self.settle_ms || overtaken)
    }
}

/// Removes the records at `taken` (indices into `pending`) in one pass, keeping the order.
pub fn remove_taken<P>(pending: &mut Vec<P>, taken: impl IntoIterator<Item = usize>) {
    let mut gone = vec![false; pending.len()];
    for i in taken {
        if let Some(g) = gone.get_mut(i) {
            *g = true;
        }
    }
    let mut i = 0;
    pending.retain(|_| {
        let keep = !gone[i];
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_keys_form_one_group_in_first_record_order() {
        let mut uf = KeyedUnionFind::default();
        let a = uf.node("a");
        let b = uf.node("b");
        let c = uf.node("c");
        uf.union(c, a);
        let groups = uf.groups(vec![b, a, c, b]);
        assert_eq!(groups, [vec![0, 3], vec![1, 2]]);
    }

    #[test]
    fn only_groups_not_kept_are_taken_and_removed() {
        let mut pending = vec![10, 11, 12, 13];
        let taken = select(&pending, vec![vec![0, 2], vec![1], vec![3]], |m| {
            m.contains(&&11)
        });
        let ids: Vec<Vec<usize>> = taken.iter().map(|(g, _)| g.clone()).collect();
        assert_eq!(ids, [vec![0, 2], vec![3]]);
        assert_eq!(taken[0].1, [&10, &12]);
        remove_taken(&mut pending, ids.into_iter().flatten());
        assert_eq!(pending, [11]);
    }
}
