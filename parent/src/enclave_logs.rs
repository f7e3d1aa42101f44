//! The reader of the enclave's forwarded logs (`--enclave-log`, issue 9 item 5): a
//! production enclave's console is dark, so the enclave serves its `tracing` events as
//! JSON lines ([`ekms_shared::ENCLAVE_LOG_PORT`]), and this task writes each to the
//! parent's own log (the journal, under systemd) with target `enclave` and the
//! enclave's level, target and fields.
//!
//! The lines come from the enclave but travel through the host: they are data, shown
//! as they are, bounded ([`MAX_LINE_BYTES`]); a line that is not an object of the
//! expected shape is logged as text.

use std::time::Duration;

use ekms_shared::Address;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use crate::io::connect_enclave;

/// Longest line read (the enclave cuts its lines at 4 KiB).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Wait between connection attempts.
const RETRY: Duration = Duration::from_secs(1);

/// Reads the enclave's log lines from `addr` for ever, reconnecting after a failure.
pub async fn follow(addr: Address) {
    loop {
        match connect_enclave(&addr).await {
            Ok(stream) => {
                tracing::debug!(%addr, "reading the enclave's logs");
                read_lines(BufReader::new(stream)).await;
            }
            Err(e) => tracing::debug!(%addr, error = %e, "enclave log socket not reachable"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Logs every line of `reader` until it ends or a line is too long.
async fn read_lines(mut reader: impl tokio::io::AsyncBufRead + Unpin) {
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > MAX_LINE_BYTES => {
                tracing::warn!(target: "enclave", "a log line longer than {MAX_LINE_BYTES} bytes: connection dropped");
                return;
            }
            Ok(_) => emit(&String::from_utf8_lossy(&line)),
        }
    }
}

/// Writes one forwarded line to this process's log.
fn emit(line: &str) {
    let line = line.trim_end();
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(line).ok();
    let Some(event) = parsed else {
        tracing::info!(target: "enclave", raw = %line, "unparsed enclave log line");
        return;
    };
    let text = |k: &str| event.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let fields = event
        .get("fields")
        .map(ToString::to_string)
        .unwrap_or_default();
    let (message, target) = (text("message"), text("target"));
    match text("level") {
        "ERROR" => {
            tracing::error!(target: "enclave", enclave_target = target, fields = %fields, "{message}")
        }
        "WARN" => {
            tracing::warn!(target: "enclave", enclave_target = target, fields = %fields, "{message}")
        }
        "DEBUG" | "TRACE" => {
            tracing::debug!(target: "enclave", enclave_target = target, fields = %fields, "{message}")
        }
        _ => {
            tracing::info!(target: "enclave", enclave_target = target, fields = %fields, "{message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_lines_and_stops_at_an_overlong_one() {
        let good = br#"{"level":"INFO","target":"ekms_enclave::state","message":"enclave state","fields":{"to":"Ready"}}"#;
        let mut input = good.to_vec();
        input.push(b'\n');
        input.extend_from_slice(b"not json\n");
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\nafter\n");
        // Returns (no panic, no unbounded buffer) at the overlong line.
        read_lines(BufReader::new(&input[..])).await;
    }
}
