//! The enclave's log forwarder (issue 9 item 5). A production enclave has no console
//! anyone reads (`nitro-cli run-enclave` without `--debug-mode`), so its `tracing`
//! events also go, one JSON line each, to whoever connects to `--log-listen` (the
//! parent, over vsock port [`ekms_shared::ENCLAVE_LOG_PORT`]), which writes them to its
//! own journal.
//!
//! Rules: events carry no secret anywhere in the enclave (STYLE rule 10), so forwarding
//! them adds nothing a host could not already see; the layer never blocks the code that
//! logs: lines wait in a bounded queue ([`QUEUE_LINES`]) and are dropped, counted, when
//! nobody reads them; a line is cut at [`MAX_LINE_BYTES`]. One reader at a time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::io::Listener;

/// Lines kept while nobody reads (~1 MiB at most).
pub const QUEUE_LINES: usize = 2048;
/// Longest forwarded line, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;

/// The `tracing` layer: formats each event and queues it.
pub struct ForwardLayer {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

/// The queue's other end, served by [`serve`].
pub struct LogQueue {
    rx: mpsc::Receiver<String>,
    dropped: Arc<AtomicU64>,
}

/// A layer and its queue.
pub fn channel() -> (ForwardLayer, LogQueue) {
    let (tx, rx) = mpsc::channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        ForwardLayer {
            tx,
            dropped: Arc::clone(&dropped),
        },
        LogQueue { rx, dropped },
    )
}

/// Collects an event's fields: `message` apart, the others as `key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.rest.insert(field.name().to_owned(), value.into());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest.insert(field.name().to_owned(), text.into());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = serde_json::json!({
            "time_ms": crate::handlers::now_ms(),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": fields.message,
            "fields": fields.rest,
        })
        .to_string();
        let line = cut(line);
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `line` cut to [`MAX_LINE_BYTES`] (on a character boundary), newline-free.
fn cut(mut line: String) -> String {
    if line.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line.retain(|c| c != '\n');
    line
}

/// Serves queued lines to one reader at a time on `listener`, until the queue closes.
/// A reader that goes away loses nothing but the line being written; the next one
/// gets what is queued, preceded by a count of the lines dropped meanwhile.
pub async fn serve(listener: Listener, mut queue: LogQueue) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            continue;
        };
        tracing::debug!(%peer, "log reader connected");
        loop {
            let dropped = queue.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let note = format!(
                    "{{\"level\":\"WARN\",\"target\":\"ekms_enclave::logs\",\"message\":\"{dropped} log lines dropped (queue full)\",\"fields\":{{}}}}\n"
                );
                if conn.write_all(note.as_bytes()).await.is_err() {
                    break;
                }
            }
            let Some(mut line) = queue.rx.recv().await else {
                return;
            };
            line.push('\n');
            if conn.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn formats_events_as_bounded_json_lines_and_never_blocks() {
        let (layer, mut queue) = channel();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(key_id = "k", version = 3u64, "policy updated");
            tracing::warn!("{}", "x".repeat(10_000));
            for _ in 0..QUEUE_LINES + 10 {
                tracing::info!("flood");
            }
        });
        let first: serde_json::Value = serde_json::from_str(&queue.rx.try_recv().unwrap()).unwrap();
        assert_eq!(first["message"], "policy updated");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["fields"]["key_id"], "k");
        assert_eq!(first["fields"]["version"], 3);
        let long = queue.rx.try_recv().unwrap();
        assert!(long.len() <= MAX_LINE_BYTES && !long.contains('\n'));
        assert!(queue.dropped.load(Ordering::Relaxed) >= 10);
    }

    #[tokio::test]
    async fn serves_queued_lines_to_a_reader() {
        use tokio::io::AsyncBufReadExt as _;
        let dir = tempfile::tempdir().unwrap();
        let addr = ekms_shared::Address::Unix(dir.path().join("log.sock"));
        let listener = Listener::bind(&addr).await.unwrap();
        let (layer, queue) = channel();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || tracing::info!("before the reader"));
        let task = tokio::spawn(serve(listener, queue));
        let stream = tokio::net::UnixStream::connect(dir.path().join("log.sock"))
            .await
            .unwrap();
        let mut lines = tokio::io::BufReader::new(stream).lines();
        let line = lines.next_line().await.unwrap().unwrap();
        assert!(line.contains("before the reader"), "{line}");
        task.abort();
    }
}
