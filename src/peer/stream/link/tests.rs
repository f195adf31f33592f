use super::*;
use crate::peer::Frame;
use crate::peer::versions::{self, Versions};

/// A peer on the other end of `io` that answers each call with its
/// own body after `delay(id)`, and each ping at once.
async fn fake_peer(io: tokio::io::DuplexStream, delay: fn(u64) -> Duration) {
    let (mut rd, wr) = tokio::io::split(io);
    let wr = Arc::new(tokio::sync::Mutex::new((wr, Seal::new(None, ACCEPTER))));
    let (mut buf, mut seal) = (BytesMut::new(), Seal::new(None, OPENER));
    loop {
        while let Some(message) = codec::decode(&mut buf, 1 << 20, &mut seal).expect("a frame") {
            let (id, reply, wait) = match message {
                Message::Call { id, body, .. } => (
                    id,
                    Message::Reply {
                        id,
                        reply: Ok(body),
                    },
                    delay(id),
                ),
                Message::Ping { id } => (id, Message::Pong { id }, Duration::ZERO),
                other => panic!("the opener sent {other:?}"),
            };
            let wr = Arc::clone(&wr);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let mut wr = wr.lock().await;
                let (wr, seal) = &mut *wr;
                let mut out = BytesMut::new();
                codec::encode(&reply, seal, &mut out);
                let _ = tokio::io::AsyncWriteExt::write_all(wr, &out).await;
                let _ = id;
            });
        }
        if rd.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
    }
}

/// An opener that never dials: the tests hand `connected` its stream.
fn opener(timeout: Duration) -> Opener {
    Opener {
        dial: Arc::new(|_| Box::pin(async { Err("no dialling here".into()) })),
        scheme: "http",
        signer: None,
        versions: Arc::new(Versions::new(versions::PROTOCOL)),
        timeout,
        max_message: 1 << 20,
    }
}

fn call(body: &'static [u8]) -> (Queued, oneshot::Receiver<Result<Bytes>>) {
    let (tx, rx) = oneshot::channel();
    let frame = Frame {
        service: "replica.read",
        version: 1,
        body: Bytes::from_static(body),
        batchable: true,
    };
    ((frame, tx), rx)
}

/// A stream quiet for longer than its ping deadline, then a call whose
/// answer takes one and a half seconds (its pings are answered): the
/// call is answered. Silence used to count from the last byte read, so
/// the first tick after the quiet spell closed the stream and failed
/// the call.
#[tokio::test(start_paused = true)]
async fn a_slow_answer_after_a_quiet_spell_does_not_break_the_stream() {
    let timeout = Duration::from_millis(500);
    let opener = opener(timeout);
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(fake_peer(theirs, |id| {
        if id == 1 {
            Duration::ZERO
        } else {
            Duration::from_millis(1500)
        }
    }));
    let (queue, mut rx) = mpsc::channel(16);
    let (first, first_reply) = call(b"first");
    let link = tokio::spawn(async move {
        let ended = connected(&opener, "n2", Box::new(ours), None, first, &mut rx).await;
        matches!(ended, Ended::Dropped)
    });
    assert_eq!(first_reply.await.expect("answered").expect("ok"), "first");
    tokio::time::sleep(KEEP_ALIVE_INTERVAL * 5).await;
    let (second, second_reply) = call(b"second");
    queue.send(second).await.expect("queued");
    let reply = second_reply.await.expect("answered");
    assert_eq!(reply.expect("the slow answer"), "second");
    drop(queue);
    assert!(link.await.expect("link"), "the lane's drop ended it");
}

/// The sender keeps the window: however many calls are queued, the
/// receiver never has more than [`MAX_STREAM_CALLS`] unanswered, and
/// every call is answered in the end.
#[tokio::test(start_paused = true)]
async fn the_sender_never_has_more_calls_in_flight_than_the_window() {
    let opener = opener(Duration::from_secs(2));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    // A peer that answers in order, a batch at a time, once a
    // millisecond passes, and records the most it held unanswered.
    let most = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&most);
    tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let (mut buf, mut seal_in, mut seal_out) = (
            BytesMut::new(),
            Seal::new(None, OPENER),
            Seal::new(None, ACCEPTER),
        );
        let mut held = Vec::new();
        loop {
            while let Some(m) = codec::decode(&mut buf, 1 << 20, &mut seal_in).expect("frame") {
                if let Message::Call { id, body, .. } = m {
                    held.push(Message::Reply {
                        id,
                        reply: Ok(body),
                    });
                }
            }
            seen.fetch_max(held.len() as u64, Ordering::Relaxed);
            let read = tokio::time::timeout(Duration::from_millis(1), rd.read_buf(&mut buf));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => continue,
                Err(_) => {}
            }
            let mut out = BytesMut::new();
            for reply in held.drain(..) {
                codec::encode(&reply, &mut seal_out, &mut out);
            }
            if tokio::io::AsyncWriteExt::write_all(&mut wr, &out)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let calls = MAX_STREAM_CALLS * 3;
    let (queue, mut rx) = mpsc::channel(calls + 1);
    let mut replies = Vec::new();
    for _ in 0..calls {
        let (queued, reply) = call(b"x");
        queue.send(queued).await.expect("queued");
        replies.push(reply);
    }
    let (first, first_reply) = call(b"x");
    replies.push(first_reply);
    tokio::spawn(async move {
        connected(&opener, "n2", Box::new(ours), None, first, &mut rx).await;
    });
    for reply in replies {
        assert_eq!(reply.await.expect("answered").expect("ok"), "x");
    }
    let most = most.load(Ordering::Relaxed) as usize;
    assert!(
        most <= MAX_STREAM_CALLS && most > MAX_STREAM_CALLS / 2,
        "the peer held {most} calls at once"
    );
    drop(queue);
}

/// The writes a stream makes, counted.
struct Counted {
    io: tokio::io::DuplexStream,
    writes: Arc<AtomicU64>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Calls that tasks ready on one core queue one after another, as a
/// node's client connections do under load, leave in one write (two:
/// the first call's wake-up may beat the others), not one write each.
/// A runtime of one worker, as a node on shared cores has, where a
/// woken task runs right after its waker.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn calls_queued_in_one_pass_of_the_scheduler_leave_together() {
    const CALLERS: usize = 16;
    let opener = opener(Duration::from_secs(5));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    tokio::spawn(fake_peer(theirs, |_| Duration::ZERO));
    let writes = Arc::new(AtomicU64::new(0));
    let io = Counted {
        io: ours,
        writes: Arc::clone(&writes),
    };
    let (queue, mut rx) = mpsc::channel(CALLERS + 1);
    let (first, first_reply) = call(b"first");
    tokio::spawn(async move {
        connected(&opener, "n2", Box::new(io), None, first, &mut rx).await;
    });
    assert_eq!(first_reply.await.expect("answered").expect("ok"), "first");
    let before = writes.load(Ordering::Relaxed);
    // Spawned from the worker, so the callers wait in its queue.
    let callers = tokio::spawn(async move {
        (0..CALLERS)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let (queued, reply) = call(b"x");
                    queue.send(queued).await.expect("queued");
                    reply.await.expect("answered").expect("ok")
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("spawned");
    for caller in callers {
        assert_eq!(caller.await.expect("a caller"), "x");
    }
    let writes = writes.load(Ordering::Relaxed) - before;
    assert!(
        (1..=2).contains(&writes),
        "{CALLERS} calls queued in one pass took {writes} writes"
    );
}

/// A peer that answers nothing, not even pings: the call fails once
/// the ping deadline passes, and the stream is closed.
#[tokio::test(start_paused = true)]
async fn a_silent_peer_fails_the_calls_in_flight() {
    let timeout = Duration::from_millis(500);
    let opener = opener(timeout);
    // Held open, never read.
    let (ours, _theirs) = tokio::io::duplex(1 << 16);
    let (_queue, mut rx) = mpsc::channel(16);
    let (first, reply) = call(b"first");
    let started = Instant::now();
    let ended = connected(&opener, "n2", Box::new(ours), None, first, &mut rx).await;
    assert!(matches!(ended, Ended::Broken(_)));
    let e = reply.await.expect("answered").expect_err("no answer came");
    assert_eq!(e.code(), "unavailable", "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= KEEP_ALIVE_INTERVAL + timeout && waited <= 2 * KEEP_ALIVE_INTERVAL + timeout,
        "closed after {waited:?}"
    );
}
