//! Benchmark reports in the format `cargo xtask bench` collects: one line
//! `bench {"name":..,"unit":"cycles","median":..,"p99":..,"samples":..}`
//! per benchmark (under `--icount` the "cycles" are guest instructions).

/// The `pct`-th percentile of `sorted` (nearest rank; `sorted` must be
/// sorted ascending and non-empty).
pub fn percentile(sorted: &[u64], pct: usize) -> u64 {
    let n = sorted.len();
    sorted[(pct * n).div_ceil(100).clamp(1, n) - 1]
}

/// Sorts `samples` and prints the benchmark line for `name` (nothing if
/// there are no samples).
pub fn report(name: &str, samples: &mut [u64]) {
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    crate::println!(
        "bench {{\"name\":\"{name}\",\"unit\":\"cycles\",\"median\":{},\"p99\":{},\"samples\":{}}}",
        percentile(samples, 50),
        percentile(samples, 99),
        samples.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: [u64; 100] = core::array::from_fn(|i| i as u64 + 1);
        assert_eq!(percentile(&s, 50), 50);
        assert_eq!(percentile(&s, 99), 99);
        assert_eq!(percentile(&s, 100), 100);
        assert_eq!(percentile(&[7], 50), 7);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 0), 1);
    }
}
