//! Server CPU time per request: the figure of merit of a benchmark here.
//!
//! A server's CPU time is its user + system time, every thread included
//! (runtime, fsync, compaction, gossip), as Linux accounts it in
//! `/proc/PID/stat`. `chorus bench --server-pid` samples the processes it
//! is given before and after each run; for the in-process null server it
//! sums the threads named [`NULL_THREADS`] in `/proc/self/task`. CPU per
//! request is the sum over the servers divided by the requests the run
//! answered.
//!
//! Why this and not throughput: on one shared machine the servers, their
//! background threads and the client compete for the same cores, so
//! throughput says as much about the machine as about the server. CPU per
//! request does not: with one machine per node, a node's throughput is its
//! cores over its own CPU per request. Read as a ratio to the null
//! server's in the same run, it also holds across machines.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// The name the null server gives its threads, to be told apart from the
/// client's in the same process.
pub const NULL_THREADS: &str = "chorus-null";

/// Clock ticks per second of `/proc/*/stat` times: Linux's `USER_HZ`,
/// which is 100 on every architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Whose CPU a run measures.
#[derive(Clone, Debug)]
pub enum Servers {
    /// Server processes, by PID.
    Processes(Vec<u32>),
    /// The threads of this process with this name (the null server).
    Threads(&'static str),
}

/// The servers' CPU over one run.
#[derive(Clone, Debug, Serialize)]
pub struct ServerCpu {
    /// The processes measured (empty for the null server's threads).
    pub pids: Vec<u32>,
    /// CPU seconds of each over the run (one entry for threads).
    pub seconds: Vec<f64>,
    /// Their sum per request answered, in microseconds.
    pub us_per_request: f64,
    /// Each one's per request answered, in microseconds.
    pub us_per_request_each: Vec<f64>,
}

impl Servers {
    /// The CPU seconds each has used so far; an error names a process
    /// that is not there.
    pub fn sample(&self) -> Result<Vec<f64>> {
        match self {
            Servers::Processes(pids) => pids
                .iter()
                .map(|pid| {
                    let path = format!("/proc/{pid}/stat");
                    read_seconds(Path::new(&path)).ok_or_else(|| Error::Config {
                        key: "--server-pid".into(),
                        message: format!(
                            "{pid} is no process to measure (or /proc is not readable)"
                        ),
                    })
                })
                .collect(),
            Servers::Threads(name) => {
                let mut total = 0.0;
                for task in std::fs::read_dir("/proc/self/task")?.flatten() {
                    let comm =
                        std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                    if comm.trim_end() == *name {
                        total += read_seconds(&task.path().join("stat")).unwrap_or(0.0);
                    }
                }
                Ok(vec![total])
            }
        }
    }

    /// The CPU between two samples, per `requests` answered.
    pub fn over(&self, before: &[f64], after: &[f64], requests: u64) -> ServerCpu {
        let seconds: Vec<f64> = after
            .iter()
            .zip(before)
            .map(|(a, b)| (a - b).max(0.0))
            .collect();
        let per = |s: f64| s * 1e6 / requests.max(1) as f64;
        ServerCpu {
            pids: match self {
                Servers::Processes(pids) => pids.clone(),
                Servers::Threads(_) => Vec::new(),
            },
            us_per_request: per(seconds.iter().sum()),
            us_per_request_each: seconds.iter().map(|&s| per(s)).collect(),
            seconds,
        }
    }
}

fn read_seconds(path: &Path) -> Option<f64> {
    stat_seconds(&std::fs::read_to_string(path).ok()?)
}

/// User + system seconds from the text of a `/proc/*/stat` file. The
/// command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted after its last `)`: state is
/// the first there, utime (field 14) the twelfth, stime the thirteenth.
pub fn stat_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_time_are_read_past_a_command_name_with_spaces() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3";
        assert_eq!(stat_seconds(stat), Some(3.25));
        assert_eq!(stat_seconds("4242 (x) S 1 2"), None);
        assert_eq!(stat_seconds("no parenthesis"), None);
    }

    #[test]
    fn this_process_is_measured_and_a_missing_one_is_named() {
        let me = Servers::Processes(vec![std::process::id()]);
        let before = me.sample().expect("sample");
        // Burn a little CPU so the clock moves by at least a tick.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = me.sample().expect("sample");
        let cpu = me.over(&before, &after, 1000);
        assert!(cpu.seconds[0] > 0.0, "{cpu:?}");
        assert!((cpu.us_per_request - cpu.seconds[0] * 1000.0).abs() < 1e-6);
        let missing = Servers::Processes(vec![u32::MAX]).sample().unwrap_err();
        assert!(missing.to_string().contains("--server-pid"), "{missing}");
    }
}
