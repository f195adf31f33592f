//! The phases over every record before the measured runs: the load
//! (each record written once) and, for a run on records loaded by an
//! earlier process, the reads that learn their contexts.

use std::time::Instant;

use bytes::Bytes;

use super::Load;
use super::target::{Outcome, Session};
use crate::error::{Error, Result};

/// Writes every record once, the workers taking every `concurrency`-th.
/// Each write first reads the record and carries its context, so loading
/// a node that holds an earlier run's records adds no siblings.
pub(super) async fn load(
    sessions: Vec<Session>,
    records: u64,
    value: &Bytes,
) -> Result<(Load, Vec<Session>)> {
    let value = value.clone();
    each_record(sessions, records, move |mut session, i| {
        let value = value.clone();
        async move {
            let outcome = session.read_modify_write(i, &value).await;
            (session, outcome)
        }
    })
    .await
}

/// Reads every record once, the workers taking every `concurrency`-th, so
/// that the runs' writes carry the context a well-behaved client would
/// hold: without it, the first write of each record in every run of
/// `--no-load` was blind and left a sibling beside the last value, and
/// the records grew siblings run after run (reads answering 300 with
/// more of them, writes merging larger sets), a cost of the benchmark,
/// not of chorus. A read of records with siblings learns a context that
/// covers them all, so the next write resolves them.
pub(super) async fn learn(sessions: Vec<Session>, records: u64) -> Result<(Load, Vec<Session>)> {
    each_record(sessions, records, |mut session, i| async move {
        let outcome = session.read(i).await;
        (session, outcome)
    })
    .await
}

/// Runs `op` on every record in `0..records`, the workers taking every
/// `concurrency`-th; the phase's figures, and the sessions back.
async fn each_record<F, Fut>(
    sessions: Vec<Session>,
    records: u64,
    op: F,
) -> Result<(Load, Vec<Session>)>
where
    F: Fn(Session, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Session, Outcome)> + Send,
{
    let started = Instant::now();
    let stride = sessions.len() as u64;
    let workers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(w, mut session)| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut errors = 0;
                for i in (w as u64..records).step_by(stride as usize) {
                    let (back, outcome) = op(session, i).await;
                    session = back;
                    if outcome == Outcome::Failed {
                        errors += 1;
                    }
                }
                (session, errors)
            })
        })
        .collect();
    let mut back = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (session, e) = w
            .await
            .map_err(|e| Error::Protocol(format!("a worker died: {e}")))?;
        back.push(session);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        Load {
            records,
            seconds,
            records_per_sec: records as f64 / seconds,
            errors,
        },
        back,
    ))
}
