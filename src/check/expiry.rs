//! Nothing expired is read again.
//!
//! A value written with a TTL is gone once its instant has passed: the
//! node that took the write stamped it from its clock, and every node
//! judges it by the fastest clock it has heard from. So a read that
//! completes later than the write was sent plus its TTL plus the clocks'
//! largest skew ([`SLACK_MS`]) must not return it, and neither may the
//! final read. What a value may not do before its instant is not checked
//! here (a read at a low `r` may miss any write).
//!
//! Examined: the reads (the final one included) that came after some
//! written value's TTL and slack, counted once per such value and read.

use super::{History, Op, Verdict, write_of};

/// The largest clock skew the nemesis sets (5 s either way) and two
/// seconds for a node to hear the others' clocks after a restart or a
/// heal.
pub const SLACK_MS: u64 = 7_000;

pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("expiry");
    let writes = history.writes();
    let gone_by = |id| {
        writes
            .get(&id)
            .and_then(|w| w.ttl)
            .map(|t| t.sent_ms + t.ttl_ms + SLACK_MS)
    };
    let mut check_read = |key: &str, values: &[String], at_ms: u64, what: &str| {
        for (key_w, w) in writes.iter() {
            if w.key == key && gone_by(*key_w).is_some_and(|gone| gone < at_ms) {
                verdict.examined += 1;
                if values.iter().any(|v| write_of(v) == Some(*key_w)) {
                    let ttl = w.ttl.map_or(0, |t| t.ttl_ms);
                    verdict.violation(
                        key,
                        format!(
                            "w{key_w} (ttl {ttl} ms) was read by {what} at {at_ms} ms, after it expired"
                        ),
                    );
                }
            }
        }
    };
    for op in &history.ops {
        if let Op::Read {
            key, values, at_ms, ..
        } = op
        {
            check_read(key, values, *at_ms, "a client");
        }
    }
    for (key, values) in &history.finals {
        check_read(key, values, history.finals_at_ms, "the final read");
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::super::Ttl;
    use super::*;

    fn write(id: u64, ttl: Option<(u64, u64)>) -> Op {
        Op::Write {
            id,
            client: 1,
            key: "k".into(),
            saw: vec![],
            acked: true,
            delete: false,
            ttl: ttl.map(|(sent_ms, ttl_ms)| Ttl { sent_ms, ttl_ms }),
            refused: false,
        }
    }

    fn read(values: &[&str], at_ms: u64) -> Op {
        Op::Read {
            client: 2,
            key: "k".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            session: false,
            at_ms,
        }
    }

    #[test]
    fn a_value_read_after_its_ttl_and_the_slack_is_a_violation() {
        let late = 1_000 + 500 + SLACK_MS + 1;
        let history = History {
            final_scan: None,
            crdts: Default::default(),
            ops: vec![
                write(1, Some((1_000, 500))),
                write(2, None),
                read(&["w1", "w2"], 1_400),
                read(&["w1", "w2"], late),
            ],
            finals: [("k".to_string(), vec!["w2".to_string()])].into(),
            finals_at_ms: late + 1,
        };
        let verdict = check(&history);
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert!(verdict.violations[0].message.contains("w1"));
        // The late read and the final read examined w1; w2 has no TTL.
        assert_eq!(verdict.examined, 2);
        let mut kept = history.clone();
        kept.finals.insert("k".into(), vec!["w1".into()]);
        assert_eq!(check(&kept).violations.len(), 2);
    }
}
