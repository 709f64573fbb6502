//! One measured figure, how it is timed, and how two modules' figures compare.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a figure counts, and so which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Time per call in microseconds (lower is better).
    Micros,
    /// Memory in KiB (lower is better).
    Kib,
    /// Operations, keys or blobs per second (higher is better).
    PerSecond,
    /// A speed-up factor (higher is better).
    Times,
    /// Megabytes per second (higher is better).
    MegabytesPerSecond,
}

impl Unit {
    fn lower_is_better(self) -> bool {
        matches!(self, Self::Micros | Self::Kib)
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Micros => "µs",
            Self::Kib => "KiB",
            Self::PerSecond => "/s",
            Self::Times => "×",
            Self::MegabytesPerSecond => "MB/s",
        }
    }
}

/// One scenario's figures for one module (or for the tool).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    pub scenario: String,
    pub unit: Unit,
    /// The median (per-call times) or the single measured value.
    pub median: f64,
    /// The 99th percentile of per-call times; none for throughput and memory figures.
    pub p99: Option<f64>,
    /// Calls or items behind the figure.
    pub calls: usize,
}

impl Figure {
    pub fn value(scenario: impl Into<String>, unit: Unit, value: f64, calls: usize) -> Self {
        Self {
            scenario: scenario.into(),
            unit,
            median: value,
            p99: None,
            calls,
        }
    }

    /// The cell of the table: "median / p99 µs" or "value unit".
    pub fn cell(&self) -> String {
        match self.p99 {
            Some(p99) => format!("{:.1} / {:.1}", self.median, p99),
            None if self.median >= 100.0 => format!("{:.0} {}", self.median, self.unit.suffix()),
            None => format!("{:.2} {}", self.median, self.unit.suffix()),
        }
    }

    /// How many times better `self` is than `other` (above 1: `self` wins).
    pub fn advantage_over(&self, other: &Figure) -> Option<f64> {
        if self.median <= 0.0 || other.median <= 0.0 || self.unit != other.unit {
            return None;
        }
        Some(if self.unit.lower_is_better() {
            other.median / self.median
        } else {
            self.median / other.median
        })
    }
}

/// Median and p99 of per-call times, in microseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |fraction: f64| {
        let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
        samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    (at(0.5), at(0.99))
}

/// The middle of measured values (the upper middle of an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times `calls` runs of `op` (after a tenth as warm-up).
pub fn time(
    scenario: &str,
    calls: usize,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<Figure, String> {
    for _ in 0..calls.div_ceil(10) {
        op().map_err(|err| format!("{scenario}: {err}"))?;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        op().map_err(|err| format!("{scenario}: {err}"))?;
        samples.push(start.elapsed());
    }
    let (median, p99) = percentiles(samples);
    Ok(Figure {
        scenario: scenario.to_owned(),
        unit: Unit::Micros,
        median,
        p99: Some(p99),
        calls,
    })
}

/// The peak resident set of this process so far (VmHWM), in KiB.
pub fn own_peak_kib() -> Option<u64> {
    peak_kib_of("self")
}

/// VmHWM of a process (`self` or a pid), in KiB; none once it has gone.
pub fn peak_kib_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantage_reads_the_unit_the_right_way_round() {
        let fast = Figure::value("a", Unit::Micros, 2.0, 1);
        let slow = Figure::value("a", Unit::Micros, 6.0, 1);
        assert_eq!(fast.advantage_over(&slow), Some(3.0));
        let many = Figure::value("b", Unit::PerSecond, 300.0, 1);
        let few = Figure::value("b", Unit::PerSecond, 100.0, 1);
        assert_eq!(many.advantage_over(&few), Some(3.0));
        assert_eq!(fast.advantage_over(&many), None);
    }

    #[test]
    fn median_takes_the_middle_of_any_order() {
        assert_eq!(median(vec![1.9, 1.2, 1.7, 2.0, 1.5]), 1.7);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn percentiles_pick_the_median_and_the_tail() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentiles(samples), (51.0, 99.0));
    }
}
