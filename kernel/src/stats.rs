//! Benchmark summaries.
//!
//! Every benchmark reports the median and the 99th percentile of its samples
//! (nearest-rank definition), the same two numbers for every hot path, so
//! results can be compared across runs and against Linux.

/// Median and 99th percentile of a sample set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// 50th percentile.
    pub median: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Number of samples.
    pub samples: usize,
}

/// Sorts `samples` in place and summarises them. `None` for no samples.
pub fn summarize(samples: &mut [u64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(Summary {
        median: percentile(samples, 50),
        p99: percentile(samples, 99),
        samples: samples.len(),
    })
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = summarize(&mut v).unwrap();
        assert_eq!((s.median, s.p99, s.samples), (50, 99, 100));
        assert_eq!(summarize(&mut [7]).unwrap(), Summary { median: 7, p99: 7, samples: 1 });
        assert_eq!(summarize(&mut []), None);
        let mut v = vec![5, 1, 1000, 2, 3];
        let s = summarize(&mut v).unwrap();
        assert_eq!((s.median, s.p99), (3, 1000));
    }
}
