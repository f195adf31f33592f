//! Siblings: no false ones, no collapsed ones.
//!
//! - On a key whose writes each saw every earlier write (every client wrote
//!   with the context of the latest state), no read may return more than
//!   one value: a sibling there is false.
//! - Two acknowledged writes that are concurrent (neither supersedes the
//!   other) and that no other write supersedes must both be in the key's
//!   final read: concurrent writes are kept as siblings, never collapsed.
//!   (A delete among them leaves nothing to read; the others must stay.)
//!
//! Examined: the keys written.

use std::collections::BTreeMap;

use super::{History, Op, Verdict, WriteId, value_of};

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("siblings");
    let writes = history.writes();
    let mut by_key: BTreeMap<&str, Vec<WriteId>> = BTreeMap::new();
    for op in &history.ops {
        if let Op::Write { id, key, .. } = op {
            by_key.entry(key).or_default().push(*id);
        }
    }
    for (key, ids) in &by_key {
        verdict.examined += 1;
        let supersedes: BTreeMap<WriteId, _> =
            ids.iter().map(|&w| (w, writes.superseded_by(w))).collect();
        // Each write saw all the writes before it: a chain.
        let chain = ids.iter().enumerate().all(|(i, w)| {
            ids[..i]
                .iter()
                .all(|earlier| supersedes[w].contains(earlier))
        });
        if chain {
            for op in &history.ops {
                if let Op::Read { key: k, values, .. } = op
                    && k == key
                    && values.len() > 1
                {
                    verdict.violation(
                        key,
                        format!(
                            "a read returned {values:?} though every write carried the latest context"
                        ),
                    );
                }
            }
        }
        let maximal: Vec<WriteId> = ids
            .iter()
            .copied()
            .filter(|w| writes.get(w).is_some_and(|w| w.acked))
            .filter(|w| !ids.iter().any(|o| supersedes[o].contains(w)))
            .collect();
        if maximal.len() > 1 {
            let finals = history.finals.get(*key).cloned().unwrap_or_default();
            // A delete leaves nothing to read, and a value with a TTL may
            // have expired.
            let deleted = |w: &WriteId| writes.get(w).is_some_and(|w| w.delete || w.ttl.is_some());
            for w in maximal.iter().filter(|w| !deleted(w)) {
                if !finals.contains(&value_of(*w)) {
                    verdict.violation(
                        key,
                        format!(
                            "w{w} is concurrent with {:?} but was collapsed away",
                            maximal.iter().filter(|o| *o != w).collect::<Vec<_>>()
                        ),
                    );
                }
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: u64, saw: &[u64]) -> Op {
        Op::Write {
            id,
            client: 1,
            key: "k".into(),
            saw: saw.to_vec(),
            acked: true,
            delete: false,
            ttl: None,
            refused: false,
        }
    }

    fn read(values: &[&str]) -> Op {
        Op::Read {
            client: 1,
            key: "k".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            session: false,
            at_ms: 0,
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
    fn a_chain_with_one_value_and_concurrent_writes_kept_pass() {
        let chain = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![write(1, &[]), read(&["w1"]), write(2, &[1]), read(&["w2"])],
            finals: finals(&["w2"]),
            finals_at_ms: 0,
        };
        assert_eq!(check(&chain).violations, vec![]);
        let concurrent = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![write(1, &[]), write(2, &[]), read(&["w1", "w2"])],
            finals: finals(&["w1", "w2"]),
            finals_at_ms: 0,
        };
        assert_eq!(check(&concurrent).violations, vec![]);
        assert_eq!(check(&concurrent).examined, 1);
    }

    #[test]
    fn a_planted_false_sibling_and_a_collapse_are_reported() {
        let false_sibling = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![write(1, &[]), write(2, &[1]), read(&["w1", "w2"])],
            finals: finals(&["w2"]),
            finals_at_ms: 0,
        };
        let found = check(&false_sibling).violations;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("latest context"));
        let collapsed = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![write(1, &[]), write(2, &[])],
            finals: finals(&["w2"]),
            finals_at_ms: 0,
        };
        let found = check(&collapsed).violations;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("w1 is concurrent"));
    }
}
