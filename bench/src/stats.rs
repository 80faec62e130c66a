//! Latency samples of a phase, as percentiles and as a series over time.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(samples: &[Sample]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64() * 1000.0).collect();
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_unstable_by(f64::total_cmp);
        Self {
            p50_ms: round(quantile(&ms, 0.5)),
            p99_ms: round(quantile(&ms, 0.99)),
            max_ms: round(quantile(&ms, 1.0)),
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One request: when it was due (open loop) or done (closed loop), in seconds from the phase's start,
/// and how long it took from that due time.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: f64,
    pub latency: Duration,
}

/// One second of a phase: requests, and their latency percentiles in ms.
#[derive(Debug, Clone, Copy)]
pub struct Second {
    pub second: f64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The samples, second by second.
pub fn per_second(samples: &[Sample]) -> Vec<Second> {
    let mut buckets: Vec<Vec<f64>> = Vec::new();
    for sample in samples {
        let index = sample.at.max(0.0) as usize;
        if buckets.len() <= index {
            buckets.resize_with(index + 1, Vec::new);
        }
        buckets[index].push(sample.latency.as_secs_f64() * 1000.0);
    }
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, ms)| !ms.is_empty())
        .map(|(second, mut ms)| {
            ms.sort_unstable_by(f64::total_cmp);
            Second {
                second: second as f64,
                per_s: ms.len() as f64,
                p50_ms: quantile(&ms, 0.5),
                p99_ms: quantile(&ms, 0.99),
                max_ms: quantile(&ms, 1.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, ms: u64) -> Sample {
        Sample { at, latency: Duration::from_millis(ms) }
    }

    #[test]
    fn percentiles_are_the_nearest_rank() {
        let samples: Vec<_> = (1..=100).map(|ms| sample(0.0, ms)).collect();
        let latency = Latency::of(&samples);
        assert_eq!((latency.p50_ms, latency.p99_ms, latency.max_ms), (51.0, 99.0, 100.0));
        assert_eq!(Latency::of(&[]).max_ms, 0.0);
    }

    #[test]
    fn seconds_hold_their_own_samples_and_skip_empty_ones() {
        let seconds = per_second(&[sample(0.2, 1), sample(0.9, 3), sample(2.5, 7)]);
        let got: Vec<_> = seconds.iter().map(|s| (s.second, s.per_s, s.max_ms)).collect();
        assert_eq!(got, [(0.0, 2.0, 3.0), (2.0, 1.0, 7.0)]);
    }
}
