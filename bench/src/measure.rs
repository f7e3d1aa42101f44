//! The measurements: rounds of a fixed duration, a rate per round, and the median
//! (with min and max) over rounds, which is robust to a round disturbed by other work
//! on the machine; latency percentiles over every request of every round.
//!
//! Two kinds: [`raw_rates`] calls a signing function in a tight loop on the calling
//! thread; [`end_to_end`] keeps N requests in flight through the app socket, one
//! keep-alive connection per request in flight, each answer checked.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use crate::Error;
use ekms_client::Conn;

/// Rates of several rounds, in operations per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates(pub Vec<f64>);

impl Rates {
    /// The median round (mean of the two middle rounds for an even count); 0 if empty.
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The slowest round; 0 if empty.
    pub fn min(&self) -> f64 {
        self.0.iter().copied().reduce(f64::min).unwrap_or(0.0)
    }

    /// The fastest round; 0 if empty.
    pub fn max(&self) -> f64 {
        self.0.iter().copied().reduce(f64::max).unwrap_or(0.0)
    }
}

/// The `p`-th percentile (0..=100, nearest rank) of `sorted` (ascending); `None` if
/// empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Calls `op` in a loop on this thread: a warm-up of one round, then `rounds` rounds
/// of `round` each; the rate of each round in calls per second.
pub fn raw_rates(round: Duration, rounds: usize, mut op: impl FnMut()) -> Rates {
    let mut one_round = || {
        let start = Instant::now();
        let mut n: u64 = 0;
        loop {
            op();
            n += 1;
            // Instant::now costs ~25 ns against tens of µs per signature.
            let elapsed = start.elapsed();
            if elapsed >= round {
                return n as f64 / elapsed.as_secs_f64();
            }
        }
    };
    one_round();
    Rates((0..rounds).map(|_| one_round()).collect())
}

/// How an end-to-end scenario is run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Request target, e.g. `/v1/keys/{id}/sign`.
    pub uri: String,
    /// Request body (JSON), the same for every request.
    pub body: Bytes,
    /// A byte string every good answer body contains (besides status 200).
    pub expect: &'static [u8],
    /// Requests in flight (= connections).
    pub in_flight: usize,
    /// Warm-up before the measured rounds.
    pub warmup: Duration,
    /// Measured rounds.
    pub rounds: usize,
    /// Duration of one round.
    pub round: Duration,
}

/// What an end-to-end scenario measured.
#[derive(Debug, Clone)]
pub struct EndToEnd {
    /// Good answers per second, per measured round.
    pub rates: Rates,
    /// Latency of every good answer of the measured rounds, ascending.
    pub latencies: Vec<Duration>,
    /// Good answers in the measured rounds.
    pub ok: u64,
    /// Answers that were not 200 with the expected shape, and transport errors,
    /// warm-up included.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Wall time of the measured rounds.
    pub wall: Duration,
}

struct RoundResult {
    conns: Vec<Conn>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    wall: Duration,
}

/// Runs `s` against the socket at `socket`: opens `s.in_flight` connections, warms up,
/// then measures `s.rounds` rounds.
///
/// # Errors
/// [`Error::Http`] if the connections cannot be opened.
pub async fn end_to_end(socket: &Path, s: &Scenario) -> Result<EndToEnd, Error> {
    let mut conns = Vec::with_capacity(s.in_flight);
    for _ in 0..s.in_flight {
        conns.push(crate::connect(socket).await?);
    }
    let warm = run_round(conns, s, s.warmup).await;
    let mut out = EndToEnd {
        rates: Rates(Vec::new()),
        latencies: Vec::new(),
        ok: 0,
        errors: warm.errors,
        first_error: warm.first_error,
        wall: Duration::ZERO,
    };
    conns = warm.conns;
    for _ in 0..s.rounds {
        let r = run_round(conns, s, s.round).await;
        conns = r.conns;
        out.rates.0.push(r.ok as f64 / r.wall.as_secs_f64());
        out.ok += r.ok;
        out.errors += r.errors;
        out.first_error = out.first_error.or(r.first_error);
        out.latencies.extend(r.latencies);
        out.wall += r.wall;
    }
    out.latencies.sort_unstable();
    Ok(out)
}

/// One round: every connection sends requests back to back until `len` has passed;
/// the round's wall time ends when the last answer is in.
async fn run_round(conns: Vec<Conn>, s: &Scenario, len: Duration) -> RoundResult {
    let start = Instant::now();
    let deadline = start + len;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let uri = s.uri.clone();
            let body = s.body.clone();
            let expect = s.expect;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut first_error) = (0u64, None);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let answer = conn
                        .request(Method::POST, &uri, body.clone())
                        .await
                        .map_err(Error::from);
                    match check(answer, expect) {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            // Do not spin on a dead socket.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (conn, latencies, errors, first_error)
            })
        })
        .collect();
    let mut r = RoundResult {
        conns: Vec::with_capacity(tasks.len()),
        ok: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        wall: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok((conn, lat, errors, first_error)) => {
                r.conns.push(conn);
                r.ok += lat.len() as u64;
                r.latencies.extend(lat);
                r.errors += errors;
                r.first_error = r.first_error.or(first_error);
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(format!("task failed: {e}"));
            }
        }
    }
    r.wall = start.elapsed();
    r
}

fn check(answer: Result<(StatusCode, Bytes), Error>, expect: &[u8]) -> Result<(), String> {
    let (status, body) = answer.map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    if !body.windows(expect.len()).any(|w| w == expect) {
        return Err("200 without the expected field".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let r = Rates(vec![5.0, 1.0, 3.0]);
        assert_eq!((r.median(), r.min(), r.max()), (3.0, 1.0, 5.0));
        assert_eq!(Rates(vec![4.0, 1.0, 3.0, 2.0]).median(), 2.5);
    }

    #[test]
    fn rejects_nothing_to_summarize() {
        let r = Rates(Vec::new());
        assert_eq!((r.median(), r.min(), r.max()), (0.0, 0.0, 0.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_micros(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_micros(1)));
    }

    #[test]
    fn raw_rates_counts_calls() {
        let mut calls = 0u64;
        let rates = raw_rates(Duration::from_millis(20), 3, || {
            calls += 1;
            std::thread::sleep(Duration::from_millis(1));
        });
        assert_eq!(rates.0.len(), 3);
        // ~1 ms a call: well under 1000/s, well over 100/s.
        assert!(
            rates.median() > 100.0 && rates.median() < 1000.0,
            "{rates:?}"
        );
        assert!(calls >= 4 * 10);
    }

    #[test]
    fn answer_check() {
        let ok = Ok((StatusCode::OK, Bytes::from_static(b"{\"signature\":1}")));
        assert!(check(ok, b"\"signature\"").is_ok());
    }

    #[test]
    fn rejects_bad_answers() {
        let denied = Ok((StatusCode::FORBIDDEN, Bytes::from_static(b"{\"error\":{}}")));
        assert!(check(denied, b"\"signature\"").unwrap_err().contains("403"));
        let shape = Ok((StatusCode::OK, Bytes::from_static(b"{}")));
        assert!(check(shape, b"\"signature\"").is_err());
        assert!(check(Err(Error::Http("reset".into())), b"x").is_err());
    }
}
