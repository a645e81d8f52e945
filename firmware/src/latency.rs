//! A fixed-size latency histogram for the firmware: no allocation, constant-time recording,
//! percentiles within 1/32 (3.1 %) of the true value.
//!
//! Values (microseconds, `u32`) below 32 have a bucket each; above, every power of two is
//! split into 32 equal buckets (log-linear, like HdrHistogram with 5 significant bits).

use dreamer_wire::LatencyStats;

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Buckets covering every `u32`: 32 exact ones, then 32 per power of two from 2^5 to 2^31.
const BUCKETS: usize = SUB + (32 - SUB_BITS as usize) * SUB;

/// Counts of microsecond durations in log-linear buckets.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: [u32; BUCKETS],
    count: u32,
    min_us: u32,
    max_us: u32,
    sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub const fn new() -> Self {
        Self {
            counts: [0; BUCKETS],
            count: 0,
            min_us: u32::MAX,
            max_us: 0,
            sum_us: 0,
        }
    }

    /// Records one duration; values above `u32::MAX` µs (71 minutes) are recorded as that.
    pub fn record(&mut self, us: u64) {
        let us = u32::try_from(us).unwrap_or(u32::MAX);
        let bucket = bucket_of(us);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(u64::from(us));
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The smallest recorded-bucket bound at or above fraction `q` of the values, capped at
    /// the maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u32 {
        if self.count == 0 {
            return 0;
        }
        let rank = libm::ceil(q.clamp(0.0, 1.0) * f64::from(self.count)).max(1.0) as u64;
        let mut seen = 0u64;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return upper_bound(bucket).min(self.max_us);
            }
        }
        self.max_us
    }

    /// Count, extremes, mean and percentiles ([`LatencyHistogram::quantile`]); all zero when
    /// nothing was recorded.
    pub fn stats(&self) -> LatencyStats {
        if self.count == 0 {
            return LatencyStats::default();
        }
        LatencyStats {
            count: self.count,
            min_us: self.min_us,
            mean_us: self.sum_us as f64 / f64::from(self.count),
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.max_us,
        }
    }
}

fn bucket_of(us: u32) -> usize {
    if (us as usize) < SUB {
        return us as usize;
    }
    let exponent = 31 - us.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let sub = ((us >> shift) as usize) - SUB;
    (exponent - SUB_BITS + 1) as usize * SUB + sub
}

/// Largest value that falls in `bucket`.
fn upper_bound(bucket: usize) -> u32 {
    if bucket < SUB {
        return bucket as u32;
    }
    let shift = (bucket / SUB - 1) as u32;
    let lower = ((SUB + bucket % SUB) as u64) << shift;
    (lower + (1u64 << shift) - 1).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        for us in [
            0u32,
            1,
            31,
            32,
            33,
            63,
            64,
            65,
            100,
            1000,
            123_456,
            u32::MAX,
        ] {
            let bucket = bucket_of(us);
            assert!(bucket < BUCKETS, "{us}");
            assert!(upper_bound(bucket) >= us, "{us}");
            if bucket > 0 {
                assert!(upper_bound(bucket - 1) < us, "{us}");
            }
            // At most 1/32 above the value.
            assert!(
                u64::from(upper_bound(bucket)) <= u64::from(us) + u64::from(us) / 32,
                "{us}"
            );
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.stats(), LatencyStats::default());
        for us in 1..=1000u64 {
            h.record(us);
        }
        let s = h.stats();
        assert_eq!((s.count, s.min_us, s.max_us), (1000, 1, 1000));
        assert!((s.mean_us - 500.5).abs() < 1e-9);
        for (got, want) in [(s.p50_us, 500), (s.p90_us, 900), (s.p99_us, 990)] {
            assert!(got >= want && got <= want + want / 32, "{got} vs {want}");
        }
        assert_eq!(s.p999_us, 1000);
        h.record(u64::MAX);
        assert_eq!(h.stats().max_us, u32::MAX);
    }
}
