//! The benchmark's report: the machine it ran on (read from `/proc`, `uname`,
//! `rustc -V`), the results table and the CPU time per signature by process, as
//! Markdown (GitHub tables).

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::measure::Rates;

/// Facts about the machine and its load, for reading the numbers.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `uname -srm`.
    pub kernel: String,
    /// `rustc -V` in the current directory (the workspace's pinned toolchain).
    pub rustc: String,
    /// UTC time at the start of the run, RFC 3339.
    pub date: String,
    /// `/proc/loadavg` at the start and at the end of the run.
    pub loadavg: (String, String),
    /// Running `rustc` processes (other builds on a shared machine) at start and end.
    pub rustc_procs: (usize, usize),
    /// Whether this benchmark binary is a debug build (numbers then mean little).
    pub debug_build: bool,
}

impl Machine {
    /// Reads the facts available at the start of a run.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel: command_line("uname", &["-srm"]),
            rustc: command_line("rustc", &["-V"]),
            date: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| "unknown".into()),
            loadavg: (loadavg(), String::new()),
            rustc_procs: (count_processes("rustc"), 0),
            debug_build: cfg!(debug_assertions),
        }
    }

    /// Records the load at the end of the run.
    pub fn finish(&mut self) {
        self.loadavg.1 = loadavg();
        self.rustc_procs.1 = count_processes("rustc");
    }
}

/// The first `model name` line of `/proc/cpuinfo` text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Processes whose `comm` is exactly `name`.
fn count_processes(name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| c.trim_end() == name)
        .count()
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub path: String,
    /// Requests in flight (`1 thread` for in-process rows).
    pub in_flight: String,
    /// Per-round rates, signatures per second.
    pub rates: Rates,
    /// Median latency (end-to-end rows) or mean time per call (in-process rows).
    pub p50: Option<Duration>,
    /// 99th percentile latency (end-to-end rows only).
    pub p99: Option<Duration>,
    /// 99.9th percentile latency (end-to-end rows only).
    pub p999: Option<Duration>,
    /// Median rate divided by the bare primitive's median rate of the same curve.
    pub ratio_primitive: f64,
    /// Median rate divided by the `ekms_signer` function's median rate.
    pub ratio_signer: f64,
    /// Failed requests (end-to-end rows).
    pub errors: Option<u64>,
}

/// CPU time per signature of each process during one end-to-end scenario.
#[derive(Debug, Clone)]
pub struct CpuRow {
    /// Scenario (path and in flight).
    pub scenario: String,
    /// Process name and its CPU time divided by the signatures of the scenario.
    pub per_signature: Vec<(String, Duration)>,
    /// CPU utilisation of the whole machine's share used by these processes, in
    /// cores (sum of CPU time / wall time).
    pub cores_busy: f64,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The results table.
    pub rows: Vec<Row>,
    /// CPU time per signature, per scenario.
    pub cpu: Vec<CpuRow>,
    /// The machine.
    pub machine: Machine,
    /// Run settings as (name, value) pairs.
    pub settings: Vec<(String, String)>,
    /// The command line of this run.
    pub command: String,
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// `12345.6` as `12,346`.
fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// Total failed end-to-end requests.
    pub fn errors(&self) -> u64 {
        self.rows.iter().filter_map(|r| r.errors).sum()
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| path | in flight | median sig/s | min–max sig/s | p50 latency | p99 latency | p99.9 latency | p99 ÷ p50 | ÷ bare primitive | ÷ ekms_signer | errors |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {}–{} | {} | {} | {} | {} | {:.3} | {:.3} | {} |",
                r.path,
                r.in_flight,
                thousands(r.rates.median()),
                thousands(r.rates.min()),
                thousands(r.rates.max()),
                r.p50.map_or("–".into(), us),
                r.p99.map_or("–".into(), us),
                r.p999.map_or("–".into(), us),
                match (r.p50, r.p99) {
                    (Some(a), Some(b)) if r.errors.is_some() && !a.is_zero() =>
                        format!("{:.2}", b.as_secs_f64() / a.as_secs_f64()),
                    _ => "–".into(),
                },
                r.ratio_primitive,
                r.ratio_signer,
                r.errors.map_or("–".into(), |e| e.to_string()),
            );
        }
        let _ = writeln!(s, "\nIn-process rows: one thread; their latency column is the mean time per call. End-to-end rows: p50/p99/p99.9 over every request of every measured round.");
        if !self.cpu.is_empty() {
            let _ = writeln!(
                s,
                "\nCPU time per signature (user + system, from /proc/PID/stat over warm-up + measured rounds, divided by the signatures of that window; 10 ms tick granularity):\n"
            );
            // Columns: every process any row measured, in first-seen order; a process a
            // row could not measure (its pid not yet known, or gone) shows as "–".
            let mut names: Vec<String> = Vec::new();
            for (n, _) in self.cpu.iter().flat_map(|c| &c.per_signature) {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            let _ = writeln!(s, "| scenario | {} | cores busy |", names.join(" | "));
            let _ = writeln!(s, "|---|{}---:|", "---:|".repeat(names.len()));
            for c in &self.cpu {
                let cells: Vec<String> = names
                    .iter()
                    .map(|name| {
                        c.per_signature
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or_else(|| "–".to_owned(), |(_, d)| us(*d))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} |",
                    c.scenario,
                    cells.join(" | "),
                    c.cores_busy
                );
            }
        }
        let m = &self.machine;
        let _ = writeln!(s, "\nMachine:\n");
        let _ = writeln!(s, "- CPUs (nproc): {}", m.nproc);
        let _ = writeln!(s, "- CPU model: {}", m.cpu_model);
        let _ = writeln!(s, "- kernel: {}", m.kernel);
        let _ = writeln!(s, "- rustc: {}", m.rustc);
        let _ = writeln!(s, "- date (UTC): {}", m.date);
        let _ = writeln!(
            s,
            "- load average (1/5/15 min) at start: {}; at end: {}",
            m.loadavg.0, m.loadavg.1
        );
        let _ = writeln!(
            s,
            "- other `rustc` processes running at start / end: {} / {}",
            m.rustc_procs.0, m.rustc_procs.1
        );
        if m.debug_build {
            let _ = writeln!(
                s,
                "- **debug build of ekms-bench: numbers are not meaningful, use --release**"
            );
        }
        let _ = writeln!(s, "\nSettings:\n");
        for (k, v) in &self.settings {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(s, "- command: `{}`", self.command);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(errors: Option<u64>) -> Row {
        Row {
            path: "EVM end-to-end".into(),
            in_flight: "64".into(),
            rates: Rates(vec![9000.0, 10_500.4, 11_000.0]),
            p50: Some(Duration::from_micros(6100)),
            p99: Some(Duration::from_micros(25)),
            p999: Some(Duration::from_micros(40)),
            ratio_primitive: 0.65,
            ratio_signer: 0.7,
            errors,
        }
    }

    #[test]
    fn markdown_table_and_machine() {
        let report = Report {
            rows: vec![row(Some(0))],
            cpu: vec![
                CpuRow {
                    scenario: "EVM, 64".into(),
                    per_signature: vec![("parent".into(), Duration::from_micros(40))],
                    cores_busy: 1.9,
                },
                // A row that could not measure the parent keeps its columns.
                CpuRow {
                    scenario: "EVM, 1".into(),
                    per_signature: vec![("ekms-bench".into(), Duration::from_micros(151))],
                    cores_busy: 0.02,
                },
            ],
            machine: Machine {
                nproc: 2,
                cpu_model: "Test CPU".into(),
                ..Machine::default()
            },
            settings: vec![("rounds".into(), "5 × 3 s".into())],
            command: "ekms-bench --rounds 5".into(),
        };
        let md = report.markdown();
        assert!(
            md.contains("| EVM end-to-end | 64 | 10,500 | 9,000–11,000 | 6100 µs | 25.0 µs | 40.0 µs | 0.00 | 0.650 | 0.700 | 0 |"),
            "{md}"
        );
        assert!(md.contains("| scenario | parent | ekms-bench | cores busy |"));
        assert!(md.contains("| EVM, 64 | 40.0 µs | – | 1.90 |"), "{md}");
        assert!(md.contains("| EVM, 1 | – | 151 µs | 0.02 |"), "{md}");
        assert!(md.contains("- CPUs (nproc): 2"));
        assert!(md.contains("- CPU model: Test CPU"));
        assert!(md.contains("- rounds: 5 × 3 s"));
        assert_eq!(report.errors(), 0);
    }

    #[test]
    fn rejects_hiding_errors() {
        let report = Report {
            rows: vec![row(Some(3)), row(None)],
            ..Report::default()
        };
        assert_eq!(report.errors(), 3);
        assert!(report.markdown().contains("| 3 |"));
    }

    #[test]
    fn cpu_model_from_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: X\nmodel name\t: AMD EPYC 7R13 Processor\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7R13 Processor"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn probe_reads_this_machine() {
        let m = Machine::probe();
        assert!(m.nproc >= 1);
        assert!(!m.date.is_empty());
    }
}
