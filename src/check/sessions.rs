//! Sessions: a client that presents its context never reads older than its
//! own last write or its last read (read-your-writes, monotonic reads).
//!
//! Per client, in order, the checker keeps the writes the client must see:
//! its acknowledged writes and every write its reads returned. A session
//! read must return each of them, or a write that supersedes it.

use std::collections::{BTreeMap, BTreeSet};

use super::{History, Op, Violation, WriteId, write_of};

pub fn check(history: &History) -> Vec<Violation> {
    let writes = history.writes();
    let mut must_see: BTreeMap<(u32, &str), BTreeSet<WriteId>> = BTreeMap::new();
    let mut out = Vec::new();
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
            } => {
                let returned: BTreeSet<WriteId> =
                    values.iter().filter_map(|v| write_of(v)).collect();
                let seen = must_see.entry((*client, key)).or_default();
                if *session {
                    let covered: BTreeSet<WriteId> = returned
                        .iter()
                        .flat_map(|&w| writes.superseded_by(w).into_iter().chain([w]))
                        .collect();
                    for missing in seen.iter().filter(|w| !covered.contains(w)) {
                        out.push(Violation {
                            checker: "sessions",
                            key: key.clone(),
                            message: format!(
                                "client {client} read {values:?}, older than w{missing} it had written or read"
                            ),
                        });
                    }
                }
                seen.extend(returned);
            }
        }
    }
    out
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
        }
    }

    fn read(client: u32, values: &[&str], session: bool) -> Op {
        Op::Read {
            client,
            key: "k".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            session,
        }
    }

    #[test]
    fn reading_ones_write_or_a_newer_one_passes() {
        let h = History {
            ops: vec![
                write(1, 1, &[]),
                read(1, &["w1"], true),
                write(2, 2, &[1]),
                read(1, &["w2"], true),
                // Without a session context a stale read is allowed.
                read(1, &[], false),
            ],
            finals: Default::default(),
        };
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_planted_stale_session_read_is_reported() {
        let h = History {
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
        };
        let found = check(&h);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].message.contains("client 1"));
        assert!(found[1].message.contains("client 3") && found[1].message.contains("w2"));
    }
}
