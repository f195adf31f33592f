//! Nothing deleted comes back, nothing overwritten comes back.
//!
//! A write or delete that carried a context supersedes what that context's
//! read returned: its dot's context covers them, and once it is on every
//! replica the one sibling merge drops them everywhere. So after the heal,
//! no value that an acknowledged write or delete superseded (directly or
//! through a chain) may be read: not through read repair, anti-entropy, a
//! hint handed off late, a replica that was down, a disk restored from a
//! backup, nor a purged tombstone. Examined: the superseded values checked
//! absent, counting those an acknowledged delete superseded apart (a run
//! with deletes must examine some).

use std::collections::BTreeMap;

use super::{History, Verdict, WriteId, write_of};

/// The verdict, and how many of the values examined an acknowledged delete
/// superseded.
pub fn check(history: &History) -> (Verdict, usize) {
    let mut verdict = Verdict::new("deletes");
    let writes = history.writes();
    // Per key: superseded value -> the acknowledged write or delete that
    // superseded it (the first found).
    let mut gone: BTreeMap<&str, BTreeMap<WriteId, (WriteId, bool)>> = BTreeMap::new();
    for (&id, w) in writes.iter().filter(|(_, w)| w.acked) {
        for old in writes.superseded_by(id) {
            let entry = gone.entry(w.key).or_default();
            let by = entry.entry(old).or_insert((id, w.delete));
            by.1 |= w.delete;
        }
    }
    let mut by_deletes = 0;
    for (key, superseded) in &gone {
        let finals = history.finals.get(*key);
        for (&old, &(by, delete)) in superseded {
            verdict.examined += 1;
            by_deletes += usize::from(delete);
            let present = finals.is_some_and(|f| f.iter().any(|v| write_of(v) == Some(old)));
            if present {
                let what = if delete { "deleted" } else { "overwritten" };
                verdict.violation(
                    key,
                    format!("w{old} was {what} by acknowledged w{by} but is read again"),
                );
            }
        }
    }
    (verdict, by_deletes)
}

#[cfg(test)]
mod tests {
    use super::super::Op;
    use super::*;

    fn write(id: u64, saw: &[u64], acked: bool, delete: bool) -> Op {
        Op::Write {
            id,
            client: 1,
            key: "k".into(),
            saw: saw.to_vec(),
            acked,
            delete,
            ttl: None,
            refused: false,
        }
    }

    fn finals(values: &[&str]) -> BTreeMap<String, Vec<String>> {
        [(
            "k".to_string(),
            values.iter().map(|v| v.to_string()).collect(),
        )]
        .into()
    }

    #[test]
    fn deleted_and_overwritten_values_that_stay_gone_pass() {
        // w1 deleted by w2; re-created by w3 (blind); w3 overwritten by w4.
        let h = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, &[], true, false),
                write(2, &[1], true, true),
                write(3, &[], true, false),
                write(4, &[3], true, false),
                // A failed delete of w4 need not have happened.
                write(5, &[4], false, true),
            ],
            finals: finals(&["w4"]),
            finals_at_ms: 0,
        };
        let (verdict, by_deletes) = check(&h);
        assert_eq!(verdict.violations, vec![]);
        assert_eq!((verdict.examined, by_deletes), (2, 1));
    }

    #[test]
    fn a_planted_resurrection_is_reported() {
        let h = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, &[], true, false),
                write(2, &[1], true, true),
                write(3, &[], true, false),
                write(4, &[3], true, false),
            ],
            finals: finals(&["w1", "w3", "w4"]),
            finals_at_ms: 0,
        };
        let (verdict, _) = check(&h);
        let messages: Vec<&str> = verdict
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("w1 was deleted by acknowledged w2"));
        assert!(messages[1].contains("w3 was overwritten by acknowledged w4"));
    }
}
