//! Fixed-rate control loop driving, latency statistics and real-time scheduling settings.
//!
//! Deadlines are absolute (`start + k * period` on the monotonic clock), so a late tick never
//! shifts the ones after it: no drift. Sleeping uses `clock_nanosleep` with `TIMER_ABSTIME`.

use std::time::Duration;

pub use dreamer_wire::report::LatencySummary;
use hdrhistogram::Histogram;

/// Nanoseconds on the monotonic clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_until_ns(deadline: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    };
    // Interrupted sleeps (EINTR) are resumed against the same absolute deadline.
    loop {
        // SAFETY: `ts` is valid; a null remainder is allowed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            break;
        }
    }
}

/// An HDR histogram of durations (1 ns to 60 s, 3 significant digits). Recording does not
/// allocate.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl LatencyRecorder {
    pub fn record_ns(&mut self, ns: u64) {
        self.histogram.saturating_record(ns.max(1));
    }

    pub fn record(&mut self, duration: Duration) {
        self.record_ns(duration.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Paces a loop on an absolute grid of deadlines.
///
/// ```no_run
/// # use dreamer_runtime::RateDriver;
/// let mut driver = RateDriver::new(50.0).unwrap();
/// loop {
///     driver.wait(); // sleeps until the next deadline
///     // read sensors, agent.step(..), write actuators
///     driver.done(); // records the tick's work time, counts a miss if it overran
/// #   break;
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RateDriver {
    /// 0 = free-running.
    period_ns: u64,
    start_ns: u64,
    /// Index of the deadline the current tick started on.
    tick: u64,
    tick_start_ns: u64,
    misses: u64,
    skipped: u64,
    work: LatencyRecorder,
    wake_late: LatencyRecorder,
}

impl RateDriver {
    /// `rate_hz` = 0 runs as fast as possible.
    pub fn new(rate_hz: f64) -> Result<Self, String> {
        if !rate_hz.is_finite() || rate_hz < 0.0 {
            return Err(format!("rate {rate_hz} Hz is not a non-negative number"));
        }
        let period_ns = if rate_hz == 0.0 {
            0
        } else {
            (1e9 / rate_hz).round() as u64
        };
        if rate_hz > 0.0 && period_ns == 0 {
            return Err(format!("rate {rate_hz} Hz is above 1 GHz"));
        }
        Ok(RateDriver {
            period_ns,
            start_ns: 0,
            tick: 0,
            tick_start_ns: 0,
            misses: 0,
            skipped: 0,
            work: LatencyRecorder::default(),
            wake_late: LatencyRecorder::default(),
        })
    }

    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// Waits for the next deadline (the first call starts the grid at the current time) and
    /// returns the tick index on the grid.
    pub fn wait(&mut self) -> u64 {
        let now = monotonic_ns();
        if self.start_ns == 0 {
            self.start_ns = now;
            self.tick = 0;
        }
        if self.period_ns > 0 {
            let deadline = self.start_ns + self.tick * self.period_ns;
            if deadline > now {
                sleep_until_ns(deadline);
            }
            let woke = monotonic_ns();
            self.wake_late.record_ns(woke.saturating_sub(deadline));
            self.tick_start_ns = woke;
        } else {
            self.tick_start_ns = now;
        }
        self.tick
    }

    /// Sleeps until `lead` before the next deadline (no-op before the first tick or when that
    /// time has passed). For work that should happen just ahead of the tick, such as
    /// [`crate::Agent::prime`] bringing the weights back into cache after an idle period.
    pub fn sleep_until_before_next(&self, lead: Duration) {
        if self.period_ns == 0 || self.start_ns == 0 {
            return;
        }
        let deadline = self.start_ns + self.tick * self.period_ns;
        let wake = deadline.saturating_sub(lead.as_nanos().min(u64::MAX as u128) as u64);
        if wake > monotonic_ns() {
            sleep_until_ns(wake);
        }
    }

    /// Ends the tick started by [`RateDriver::wait`]: records its work time and schedules the
    /// next deadline. A tick that ends after the next deadline is a miss; deadlines that
    /// passed meanwhile are skipped (counted), keeping the grid.
    pub fn done(&mut self) {
        let now = monotonic_ns();
        self.work.record_ns(now.saturating_sub(self.tick_start_ns));
        self.tick += 1;
        if self.period_ns == 0 {
            return;
        }
        let next_deadline = self.start_ns + self.tick * self.period_ns;
        if now > next_deadline {
            self.misses += 1;
            // First grid point still ahead.
            let ahead = (now - self.start_ns) / self.period_ns + 1;
            self.skipped += ahead - self.tick;
            self.tick = ahead;
        }
    }

    /// Ticks whose work ran past the next deadline.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Deadlines dropped because a tick overran them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Time from wake-up to `done` per tick.
    pub fn work(&self) -> LatencySummary {
        self.work.summary()
    }

    /// How late the thread woke after each deadline (scheduling jitter).
    pub fn wake_late(&self) -> LatencySummary {
        self.wake_late.summary()
    }
}

/// Scheduling settings for the control thread.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopOptions {
    /// Pin the calling thread to this CPU.
    pub pin_cpu: Option<usize>,
    /// SCHED_FIFO priority (1..=99) for the calling thread.
    pub realtime_priority: Option<i32>,
    /// Lock all current and future memory in RAM (no page faults mid-loop).
    pub lock_memory: bool,
}

/// What [`apply_realtime`] managed to do; every refusal comes with a note saying why and how
/// to permit it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RealtimeReport {
    pub pinned_cpu: Option<usize>,
    pub fifo_priority: Option<i32>,
    pub memory_locked: bool,
    pub notes: Vec<String>,
}

/// Applies `options` to the calling thread, where the OS permits.
pub fn apply_realtime(options: &LoopOptions) -> RealtimeReport {
    let mut report = RealtimeReport::default();
    if let Some(cpu) = options.pin_cpu {
        match pin_current_thread(cpu) {
            Ok(()) => report.pinned_cpu = Some(cpu),
            Err(e) => report
                .notes
                .push(format!("not pinned to CPU {cpu}: {e}; running unpinned")),
        }
    }
    if let Some(priority) = options.realtime_priority {
        match set_fifo_priority(priority) {
            Ok(()) => report.fifo_priority = Some(priority),
            Err(e) => report.notes.push(format!(
                "SCHED_FIFO priority {priority} not applied: {e}; running at normal priority \
                 (permit it with CAP_SYS_NICE, e.g. `sudo setcap cap_sys_nice+ep dreamer-rt`, or \
                 an `rtprio` limit in /etc/security/limits.conf)"
            )),
        }
    }
    if options.lock_memory {
        // SAFETY: plain syscall with constant flags.
        let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        if rc == 0 {
            report.memory_locked = true;
        } else {
            report.notes.push(format!(
                "memory not locked: {} (raise `ulimit -l` or grant CAP_IPC_LOCK)",
                std::io::Error::last_os_error()
            ));
        }
    }
    report
}

/// The kernel's real-time throttling as (runtime, period) in µs from
/// `/proc/sys/kernel/sched_rt_{runtime,period}_us`: SCHED_FIFO threads of a CPU may run
/// `runtime` of every `period`, then the kernel takes the CPU away for the rest. `None` when
/// throttling is off (`runtime` -1) or the files cannot be read.
pub fn rt_throttling() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<i64> {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let runtime = u64::try_from(read("sched_rt_runtime_us")?).ok()?;
    let period = u64::try_from(read("sched_rt_period_us")?).ok()?;
    (runtime < period).then_some((runtime, period))
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    let available = online_cpus();
    if cpu >= available {
        return Err(format!(
            "CPU {cpu} does not exist (this machine has {available})"
        ));
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET stays in bounds (checked above against the
    // online count, far below CPU_SETSIZE); pid 0 = calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Gives the calling thread SCHED_FIFO at `priority`.
pub fn set_fifo_priority(priority: i32) -> Result<(), String> {
    // SAFETY: plain syscalls; sched_param is plain data.
    let (min, max) = unsafe {
        (
            libc::sched_get_priority_min(libc::SCHED_FIFO),
            libc::sched_get_priority_max(libc::SCHED_FIFO),
        )
    };
    if priority < min || priority > max {
        return Err(format!("priority must be in {min}..={max}"));
    }
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 = calling thread; `param` is valid.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// CPUs online.
pub fn online_cpus() -> usize {
    // SAFETY: plain sysconf query.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absolute_and_do_not_drift() {
        let period = 5_000_000u64; // 200 Hz
        let mut driver = RateDriver::new(200.0).unwrap();
        let mut late_on_last = 0;
        for _ in 0..30 {
            let tick = driver.wait();
            let woke = monotonic_ns();
            let deadline = driver.start_ns + tick * period;
            assert!(woke >= deadline, "tick {tick} woke before its deadline");
            late_on_last = woke - deadline;
            // Work well under the period; with relative sleeps it would add up to 6 ms.
            let t = monotonic_ns();
            while monotonic_ns() - t < 200_000 {}
            driver.done();
        }
        assert!(
            late_on_last < 4_000_000,
            "last tick {late_on_last} ns late: drift"
        );
        assert_eq!(driver.work().count, 30);
    }

    #[test]
    fn overrun_counts_a_miss_and_skips_to_the_grid() {
        let mut driver = RateDriver::new(1000.0).unwrap(); // 1 ms
        driver.wait();
        std::thread::sleep(Duration::from_micros(3500));
        driver.done();
        assert_eq!(driver.misses(), 1);
        assert!(driver.skipped() >= 2, "skipped {}", driver.skipped());
        let tick = driver.wait();
        assert!(
            tick >= 4,
            "next tick {tick} must be on the grid after the overrun"
        );
        driver.done();
        assert_eq!(driver.misses(), 1);
    }

    #[test]
    fn free_running_never_misses() {
        let mut driver = RateDriver::new(0.0).unwrap();
        for _ in 0..100 {
            driver.wait();
            driver.done();
        }
        assert_eq!(driver.misses(), 0);
        assert_eq!(driver.work().count, 100);
        assert!(RateDriver::new(-1.0).is_err());
        assert!(RateDriver::new(f64::NAN).is_err());
    }

    #[test]
    fn percentiles_are_ordered() {
        let mut rec = LatencyRecorder::default();
        for i in 1..=1000u64 {
            rec.record_ns(i * 1000);
        }
        let s = rec.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 2.0, "{s}");
        assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.p999_us);
        assert!((s.max_us - 1000.0).abs() < 2.0, "{s}");
    }

    #[test]
    fn refused_realtime_settings_come_with_a_note() {
        let report = apply_realtime(&LoopOptions {
            pin_cpu: Some(100_000),
            realtime_priority: Some(1000),
            lock_memory: false,
        });
        assert_eq!(report.pinned_cpu, None);
        assert_eq!(report.fifo_priority, None);
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
        assert!(report.notes[0].contains("CPU 100000"));
        assert!(report.notes[1].contains("SCHED_FIFO"));
    }
}
