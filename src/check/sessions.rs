//! Sessions: a client that presents its context never reads older than its
//! own last write or its last read (read-your-writes, monotonic reads).
//!
//! Per client, in order, the checker keeps the writes the client must see:
//! its acknowledged writes and deletes and every write its reads returned.
//! A session read must return each of those writes, or a write that
//! supersedes it (a delete of the key may be that write: it leaves nothing
//! to read); and it must return nothing that one of them superseded (a
//! value the client's own delete removed, or one older than a value it
//! read). Examined: the session reads.

use std::collections::{BTreeMap, BTreeSet};

use super::{History, Op, Verdict, WriteId, write_of};

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("sessions");
    let writes = history.writes();
    let is_delete = |w: &WriteId| writes.get(w).is_some_and(|w| w.delete);
    // A value with a TTL may have expired since: no read must show it.
    let expires = |w: &WriteId| writes.get(w).is_some_and(|w| w.ttl.is_some());
    let mut deletes: BTreeMap<&str, Vec<WriteId>> = BTreeMap::new();
    // A value with a TTL, once gone, is as a delete: it leaves nothing
    // to read and accounts for what it saw.
    for (&id, w) in writes.iter().filter(|(_, w)| w.delete || w.ttl.is_some()) {
        deletes.entry(w.key).or_default().push(id);
    }
    let mut must_see: BTreeMap<(u32, &str), BTreeSet<WriteId>> = BTreeMap::new();
    for op in &history.ops {
        match op {
            Op::Write {
                id,
                client,
                key,
                acked,
                ..
            } => {
                if *acked {
                    must_see.entry((*client, key)).or_default().insert(*id);
                }
            }
            Op::Read {
                client,
                key,
                values,
                session,
                ..
            } => {
                let returned: BTreeSet<WriteId> =
                    values.iter().filter_map(|v| write_of(v)).collect();
                let seen = must_see.entry((*client, key)).or_default();
                if *session {
                    verdict.examined += 1;
                    // What the read accounts for: the writes it returned
                    // and what they supersede, and what any delete on the
                    // key superseded. A delete leaves nothing to read, so a
                    // read cannot show it saw one; any of them, acknowledged
                    // or not, may be why a value is gone rather than missed.
                    let covered: BTreeSet<WriteId> = returned
                        .iter()
                        .chain(deletes.get(key.as_str()).into_iter().flatten())
                        .flat_map(|&w| writes.superseded_by(w).into_iter().chain([w]))
                        .collect();
                    // A delete leaves no value to return: it is seen when
                    // nothing it removed is returned (checked below).
                    for missing in seen
                        .iter()
                        .filter(|w| !covered.contains(w) && !is_delete(w) && !expires(w))
                    {
                        verdict.violation(
                            key,
                            format!(
                                "client {client} read {values:?}, older than w{missing} it had written or read"
                            ),
                        );
                    }
                    for &known in seen.iter() {
                        let gone = writes.superseded_by(known);
                        for old in returned.iter().filter(|w| gone.contains(w)) {
                            verdict.violation(
                                key,
                                format!(
                                    "client {client} read w{old}, which w{known} it had written or read superseded"
                                ),
                            );
                        }
                    }
                }
                seen.extend(returned);
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: u64, client: u32, saw: &[u64]) -> Op {
        Op::Write {
            id,
            client,
            key: "k".into(),
            saw: saw.to_vec(),
            acked: true,
            delete: false,
            ttl: None,
            refused: false,
        }
    }

    fn delete(id: u64, client: u32, saw: &[u64]) -> Op {
        Op::Write {
            id,
            client,
            key: "k".into(),
            saw: saw.to_vec(),
            acked: true,
            delete: true,
            ttl: None,
            refused: false,
        }
    }

    fn read(client: u32, values: &[&str], session: bool) -> Op {
        Op::Read {
            client,
            key: "k".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            session,
            at_ms: 0,
        }
    }

    #[test]
    fn reading_ones_write_or_a_newer_one_passes() {
        let h = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, 1, &[]),
                read(1, &["w1"], true),
                write(2, 2, &[1]),
                read(1, &["w2"], true),
                // Without a session context a stale read is allowed.
                read(1, &[], false),
            ],
            finals: Default::default(),
            finals_at_ms: 0,
        };
        let verdict = check(&h);
        assert_eq!(verdict.violations, vec![]);
        assert_eq!(verdict.examined, 2);
    }

    #[test]
    fn a_session_that_deleted_never_reads_the_value_again() {
        let h = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, 1, &[]),
                read(1, &["w1"], true),
                delete(2, 1, &[1]),
                // Deleted: nothing to read, which the delete explains.
                read(1, &[], true),
                // The deleted value again: the client's own delete undone.
                read(1, &["w1"], true),
            ],
            finals: Default::default(),
            finals_at_ms: 0,
        };
        let found = check(&h).violations;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("w1, which w2"), "{found:?}");
    }

    #[test]
    fn a_planted_stale_session_read_is_reported() {
        let h = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, 1, &[]),
                // Read-your-writes broken.
                read(1, &[], true),
                write(2, 2, &[1]),
                read(3, &["w2"], true),
                // Monotonic reads broken: client 3 saw w2, then an older state.
                read(3, &["w1"], true),
            ],
            finals: Default::default(),
            finals_at_ms: 0,
        };
        let found = check(&h).violations;
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].message.contains("client 1"));
        assert!(found[1].message.contains("client 3") && found[1].message.contains("w2"));
        assert!(found[2].message.contains("read w1, which w2"), "{found:?}");
    }
}
