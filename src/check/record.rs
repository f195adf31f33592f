//! The recorder: what clients did, as they did it, into a [`History`].
//!
//! The deterministic simulation and the nemesis against real processes
//! both record through it. Each write gets an id from [`Recorder::next_write`]
//! and stores [`value_of`] its id; a read's reply is turned into the values
//! it returned with [`read_values`]. Operations are recorded in completion
//! order, which is all the checkers need.

use parking_lot::Mutex;

use super::{History, Op, WriteId, value_of};

#[derive(Default)]
pub struct Recorder {
    ops: Mutex<Vec<Op>>,
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

    /// Counts of (writes, acknowledged writes, reads) so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        let ops = self.ops.lock();
        let (mut writes, mut acked, mut reads) = (0, 0, 0);
        for op in ops.iter() {
            match op {
                Op::Write { acked: a, .. } => {
                    writes += 1;
                    acked += usize::from(*a);
                }
                Op::Read { .. } => reads += 1,
            }
        }
        (writes, acked, reads)
    }

    /// The history so far, with what every key held at the end.
    pub fn history(&self, finals: std::collections::BTreeMap<String, Vec<String>>) -> History {
        History {
            ops: self.ops.lock().clone(),
            finals,
        }
    }
}

/// The values a `GET /kv/{key}` reply returned: `None` when the read did
/// not complete (any status but 200, 300 and 404), else one value per live
/// sibling (deletes left out). Values that are not strings are kept as
/// their JSON text, so that a checker reports them as written by no one.
pub fn read_values(status: u16, body: &[u8]) -> Option<Vec<String>> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match status {
        404 => Some(Vec::new()),
        200 => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            Some(vec![text(&value)])
        }
        300 => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let siblings = value.get("siblings")?.as_array()?;
            Some(
                siblings
                    .iter()
                    .filter_map(|s| s.get("value"))
                    .map(text)
                    .collect(),
            )
        }
        _ => None,
    }
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
    fn write_ids_are_unique_and_values_name_them() {
        let recorder = Recorder::new();
        let (a, body_a) = recorder.next_write();
        let (b, _) = recorder.next_write();
        assert_ne!(a, b);
        assert_eq!(body_a, format!("\"w{a}\""));
    }
}
