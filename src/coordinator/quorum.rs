//! Per-request quorums: what a client may ask for and what it gets.
//!
//! Each of `r`, `pr` (reads) and `w`, `pw`, `dw` (writes) is a count, or
//! `one`, `quorum` (a majority of N), `all` (N), or `default` (the
//! cluster's `[cluster]` value). `r` and `w` count replicas that answered;
//! `pr` and `pw` those among them that are primaries (on the key's
//! preference list, not fallbacks); `dw` those that made the write durable
//! (fsynced). A read is done at `r` answers with `pr` primaries among them,
//! a write at `w` acknowledgements with `pw` primaries and `dw` durable.
//! `r`/`w` of 0 and anything above N are refused, naming the parameter.
//! Pure: the API parses, the coordinator counts with a [`Tally`].
//!
//! [`Tally`]: super::tally::Tally

use serde::{Deserialize, Serialize};

use super::tally::Need;
use crate::config::ClusterConfig;
use crate::error::{Error, Result};

/// The consistency one request asks for, resolved to counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub n: usize,
    pub r: usize,
    pub pr: usize,
    pub w: usize,
    pub pw: usize,
    pub dw: usize,
}

impl Quorum {
    /// What a write must collect: `w` acknowledgements, `pw` of them from
    /// primaries, `dw` of them durable.
    pub fn need_to_write(&self) -> Need {
        Need {
            acks: self.w,
            primaries: self.pw,
            durable: self.dw,
        }
    }

    /// The cluster's defaults.
    pub fn defaults(c: &ClusterConfig) -> Quorum {
        Quorum {
            n: c.n,
            r: c.r,
            pr: c.pr,
            w: c.w,
            pw: c.pw,
            dw: c.dw,
        }
    }

    /// Applies one query parameter (`r`, `pr`, `w`, `pw` or `dw`).
    pub fn set(&mut self, name: &str, text: &str, defaults: &Quorum) -> Result<()> {
        let (slot, default, min) = match name {
            "r" => (&mut self.r, defaults.r, 1),
            "pr" => (&mut self.pr, defaults.pr, 0),
            "w" => (&mut self.w, defaults.w, 1),
            "pw" => (&mut self.pw, defaults.pw, 0),
            "dw" => (&mut self.dw, defaults.dw, 0),
            other => return Err(Error::bad_parameter(other, "not a quorum parameter")),
        };
        let n = self.n;
        let value = match text {
            "one" => 1,
            "quorum" => n / 2 + 1,
            "all" => n,
            "default" => default,
            number => number.parse::<usize>().map_err(|_| {
                Error::bad_parameter(
                    name,
                    format!("`{number}` is not a count, one, quorum, all or default"),
                )
            })?,
        };
        if value < min || value > n {
            return Err(Error::bad_parameter(
                name,
                format!("is {value}; it must be between {min} and n ({n})"),
            ));
        }
        *slot = value;
        Ok(())
    }

    /// Refuses counts that contradict each other: `pr` primaries among `r`
    /// answers, `pw` primaries and `dw` durable among `w` acknowledgements
    /// (a request asking for more could only ever fail). Names the
    /// parameter, and says when its value was the cluster's default. Only
    /// the counts a route takes (`known`) are checked: a scan takes `r` but
    /// no `pr`, and a client could not lower a default it may not send.
    pub fn consistent(&self, defaults: &Quorum, known: &[&str]) -> Result<()> {
        for (name, part, whole_name, whole, default) in [
            ("pr", self.pr, "r", self.r, defaults.pr),
            ("pw", self.pw, "w", self.w, defaults.pw),
            ("dw", self.dw, "w", self.w, defaults.dw),
        ] {
            if part > whole && known.contains(&name) {
                let from = if part == default && part > 0 {
                    " (the cluster's default)"
                } else {
                    ""
                };
                return Err(Error::bad_parameter(
                    name,
                    format!(
                        "is {part}{from}, above {whole_name} ({whole}): they count among the {whole_name} answers; \
                         raise {whole_name} or lower {name}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a quorum a peer sent that this node's N cannot satisfy.
    pub fn check(&self, n: usize) -> Result<()> {
        let counts = [self.r, self.pr, self.w, self.pw, self.dw];
        let contradicts = self.pr > self.r || self.pw > self.w || self.dw > self.w;
        if self.n != n || self.r == 0 || self.w == 0 || counts.iter().any(|&c| c > n) || contradicts
        {
            return Err(Error::Protocol(format!(
                "a forwarded quorum {self:?} does not fit n = {n}"
            )));
        }
        Ok(())
    }

    /// Whether every read at this `r` sees every write at this `w`.
    pub fn overlap(&self) -> bool {
        self.r + self.w > self.n
    }

    /// Whether reads and writes overlap in primaries alone (`pr + pw >
    /// n`): then the overlap holds even when fallbacks acknowledged a
    /// write (docs/consistency.md).
    pub fn primary_overlap(&self) -> bool {
        self.pr + self.pw > self.n
    }

    /// The `X-Chorus-Quorum` header: `n=3 r=2 w=2 overlap=true`, with the
    /// primary and durable counts when they are asked for, and with
    /// `primary_overlap` when a primary count is.
    pub fn header(&self) -> String {
        let mut out = format!("n={} r={} w={}", self.n, self.r, self.w);
        for (name, value) in [("pr", self.pr), ("pw", self.pw), ("dw", self.dw)] {
            if value > 0 {
                out.push_str(&format!(" {name}={value}"));
            }
        }
        out.push_str(&format!(" overlap={}", self.overlap()));
        if self.pr > 0 || self.pw > 0 {
            out.push_str(&format!(" primary_overlap={}", self.primary_overlap()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Quorum {
        Quorum {
            n: 3,
            r: 2,
            pr: 0,
            w: 2,
            pw: 0,
            dw: 0,
        }
    }

    #[test]
    fn names_and_numbers_resolve_against_n_and_the_defaults() {
        let d = three();
        let mut q = three();
        q.set("r", "one", &d).expect("one");
        q.set("w", "all", &d).expect("all");
        q.set("pw", "quorum", &d).expect("quorum");
        q.set("dw", "3", &d).expect("3");
        assert_eq!((q.r, q.w, q.pw, q.dw), (1, 3, 2, 3));
        q.set("w", "default", &d).expect("default");
        assert_eq!(q.w, 2);
        assert_eq!(
            q.header(),
            "n=3 r=1 w=2 pw=2 dw=3 overlap=false primary_overlap=false"
        );
        assert_eq!(three().header(), "n=3 r=2 w=2 overlap=true");
        q.set("pr", "2", &d).expect("2");
        q.set("r", "2", &d).expect("2");
        assert!(
            q.header()
                .ends_with(" pr=2 pw=2 dw=3 overlap=true primary_overlap=true")
        );
    }

    #[test]
    fn primaries_and_durables_above_their_quorum_are_refused_by_name() {
        let d = three();
        for (set, refused) in [
            (&[("r", "one"), ("pr", "3")][..], "pr"),
            (&[("w", "1"), ("pw", "2")][..], "pw"),
            (&[("w", "1"), ("dw", "all")][..], "dw"),
        ] {
            let mut q = three();
            for (name, text) in set {
                q.set(name, text, &d).expect("each alone is in range");
            }
            match q.consistent(&d, &["pr", "pw", "dw"]) {
                Err(Error::BadParameter { name, reason }) => {
                    assert_eq!(name, refused);
                    assert!(reason.contains("above"), "{reason}");
                }
                other => panic!("{set:?}: {other:?}"),
            }
            assert!(q.check(3).is_err(), "a peer's {set:?} is refused too");
        }
        // The cluster's default pr above a request's r says so.
        let strict = Quorum { pr: 2, ..three() };
        let mut q = strict;
        q.set("r", "1", &strict).expect("r");
        let e = q.consistent(&strict, &["r", "pr"]).expect_err("pr 2 > r 1");
        assert!(e.to_string().contains("the cluster's default"), "{e}");
        // A route that takes no pr (a scan) is not asked to lower it.
        assert!(q.consistent(&strict, &["r", "timeout_ms"]).is_ok());
        let mut fine = three();
        fine.set("pr", "2", &d).expect("pr");
        fine.set("dw", "2", &d).expect("dw");
        assert!(fine.consistent(&d, &["pr", "pw", "dw"]).is_ok());
    }

    #[test]
    fn zero_reads_or_writes_and_counts_above_n_are_refused_by_name() {
        let d = three();
        for (name, text) in [
            ("r", "0"),
            ("w", "0"),
            ("r", "4"),
            ("pw", "4"),
            ("dw", "x"),
            ("pr", "-1"),
        ] {
            match three().set(name, text, &d) {
                Err(Error::BadParameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}={text}: {other:?}"),
            }
        }
        let mut q = three();
        q.set("pr", "0", &d).expect("pr may be 0");
    }
}
