//! A refused conditional write was not applied.
//!
//! A PUT whose `If-Match` or `If-None-Match` did not hold is answered 412
//! before any dot is minted, so its value must never be read: not by a
//! client, not in the final state. Examined: the refused writes.

use std::collections::BTreeSet;

use super::{History, Op, Verdict, WriteId, write_of};

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("conditions");
    let writes = history.writes();
    let refused: BTreeSet<WriteId> = writes
        .iter()
        .filter(|(_, w)| w.refused)
        .map(|(id, _)| *id)
        .collect();
    verdict.examined = refused.len();
    let reads = history.ops.iter().filter_map(|op| match op {
        Op::Read { key, values, .. } => Some((key.as_str(), values)),
        Op::Write { .. } => None,
    });
    let finals = history.finals.iter().map(|(k, v)| (k.as_str(), v));
    for (key, values) in reads.chain(finals) {
        for id in values.iter().filter_map(|v| write_of(v)) {
            if refused.contains(&id) {
                verdict.violation(key, format!("w{id} was refused with 412 but is read"));
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_write_that_is_read_is_a_violation() {
        let write = |id: u64, refused: bool| Op::Write {
            id,
            client: 1,
            key: "k".into(),
            saw: vec![],
            acked: !refused,
            delete: false,
            ttl: None,
            refused,
        };
        let history = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, false),
                write(2, true),
                Op::Read {
                    client: 1,
                    key: "k".into(),
                    values: vec!["w1".into()],
                    session: false,
                    at_ms: 10,
                },
            ],
            finals: [("k".to_string(), vec!["w1".to_string()])].into(),
            finals_at_ms: 20,
        };
        let verdict = check(&history);
        assert!(verdict.violations.is_empty());
        assert_eq!(verdict.examined, 1);
        let mut applied = history.clone();
        applied.finals.insert("k".into(), vec!["w2".into()]);
        assert_eq!(check(&applied).violations.len(), 1);
    }
}
