//! The recorder: what clients did, as they did it, into a [`History`].
//!
//! The deterministic simulation and the nemesis against real processes
//! both record through it. Each write gets an id from [`Recorder::next_write`]
//! and stores [`value_of`] its id; a read's reply is turned into the values
//! it returned with [`read_values`]. Operations are recorded in completion
//! order, which is all the checkers need.

use parking_lot::Mutex;

use super::{History, Op, WriteId, value_of};

/// How many operations of each kind a history holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes of values, and how many of them were acknowledged.
    pub writes: usize,
    pub acked: usize,
    pub deletes: usize,
    pub acked_deletes: usize,
    pub reads: usize,
    /// Updates of CRDT keys, and how many were acknowledged.
    pub updates: usize,
    pub acked_updates: usize,
}

#[derive(Default)]
pub struct Recorder {
    ops: Mutex<Vec<Op>>,
    updates: Mutex<Vec<super::crdts::Update>>,
    next: Mutex<WriteId>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// A fresh write id and the JSON body that stores it.
    pub fn next_write(&self) -> (WriteId, String) {
        let mut next = self.next.lock();
        *next += 1;
        (*next, format!("\"{}\"", value_of(*next)))
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().push(op);
    }

    /// An update of a CRDT key, as it completed.
    pub fn record_update(&self, update: super::crdts::Update) {
        self.updates.lock().push(update);
    }

    /// What the clients did so far.
    pub fn counts(&self) -> Counts {
        let ops = self.ops.lock();
        let mut counts = Counts::default();
        for op in ops.iter() {
            match op {
                Op::Write {
                    acked,
                    delete: true,
                    ..
                } => {
                    counts.deletes += 1;
                    counts.acked_deletes += usize::from(*acked);
                }
                Op::Write { acked, .. } => {
                    counts.writes += 1;
                    counts.acked += usize::from(*acked);
                }
                Op::Read { .. } => counts.reads += 1,
            }
        }
        for update in self.updates.lock().iter() {
            use super::crdts::Update;
            let (Update::Increment { acked, .. }
            | Update::Add { acked, .. }
            | Update::Remove { acked, .. }) = update;
            counts.updates += 1;
            counts.acked_updates += usize::from(*acked);
        }
        counts
    }

    /// The history so far, with what every key held at the end (read
    /// from `finals_at_ms` on).
    pub fn history(
        &self,
        finals: std::collections::BTreeMap<String, Vec<String>>,
        finals_at_ms: u64,
    ) -> History {
        History {
            ops: self.ops.lock().clone(),
            finals,
            finals_at_ms,
            final_scan: None,
            crdts: super::crdts::Crdts {
                updates: self.updates.lock().clone(),
                finals: Default::default(),
            },
        }
    }
}

/// The clients' clock, in ms: the simulated time since the simulation
/// began, or outside one the time since this process first asked. Every
/// time in a history is on it, so a checker compares them.
pub fn now_ms() -> u64 {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = turmoil::sim_elapsed()
        .unwrap_or_else(|| STARTED.get_or_init(std::time::Instant::now).elapsed());
    elapsed.as_millis() as u64
}

/// The values a `GET /kv/{key}` reply returned: `None` when the read did
/// not complete (any status but 200, 300 and 404), else one value per live
/// sibling (deletes left out). Values that are not strings are kept as
/// their JSON text, so that a checker reports them as written by no one.
pub fn read_values(status: u16, body: &[u8]) -> Option<Vec<String>> {
    match status {
        404 => Some(Vec::new()),
        200 => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            Some(vec![text(&value)])
        }
        300 => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            sibling_values(&value)
        }
        _ => None,
    }
}

/// A page of a scan (`GET /kv`): each item's key and values, as
/// [`read_values`] gives a GET's, and the page's `next` cursor. `None`
/// when the reply is not a page.
pub fn scan_page(status: u16, body: &[u8]) -> Option<ScanPage> {
    if status != 200 {
        return None;
    }
    let page: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items = page
        .get("items")?
        .as_array()?
        .iter()
        // A CRDT key's state is not a value these checkers judge (`crdts`
        // reads its own keys).
        .filter(|item| item.get("crdt").is_none())
        .map(|item| {
            let key = item.get("key")?.as_str()?.to_string();
            let values = match item.get("value") {
                Some(value) => vec![text(value)],
                None => sibling_values(item)?,
            };
            Some((key, values))
        })
        .collect::<Option<Vec<_>>>()?;
    let next = page.get("next")?;
    Some((items, next.as_str().map(str::to_string)))
}

/// What a `GET /crdt/{key}` reply says the key holds: `None` when the
/// read did not complete (any status but 200 and 404, or a body that is
/// not a counter, a set or a map of them).
pub fn crdt_held(status: u16, body: &[u8]) -> Option<super::crdts::Held> {
    match status {
        404 => Some(super::crdts::Held::Nothing),
        200 => held(&serde_json::from_slice(body).ok()?),
        _ => None,
    }
}

/// A CRDT state (or a map's field) as `GET /crdt` shows it.
fn held(value: &serde_json::Value) -> Option<super::crdts::Held> {
    use super::crdts::Held;
    match value.get("type")?.as_str()? {
        "counter" => Some(Held::Counter(value.get("value")?.as_i64()?.into())),
        "set" => value
            .get("value")?
            .as_array()?
            .iter()
            .map(|m| m.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .map(Held::Set),
        "map" => value
            .get("value")?
            .as_object()?
            .iter()
            .map(|(name, field)| Some((name.clone(), held(field)?)))
            .collect::<Option<_>>()
            .map(Held::Map),
        _ => None,
    }
}

/// A scan page's items (key, values) and its `next`.
pub type ScanPage = (Vec<(String, Vec<String>)>, Option<String>);

/// A value as the checkers name it: a string as itself, anything else as
/// its JSON text (written by no one).
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The values of `{"siblings": [...]}`, deletes left out.
fn sibling_values(value: &serde_json::Value) -> Option<Vec<String>> {
    let siblings = value.get("siblings")?.as_array()?;
    Some(
        siblings
            .iter()
            .filter_map(|s| s.get("value"))
            .map(text)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_values() {
        assert_eq!(read_values(404, b""), Some(vec![]));
        assert_eq!(read_values(200, b"\"w3\""), Some(vec!["w3".to_string()]));
        let siblings = br#"{"siblings":[{"value":"w1"},{"deleted":true},{"value":{"a":1}}]}"#;
        assert_eq!(
            read_values(300, siblings),
            Some(vec!["w1".to_string(), r#"{"a":1}"#.to_string()])
        );
        assert_eq!(read_values(503, b"{}"), None);
        assert_eq!(read_values(200, b"not json"), None);
    }

    #[test]
    fn scan_pages_become_keys_and_values() {
        let page = br#"{"items":[{"key":"a","value":"w1","context":"c"},
            {"key":"b","siblings":[{"value":"w2"},{"deleted":true},{"value":"w3"}],"context":"c"}],
            "next":"xyz"}"#;
        let (items, next) = scan_page(200, page).expect("a page");
        assert_eq!(
            items,
            vec![
                ("a".to_string(), vec!["w1".to_string()]),
                ("b".to_string(), vec!["w2".to_string(), "w3".to_string()])
            ]
        );
        assert_eq!(next.as_deref(), Some("xyz"));
        assert_eq!(
            scan_page(200, br#"{"items":[],"next":null}"#),
            Some((vec![], None))
        );
        assert_eq!(scan_page(503, b"{}"), None);
        assert_eq!(
            scan_page(200, br#"{"items":[{"nokey":1}],"next":null}"#),
            None
        );
    }

    #[test]
    fn crdt_replies_become_states() {
        use crate::check::crdts::Held;
        assert_eq!(crdt_held(404, b""), Some(Held::Nothing));
        assert_eq!(
            crdt_held(200, br#"{"type":"counter","value":12}"#),
            Some(Held::Counter(12))
        );
        assert_eq!(
            crdt_held(200, br#"{"type":"set","value":["a","b"]}"#),
            Some(Held::Set(["a".to_string(), "b".to_string()].into()))
        );
        assert_eq!(
            crdt_held(
                200,
                br#"{"type":"map","value":{"n":{"type":"counter","value":2},"s":{"type":"set","value":[]}}}"#
            ),
            Some(Held::Map(
                [
                    ("n".to_string(), Held::Counter(2)),
                    ("s".to_string(), Held::Set(Default::default()))
                ]
                .into()
            ))
        );
        assert_eq!(
            crdt_held(200, br#"{"type":"map","value":{"n":{"type":"hll"}}}"#),
            None
        );
        assert_eq!(crdt_held(200, br#"{"type":"set","value":[1]}"#), None);
        assert_eq!(crdt_held(503, b"{}"), None);
        let page = br#"{"items":[{"key":"c","crdt":{"type":"counter","value":1},"context":"x"},
            {"key":"a","value":"w1","context":"c"}],"next":null}"#;
        let (items, _) = scan_page(200, page).expect("a page");
        assert_eq!(items, vec![("a".to_string(), vec!["w1".to_string()])]);
    }

    #[test]
    fn write_ids_are_unique_and_values_name_them() {
        let recorder = Recorder::new();
        let (a, body_a) = recorder.next_write();
        let (b, _) = recorder.next_write();
        assert_ne!(a, b);
        assert_eq!(body_a, format!("\"w{a}\""));
    }
}
