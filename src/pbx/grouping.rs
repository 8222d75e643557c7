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
