//! Convergence: once faults stop and anti-entropy has had its rounds, every
//! replica of every key holds the identical sibling set (compared as the
//! canonical bytes `GET /admin/replica` returns; `None`: holds nothing).
//! Examined: the keys whose replicas were compared.

use std::collections::BTreeMap;

use super::Verdict;

/// Each replica's node id and what it holds of a key (`None`: nothing).
pub type Held = Vec<(String, Option<Vec<u8>>)>;

/// `replicas`: per key, what each of its replicas holds.
pub fn check(replicas: &BTreeMap<String, Held>) -> Verdict {
    let mut verdict = Verdict::new("convergence");
    for (key, held) in replicas {
        let Some((first_node, first)) = held.first() else {
            continue;
        };
        verdict.examined += usize::from(held.len() > 1);
        for (node, set) in &held[1..] {
            if set != first {
                verdict.violation(
                    key,
                    format!("{node} holds a different set than {first_node}"),
                );
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_replicas_pass_and_a_planted_difference_is_reported() {
        let set = |s: &str| Some(s.as_bytes().to_vec());
        let mut replicas = BTreeMap::new();
        replicas.insert(
            "a".to_string(),
            vec![("n1".into(), set("x")), ("n2".into(), set("x"))],
        );
        assert!(check(&replicas).violations.is_empty());
        replicas.insert(
            "b".to_string(),
            vec![
                ("n1".into(), set("x")),
                ("n2".into(), None),
                ("n3".into(), set("y")),
            ],
        );
        let found = check(&replicas).violations;
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|v| v.key == "b"));
        assert!(found[0].message.starts_with("n2"));
    }
}
