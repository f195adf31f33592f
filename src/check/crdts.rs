//! CRDT keys under faults: counters count what was acknowledged and no
//! more than what was attempted, and sets keep every acknowledged add no
//! remove saw and lose every member an acknowledged remove took.
//!
//! The workload's counters only go up (increments of 1 to 5), so the final
//! value of a counter bounds cleanly: at least the sum of its acknowledged
//! increments (each was stored by `w` replicas), at most the sum of all
//! increments sent (one that failed may or may not have been applied, and
//! none may count twice). Every member of a set is added once, by one
//! write, and only removed by a client that read it (with that read's
//! context), so:
//!
//! - a member whose add was acknowledged and that no remove named is in
//!   the final set;
//! - a member an acknowledged remove named is not: the remove saw its one
//!   add, and nothing adds it again;
//! - every member in the final set was added by some client.
//!
//! A map's fields are held to the same laws, each as a key of its own
//! (`m0.n`, `m0.s`: [`Held::fields`]).
//!
//! Examined: every increment, add and remove of a key whose final state
//! was read.

use std::collections::{BTreeMap, BTreeSet};

use super::{History, Verdict};

/// One client update of a CRDT key, as it completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    Increment {
        key: String,
        n: u64,
        acked: bool,
    },
    Add {
        key: String,
        member: String,
        acked: bool,
    },
    Remove {
        key: String,
        members: Vec<String>,
        acked: bool,
    },
}

/// What a CRDT key held at the end, read at r=all after the heal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// A counter's value (the workload's counters hold no more than an
    /// `i128`).
    Counter(i128),
    Set(BTreeSet<String>),
    /// A map's fields by name (the checks see each field as a key of its
    /// own: [`Held::fields`]).
    Map(BTreeMap<String, Held>),
    /// The key was never written (a 404).
    Nothing,
}

impl Held {
    /// What a map `key` held, as the keys `key.field` of each of `fields`
    /// (a field the map lacks, or a map never written, holds nothing).
    pub fn fields(self, key: &str, fields: &[&str]) -> Vec<(String, Held)> {
        let mut held = match self {
            Held::Map(held) => held,
            _ => BTreeMap::new(),
        };
        fields
            .iter()
            .map(|f| {
                let value = held.remove(*f).unwrap_or(Held::Nothing);
                (format!("{key}.{f}"), value)
            })
            .collect()
    }
}

/// The CRDT part of a history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Crdts {
    pub updates: Vec<Update>,
    pub finals: BTreeMap<String, Held>,
}

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("crdts");
    let crdts = &history.crdts;
    let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut attempted: BTreeMap<&str, u64> = BTreeMap::new();
    let mut added: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    let mut removed: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for update in &crdts.updates {
        let key = match update {
            Update::Increment { key, .. }
            | Update::Add { key, .. }
            | Update::Remove { key, .. } => key,
        };
        if !crdts.finals.contains_key(key) {
            continue;
        }
        verdict.examined += 1;
        match update {
            Update::Increment { key, n, acked: a } => {
                *attempted.entry(key).or_default() += n;
                if *a {
                    *acked.entry(key).or_default() += n;
                }
            }
            Update::Add { key, member, acked } => {
                let by = added.entry(key).or_default().entry(member).or_default();
                *by |= acked;
            }
            Update::Remove {
                key,
                members,
                acked,
            } => {
                for m in members {
                    let by = removed.entry(key).or_default().entry(m).or_default();
                    *by |= acked;
                }
            }
        }
    }
    for (key, held) in &crdts.finals {
        match held {
            Held::Counter(value) => {
                let low = i128::from(acked.get(key.as_str()).copied().unwrap_or(0));
                let high = i128::from(attempted.get(key.as_str()).copied().unwrap_or(0));
                if *value < low {
                    verdict.violation(
                        key,
                        format!("the counter is {value}, below its {low} of acknowledged increments: an acknowledged increment was lost"),
                    );
                }
                if *value > high {
                    verdict.violation(
                        key,
                        format!("the counter is {value}, above the {high} of all increments sent: one counted twice"),
                    );
                }
            }
            Held::Set(members) => {
                let (adds, removes) = (added.get(key.as_str()), removed.get(key.as_str()));
                for (member, acked) in adds.into_iter().flatten() {
                    let named = removes.and_then(|r| r.get(member));
                    if *acked && named.is_none() && !members.contains(*member) {
                        verdict.violation(
                            key,
                            format!("`{member}` was added (acknowledged) and never removed, but is not in the final set"),
                        );
                    }
                    if named == Some(&true) && members.contains(*member) {
                        verdict.violation(
                            key,
                            format!("`{member}` was removed (acknowledged) after a read that saw its one add, but is in the final set"),
                        );
                    }
                }
                for member in members {
                    if !adds.is_some_and(|a| a.contains_key(member.as_str())) {
                        verdict.violation(
                            key,
                            format!("`{member}` is in the final set, but no client added it"),
                        );
                    }
                }
            }
            Held::Map(_) => verdict.violation(
                key,
                "a map where the workload wrote a counter or a set".into(),
            ),
            Held::Nothing => {
                let written = acked.contains_key(key.as_str())
                    || added
                        .get(key.as_str())
                        .is_some_and(|a| a.values().any(|acked| *acked));
                if written {
                    verdict.violation(
                        key,
                        "acknowledged updates, but the key reads as never written".into(),
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

    fn history(updates: Vec<Update>, finals: &[(&str, Held)]) -> History {
        History {
            crdts: Crdts {
                updates,
                finals: finals
                    .iter()
                    .map(|(k, h)| (k.to_string(), h.clone()))
                    .collect(),
            },
            ..History::default()
        }
    }

    fn inc(n: u64, acked: bool) -> Update {
        Update::Increment {
            key: "c".into(),
            n,
            acked,
        }
    }

    fn add(member: &str, acked: bool) -> Update {
        Update::Add {
            key: "s".into(),
            member: member.into(),
            acked,
        }
    }

    fn remove(members: &[&str], acked: bool) -> Update {
        Update::Remove {
            key: "s".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            acked,
        }
    }

    fn set(members: &[&str]) -> Held {
        Held::Set(members.iter().map(|m| m.to_string()).collect())
    }

    #[test]
    fn a_counter_between_acknowledged_and_attempted_passes() {
        let updates = vec![inc(2, true), inc(3, false), inc(1, true)];
        for value in [3, 5, 6] {
            let v = check(&history(updates.clone(), &[("c", Held::Counter(value))]));
            assert!(v.violations.is_empty(), "{value}: {v:?}");
            assert_eq!(v.examined, 3);
        }
    }

    #[test]
    fn a_lost_or_doubled_increment_is_reported() {
        let updates = vec![inc(2, true), inc(3, false)];
        let lost = check(&history(updates.clone(), &[("c", Held::Counter(1))]));
        assert!(lost.violations[0].message.contains("lost"), "{lost:?}");
        let doubled = check(&history(updates.clone(), &[("c", Held::Counter(7))]));
        assert!(
            doubled.violations[0].message.contains("twice"),
            "{doubled:?}"
        );
        let gone = check(&history(updates, &[("c", Held::Nothing)]));
        assert_eq!(gone.violations.len(), 1, "{gone:?}");
    }

    #[test]
    fn sets_keep_unremoved_adds_and_lose_removed_ones() {
        let updates = vec![
            add("a", true),
            add("b", true),
            add("c", false),
            remove(&["b"], true),
            remove(&["c"], false),
        ];
        for fine in [set(&["a"]), set(&["a", "c"])] {
            let v = check(&history(updates.clone(), &[("s", fine.clone())]));
            assert!(v.violations.is_empty(), "{fine:?}: {v:?}");
            assert_eq!(v.examined, 5);
        }
        let lost = check(&history(updates.clone(), &[("s", set(&["c"]))]));
        assert!(lost.violations[0].message.contains("`a`"), "{lost:?}");
        let back = check(&history(updates.clone(), &[("s", set(&["a", "b"]))]));
        assert!(
            back.violations[0].message.contains("`b` was removed"),
            "{back:?}"
        );
        let invented = check(&history(updates, &[("s", set(&["a", "z"]))]));
        assert!(
            invented.violations[0].message.contains("no client"),
            "{invented:?}"
        );
    }

    #[test]
    fn a_maps_fields_are_checked_as_keys() {
        let map = Held::Map(BTreeMap::from([("n".to_string(), Held::Counter(0))]));
        let finals = map.fields("m", &["n", "s"]);
        assert_eq!(
            finals,
            vec![
                ("m.n".to_string(), Held::Counter(0)),
                ("m.s".to_string(), Held::Nothing)
            ]
        );
        let updates = vec![Update::Add {
            key: "m.s".into(),
            member: "a".into(),
            acked: true,
        }];
        let finals: Vec<(&str, Held)> = finals
            .iter()
            .map(|(k, h)| (k.as_str(), h.clone()))
            .collect();
        let v = check(&history(updates, &finals));
        assert_eq!(v.examined, 1);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert_eq!(v.violations[0].key, "m.s");
        assert!(v.violations[0].message.contains("never written"), "{v:?}");
    }

    #[test]
    fn keys_whose_final_state_is_unknown_are_not_examined() {
        let v = check(&history(vec![inc(1, true), add("a", true)], &[]));
        assert_eq!(v.examined, 0);
    }
}
