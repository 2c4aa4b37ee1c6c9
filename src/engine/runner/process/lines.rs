//! A worker's stdout and stderr, read line by line within the limits,
//! each line routed to the execution it belongs to.

use super::*;

/// Reads one line of at most `max` bytes into `buf` (without the newline).
/// Returns `None` at end of input, else whether the line was cut; the rest
/// of a cut line is skipped.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut truncated = false;
    let mut any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(truncated));
        }
        any = true;
        let (chunk, used, end) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if end {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(truncated));
        }
    }
}

pub(super) fn truncated_fields(max: usize) -> Map<String, Value> {
    Map::from_iter([
        ("truncated".to_string(), Value::Bool(true)),
        ("limit_bytes".to_string(), Value::from(max)),
    ])
}

/// Output of a pooled worker between executions has no execution to go
/// to; it goes to the supervisor's own log.
pub(super) fn unrouted(pid: i32, stream: &str, text: &str) {
    tracing::warn!(worker = pid, stream, "output between executions: {text}");
}

pub(super) async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    state: &ReaderState,
) -> Option<bool> {
    state.in_pipe.store(true, Ordering::Relaxed);
    let line = read_line(r, buf, max).await;
    state.in_pipe.store(false, Ordering::Relaxed);
    match line {
        Ok(Some(t)) => {
            state.lines.fetch_add(1, Ordering::Relaxed);
            Some(t)
        }
        Ok(None) | Err(_) => {
            state.closed.store(true, Ordering::Relaxed);
            None
        }
    }
}

pub(super) async fn read_stdout<R: AsyncBufRead + Unpin>(
    mut r: R,
    shared: Arc<Shared>,
    max: usize,
    pid: i32,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut first = true;
    while let Some(truncated) = next_line(&mut r, &mut buf, max, &shared.out).await {
        let text = String::from_utf8_lossy(&buf);
        let parsed = if truncated {
            None
        } else {
            Some(parse_worker_line(&text))
        };
        if let Some(ParsedLine::Message(WorkerMessage::Hello(h))) = &parsed {
            if first {
                shared.pooled.store(h.pooled, Ordering::Relaxed);
                shared.hello.store(true, Ordering::Relaxed);
                shared.hello_seen.notify_one();
            }
            first = false;
            tracing::trace!(pooled = h.pooled, handlers = ?h.handlers, "worker hello");
            continue;
        }
        first = false;
        let Some(route) = shared.route() else {
            unrouted(pid, stream::STDOUT, &text);
            continue;
        };
        match parsed {
            None => {
                route
                    .log(
                        Level::Info,
                        stream::STDOUT,
                        text,
                        Some(truncated_fields(max)),
                    )
                    .await
            }
            Some(ParsedLine::Message(msg)) => {
                route.last_seen.store(now_micros(), Ordering::Relaxed);
                match msg {
                    WorkerMessage::Progress(p) => route.sink.progress(p).await,
                    WorkerMessage::Log(l) => {
                        route.log(l.level, stream::LOG, l.message, l.fields).await
                    }
                    WorkerMessage::Heartbeat | WorkerMessage::Hello(_) => {}
                    WorkerMessage::Result(r) => route.end(Final::Result(r), &text).await,
                    WorkerMessage::Snooze(z) => route.end(Final::Snooze(z), &text).await,
                }
            }
            Some(ParsedLine::Unknown(kind)) => {
                let mut f = Map::new();
                f.insert("unknown_type".into(), Value::String(kind));
                route.log(Level::Debug, stream::STDOUT, text, Some(f)).await;
            }
            Some(ParsedLine::Plain) => route.log(Level::Info, stream::STDOUT, text, None).await,
        }
    }
}

pub(super) async fn read_stderr<R: AsyncBufRead + Unpin>(
    mut r: R,
    shared: Arc<Shared>,
    max: usize,
    level: Level,
    pid: i32,
) {
    let mut buf = Vec::with_capacity(1024);
    while let Some(truncated) = next_line(&mut r, &mut buf, max, &shared.err).await {
        let text = String::from_utf8_lossy(&buf);
        match shared.route() {
            Some(route) => {
                let fields = truncated.then(|| truncated_fields(max));
                route.log(level, stream::STDERR, text, fields).await
            }
            None => unrouted(pid, stream::STDERR, &text),
        }
    }
}
