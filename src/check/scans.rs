//! A scan returns every acknowledged live key in its range.
//!
//! After the heal, once every key's final read at `r=all` is in, a scan of
//! every key at `r=all`, page by page, must return exactly the keys the
//! final reads found live, each with the same values: no acknowledged live
//! key skipped (the final reads hold every acknowledged write, as
//! `lost_writes` checks), none returned twice, nothing deleted or expired
//! returned. Nothing is written by then, so the two must agree exactly.
//! The scan is of the history's keys: a key of another workload running
//! beside it is left out before the check.
//!
//! Examined: the keys compared (every key the final reads covered).

use std::collections::BTreeSet;

use super::{History, Verdict};

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("scans");
    let Some(scan) = &history.final_scan else {
        verdict.violation("", "the final scan at r=all did not complete".into());
        return verdict;
    };
    let sorted = |values: &[String]| values.iter().cloned().collect::<BTreeSet<_>>();
    for (key, read) in &history.finals {
        verdict.examined += 1;
        match (read.is_empty(), scan.get(key)) {
            (true, None) => {}
            (false, None) => verdict.violation(
                key,
                format!("live in the final read ({read:?}) but the final scan skipped it"),
            ),
            (true, Some(scanned)) => verdict.violation(
                key,
                format!("absent from the final read but the final scan returned {scanned:?}"),
            ),
            (false, Some(scanned)) if sorted(scanned) != sorted(read) => verdict.violation(
                key,
                format!("the final scan returned {scanned:?}, the final read {read:?}"),
            ),
            (false, Some(_)) => {}
        }
    }
    for key in scan.keys().filter(|k| !history.finals.contains_key(*k)) {
        verdict.violation(
            key,
            "the final scan returned a key the final reads did not cover".into(),
        );
    }
    verdict
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn history(finals: &[(&str, &[&str])], scan: Option<&[(&str, &[&str])]>) -> History {
        History {
            finals: map(finals),
            final_scan: scan.map(map),
            ..History::default()
        }
    }

    #[test]
    fn a_scan_that_agrees_with_the_final_reads_passes() {
        let finals: &[(&str, &[&str])] = &[("a", &["w1"]), ("b", &[]), ("c", &["w2", "w3"])];
        let scan: &[(&str, &[&str])] = &[("a", &["w1"]), ("c", &["w3", "w2"])];
        let verdict = check(&history(finals, Some(scan)));
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.examined, 3);
    }

    #[test]
    fn a_skipped_key_a_deleted_key_another_value_and_a_stranger_are_reported() {
        let finals: &[(&str, &[&str])] = &[("a", &["w1"]), ("b", &[]), ("c", &["w2"])];
        let scan: &[(&str, &[&str])] = &[("b", &["w9"]), ("c", &["w4"]), ("z", &["w5"])];
        let verdict = check(&history(finals, Some(scan)));
        let keys: Vec<&str> = verdict.violations.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "z"]);
        let failed = check(&history(finals, None));
        assert_eq!(failed.violations.len(), 1, "no final scan");
    }
}
