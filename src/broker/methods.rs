//! Per-method call counters and duration histograms, for the `method` label of the metrics.
//!
//! A plugin's method names are its manifest's capability names and the commands it exports,
//! so the label's cardinality is bounded: at most [`MAX_METHODS`] names per plugin and
//! direction, every other call under [`OTHER_METHOD`]. A table's names are fixed when it is
//! made, so recording is a binary search and a few relaxed atomic adds, no lock and no
//! allocation. Each session records into the table made at its handshake; a reload that adds
//! a capability or a command makes a wider table for the new instances, and a snapshot sums
//! every table a plugin has used by name.

use super::histogram::{Histogram, HistogramSnapshot};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinct `method` label values kept per plugin and direction; calls of any other method
/// are counted under [`OTHER_METHOD`].
pub const MAX_METHODS: usize = 256;

/// The `method` label of calls whose method is not in the plugin's table.
pub const OTHER_METHOD: &str = "_other";

/// The live counts of one method.
#[derive(Debug, Default)]
struct Counts {
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    durations: Histogram,
}

/// One direction's per-method counts: the names sorted, then one entry for [`OTHER_METHOD`].
#[derive(Debug)]
pub struct Methods {
    names: Vec<String>,
    counts: Vec<Counts>,
}

/// A method's counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodCounts {
    /// Calls of it allowed by the gate (plugin→host only).
    pub allowed: u64,
    /// Calls of it denied by the gate (plugin→host only).
    pub denied: u64,
    /// Calls that finished with an error.
    pub errors: u64,
    /// Durations of the calls that finished (its `count` is the calls finished).
    pub durations: HistogramSnapshot,
}

impl Methods {
    fn new(names: Vec<String>) -> Self {
        let counts = (0..=names.len()).map(|_| Counts::default()).collect();
        Self { names, counts }
    }

    fn of(&self, method: &str) -> &Counts {
        let i = self
            .names
            .binary_search_by(|n| n.as_str().cmp(method))
            .unwrap_or(self.names.len());
        &self.counts[i]
    }

    /// A call of `method` was decided by the gate.
    pub fn decided(&self, method: &str, allowed: bool) {
        let c = self.of(method);
        let n = if allowed { &c.allowed } else { &c.denied };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// A call of `method` finished after `took`, with an error if `failed`.
    pub fn finished(&self, method: &str, failed: bool, took: Duration) {
        let c = self.of(method);
        if failed {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.durations.observe(took);
    }

    /// True if every one of `names` has its own entry (or the table is full).
    fn covers(&self, names: &[String]) -> bool {
        self.names.len() >= MAX_METHODS
            || names
                .iter()
                .all(|n| self.names.binary_search(n).is_ok() || n == OTHER_METHOD)
    }

    fn add_to(&self, sums: &mut BTreeMap<String, MethodCounts>) {
        let names = self.names.iter().map(String::as_str).chain([OTHER_METHOD]);
        for (name, c) in names.zip(&self.counts) {
            let sum = sums.entry(name.to_owned()).or_default();
            sum.allowed += c.allowed.load(Ordering::Relaxed);
            sum.denied += c.denied.load(Ordering::Relaxed);
            sum.errors += c.errors.load(Ordering::Relaxed);
            let h = c.durations.snapshot();
            if sum.durations.buckets.is_empty() {
                sum.durations.buckets = h.buckets.iter().map(|&(le, _)| (le, 0)).collect();
            }
            for (s, (_, n)) in sum.durations.buckets.iter_mut().zip(&h.buckets) {
                s.1 += n;
            }
            sum.durations.count += h.count;
            sum.durations.sum_us += h.sum_us;
        }
    }
}

/// Every per-method table of one plugin and direction, newest last.
///
/// A new table is made only when a handshake brings a name the newest table lacks, and it
/// holds the union of names (capped), so there are at most [`MAX_METHODS`]` + 1` tables.
#[derive(Debug, Default)]
pub struct MethodTables {
    tables: Mutex<Vec<Arc<Methods>>>,
}

impl MethodTables {
    /// The table a session with these method `names` records into.
    pub fn table_for(&self, names: &[String]) -> Arc<Methods> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(newest) = tables.last() {
            if newest.covers(names) {
                return Arc::clone(newest);
            }
        }
        let mut union: Vec<String> = names
            .iter()
            .filter(|n| *n != OTHER_METHOD)
            .cloned()
            .collect();
        if let Some(newest) = tables.last() {
            union.extend(newest.names.iter().cloned());
        }
        union.sort_unstable();
        union.dedup();
        union.truncate(MAX_METHODS);
        let table = Arc::new(Methods::new(union));
        tables.push(Arc::clone(&table));
        table
    }

    /// Every method's counts, summed over the tables, sorted by name with [`OTHER_METHOD`]
    /// last; empty before the first handshake.
    pub fn snapshot(&self) -> Vec<(String, MethodCounts)> {
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut sums = BTreeMap::new();
        for t in &tables {
            t.add_to(&mut sums);
        }
        let other = sums.remove(OTHER_METHOD);
        let mut out: Vec<_> = sums.into_iter().collect();
        out.extend(other.map(|c| (OTHER_METHOD.to_owned(), c)));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn of<'a>(s: &'a [(String, MethodCounts)], m: &str) -> Option<&'a MethodCounts> {
        s.iter().find(|(n, _)| n == m).map(|(_, c)| c)
    }

    #[test]
    fn names_past_the_cap_and_unknown_ones_fold_into_other() {
        let tables = MethodTables::default();
        let many: Vec<String> = (0..300).map(|i| format!("cap{i:03}")).collect();
        let t = tables.table_for(&many);
        let us = Duration::from_micros(7);
        t.finished("cap000", false, us);
        t.finished("cap299", true, us); // past the cap
        t.decided("doc.set_text", false); // not granted
        let s = tables.snapshot();
        assert_eq!(s.len(), MAX_METHODS + 1);
        assert_eq!(of(&s, "cap000").unwrap().durations.count, 1);
        assert!(of(&s, "cap299").is_none());
        let other = of(&s, OTHER_METHOD).unwrap();
        assert_eq!(
            (other.durations.count, other.errors, other.denied),
            (1, 1, 1)
        );
        assert_eq!(s.last().unwrap().0, OTHER_METHOD);
    }

    #[test]
    fn a_reload_that_adds_a_method_gets_its_own_label_and_keeps_the_old_counts() {
        let tables = MethodTables::default();
        let v1 = tables.table_for(&names(&["add"]));
        assert!(Arc::ptr_eq(&v1, &tables.table_for(&names(&["add"]))));
        v1.finished("add", false, Duration::from_micros(5));
        let v2 = tables.table_for(&names(&["add", "mul"]));
        assert!(!Arc::ptr_eq(&v1, &v2));
        v2.finished("add", false, Duration::from_micros(5));
        v2.finished("mul", true, Duration::from_micros(500));
        // An old instance draining still records into its own table.
        v1.finished("add", false, Duration::from_micros(5));
        let s = tables.snapshot();
        let add = of(&s, "add").unwrap();
        assert_eq!((add.durations.count, add.durations.sum_us), (3, 15));
        assert_eq!(add.durations.buckets[0], (50, 3));
        let mul = of(&s, "mul").unwrap();
        assert_eq!((mul.durations.count, mul.errors), (1, 1));
        assert_eq!(of(&s, OTHER_METHOD).unwrap().durations.count, 0);
        // A version that drops a method reuses the wider table.
        assert!(Arc::ptr_eq(&v2, &tables.table_for(&names(&["mul"]))));
    }
}
