//! Timing and resident-memory helpers.

use std::time::{Duration, Instant};

/// Best-of-batches timer: each batch runs long enough to dwarf `Instant`'s own cost, and the fastest
/// batch is reported. On a machine shared with other work (the 2 cores this was written on), the
/// fastest batch is the one least disturbed; the median is recorded too.
#[derive(Debug, Clone)]
pub struct Timer {
    batches: usize,
    batch: Duration,
}

impl Default for Timer {
    fn default() -> Self {
        Timer { batches: 15, batch: Duration::from_millis(25) }
    }
}

impl Timer {
    pub fn quick() -> Timer {
        Timer { batches: 5, batch: Duration::from_millis(10) }
    }
    /// For calls of many milliseconds: fewer batches.
    pub fn slow(&self) -> Timer {
        Timer { batches: self.batches.min(7), batch: self.batch }
    }

    /// Nanoseconds per call of `f`: the fastest batch.
    pub fn ns(&self, f: impl FnMut()) -> f64 {
        self.sample(f).0
    }

    /// (fastest, median) nanoseconds per call of `f`.
    pub fn sample(&self, mut f: impl FnMut()) -> (f64, f64) {
        // Warm-up, and an estimate of one call.
        let t = Instant::now();
        let mut n = 0u64;
        while n < 20 || (t.elapsed() < self.batch / 2 && n < 100_000) {
            f();
            n += 1;
        }
        let est = t.elapsed().as_nanos() as f64 / n as f64;
        let per_batch = ((self.batch.as_nanos() as f64 / est.max(1.0)) as u64).max(1);
        let mut samples: Vec<f64> = (0..self.batches)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..per_batch {
                    f();
                }
                t.elapsed().as_nanos() as f64 / per_batch as f64
            })
            .collect();
        samples.sort_by(|a, b| a.total_cmp(b));
        (samples[0], samples[samples.len() / 2])
    }
}

/// Resident set size of this process in KiB (`VmRSS` of /proc/self/status; 0 where there is none).
pub fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}
