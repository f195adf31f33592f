//! Metric handles kept per label set: the series a hot path records into,
//! looked up once.

use std::collections::HashMap;
use std::hash::Hash;

use super::exporter::HANDLE;

/// Metric handles kept per label set, for the paths every request takes.
///
/// `metrics::counter!(name, labels)` finds its series in the recorder's
/// registry on every call: it builds the key, hashes the name and labels
/// and looks them up, about a µs of a single-node GET's 28 (issue 21). A
/// `Handles` resolves each label set once and hands out the handle (an
/// `Arc`) after. It keeps nothing until the recorder is installed, so that
/// a handle resolved before (a no-op) is never kept. The label sets are few
/// and bounded by the caller's key type (static names, a status code).
pub struct Handles<K, H>(parking_lot::RwLock<Option<HashMap<K, H>>>);

impl<K: Hash + Eq, H: Clone> Handles<K, H> {
    pub const fn new() -> Handles<K, H> {
        Handles(parking_lot::const_rwlock(None))
    }

    /// The handle of `key`, resolved by `resolve` the first time.
    pub fn get(&self, key: K, resolve: impl FnOnce() -> H) -> H {
        if HANDLE.get().is_none() {
            return resolve();
        }
        if let Some(handle) = self.0.read().as_ref().and_then(|kept| kept.get(&key)) {
            return handle.clone();
        }
        self.0
            .write()
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert_with(resolve)
            .clone()
    }
}

impl<K: Hash + Eq, H: Clone> Default for Handles<K, H> {
    fn default() -> Self {
        Handles::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{REQUESTS_TOTAL, install};
    use super::*;

    #[test]
    fn kept_handles_count_into_the_series_of_their_labels() {
        let exporter = install();
        static KEPT: Handles<(&str, u16), metrics::Counter> = Handles::new();
        let count = |op: &'static str, status: u16| {
            KEPT.get((op, status), || {
                let status = status.to_string();
                metrics::counter!(REQUESTS_TOTAL, "op" => op, "status" => status, "quorum" => "kept-handles")
            })
        };
        count("get", 200).increment(1);
        count("get", 200).increment(2);
        count("put", 503).increment(1);
        let text = exporter.render();
        let value = |op: &str, status: &str| {
            text.lines()
                .find(|line| {
                    line.starts_with(REQUESTS_TOTAL)
                        && line.contains("quorum=\"kept-handles\"")
                        && line.contains(&format!("op=\"{op}\""))
                        && line.contains(&format!("status=\"{status}\""))
                })
                .and_then(|line| line.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(value("get", "200").as_deref(), Some("3"), "{text}");
        assert_eq!(value("put", "503").as_deref(), Some("1"), "{text}");
        assert_eq!(value("put", "200"), None, "a series nobody counted");
    }
}
