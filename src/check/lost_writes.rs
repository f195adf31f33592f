//! No acknowledged write lost, no value from nowhere.
//!
//! After the heal, each key's final read must account for every
//! acknowledged write to it: its value is there, or a write whose context
//! covered it is accounted for (a chain of overwrites ending in a present
//! value, or in a delete). Every value there must be one some client wrote
//! to that key. A delete, acknowledged or not, accounts for what it saw:
//! it leaves nothing to read, and a delete that failed may still have been
//! applied. Examined: the acknowledged writes of values.

use std::collections::{BTreeMap, BTreeSet};

use super::{History, Verdict, WriteId, write_of};

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("lost_writes");
    let writes = history.writes();
    for (key, values) in &history.finals {
        for value in values {
            let wrote = write_of(value).and_then(|id| writes.get(&id));
            if wrote.is_none_or(|w| w.key != key || w.delete) {
                verdict.violation(
                    key,
                    format!("`{value}` was read but no client wrote it to this key"),
                );
            }
        }
    }
    // Per key, what the final read accounts for: the writes present, the
    // deletes, and everything they supersede.
    let mut accounted: BTreeMap<&str, BTreeSet<WriteId>> = BTreeMap::new();
    for (key, values) in &history.finals {
        let present = values.iter().filter_map(|v| write_of(v));
        accounted.insert(
            key,
            present
                .flat_map(|w| writes.superseded_by(w).into_iter().chain([w]))
                .collect(),
        );
    }
    // A delete, and a value with a TTL once gone, leave nothing to read
    // and account for what they saw.
    for (&id, w) in writes.iter().filter(|(_, w)| w.delete || w.ttl.is_some()) {
        accounted
            .entry(w.key)
            .or_default()
            .extend(writes.superseded_by(id).into_iter().chain([id]));
    }
    // A value with a TTL may be gone by the end: `expiry` checks those.
    for (&id, w) in writes
        .iter()
        .filter(|(_, w)| w.acked && !w.delete && w.ttl.is_none())
    {
        verdict.examined += 1;
        if !accounted.get(w.key).is_some_and(|a| a.contains(&id)) {
            verdict.violation(
                w.key,
                format!("acknowledged write w{id} is neither present nor superseded"),
            );
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::super::Op;
    use super::*;

    fn write(id: u64, key: &str, saw: &[u64], acked: bool) -> Op {
        Op::Write {
            id,
            client: 1,
            key: key.into(),
            saw: saw.to_vec(),
            acked,
            delete: false,
            ttl: None,
            refused: false,
        }
    }

    fn delete(id: u64, key: &str, saw: &[u64], acked: bool) -> Op {
        Op::Write {
            id,
            client: 1,
            key: key.into(),
            saw: saw.to_vec(),
            acked,
            delete: true,
            ttl: None,
            refused: false,
        }
    }

    fn history(ops: Vec<Op>, finals: &[(&str, &[&str])]) -> History {
        History {
            final_scan: None,
            crdts: Default::default(),
            ops,
            finals: finals
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            finals_at_ms: 0,
        }
    }

    #[test]
    fn an_overwritten_chain_a_kept_sibling_or_a_delete_accounts_for_a_write() {
        // w1 <- w2 <- w3 overwrites; w4 concurrent with w3, kept as a sibling;
        // w5 failed and is gone, which is allowed; w6 deleted by w7, even
        // though that delete failed (it may have been applied).
        let h = history(
            vec![
                write(1, "k", &[], true),
                write(2, "k", &[1], true),
                write(3, "k", &[2], true),
                write(4, "k", &[2], true),
                write(5, "k", &[], false),
                write(6, "d", &[], true),
                delete(7, "d", &[6], false),
            ],
            &[("k", &["w3", "w4"]), ("d", &[])],
        );
        let verdict = check(&h);
        assert_eq!(verdict.violations, vec![]);
        assert_eq!(verdict.examined, 5);
    }

    #[test]
    fn a_planted_loss_and_a_value_from_nowhere_are_reported() {
        // Last writer wins dropped w4: a concurrent, acknowledged write.
        let h = history(
            vec![
                write(1, "k", &[], true),
                write(3, "k", &[1], true),
                write(4, "k", &[1], true),
                write(9, "other", &[], true),
                delete(10, "k", &[], true),
            ],
            &[("k", &["w3", "w7", "w9", "w10"]), ("other", &["w9"])],
        );
        let found = check(&h).violations;
        let messages: Vec<&str> = found.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(found.len(), 4, "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("w4 is neither")));
        assert!(messages.iter().any(|m| m.contains("`w7`")));
        assert!(
            messages.iter().any(|m| m.contains("`w9`")),
            "a value written to another key"
        );
        assert!(
            messages.iter().any(|m| m.contains("`w10`")),
            "a delete has no value to read"
        );
    }
}
