//! How busy the CPUs were over a measured run: this process's own CPU time and the whole
//! machine's, so a latency figure can be read against whether the run was short of CPU. On a
//! small machine the load generator, the server and the kernel's I/O completions share the same
//! cores, and a tail that comes from waiting for a CPU looks like one that comes from the disk.

use std::time::{Duration, Instant};

/// CPU counters at one moment.
pub struct CpuSample {
    at: Instant,
    process: Duration,
    /// Machine-wide ticks (all CPUs): busy, and in all. `None` where /proc/stat is unreadable.
    machine_ticks: Option<(u64, u64)>,
}

/// CPU use between two samples.
pub struct CpuUsage {
    /// This process's user and system time, in microseconds.
    pub process_us: u64,
    /// This process's CPU time over the wall time: 1.0 is one core kept busy.
    pub process_cores: f64,
    /// Share of every CPU of the machine that was busy (user, system, interrupts; not idle,
    /// I/O wait or time taken by the hypervisor), in percent.
    pub machine_busy_percent: Option<f64>,
}

impl CpuSample {
    pub fn take() -> Self {
        Self {
            at: Instant::now(),
            process: process_cpu_time(),
            machine_ticks: machine_ticks(),
        }
    }

    /// What was used from `earlier` until this sample.
    pub fn since(&self, earlier: &CpuSample) -> CpuUsage {
        let process = self.process.saturating_sub(earlier.process);
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        let machine_busy_percent = match (earlier.machine_ticks, self.machine_ticks) {
            (Some((busy_before, total_before)), Some((busy_after, total_after)))
                if total_after > total_before =>
            {
                Some(
                    100.0 * busy_after.saturating_sub(busy_before) as f64
                        / (total_after - total_before) as f64,
                )
            }
            _ => None,
        };
        CpuUsage {
            process_us: process.as_micros() as u64,
            process_cores: if wall > 0.0 {
                process.as_secs_f64() / wall
            } else {
                0.0
            },
            machine_busy_percent,
        }
    }
}

/// User plus system time of every thread of this process so far.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes only into the struct it is given, which is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// (busy, total) ticks over all CPUs since boot, from the first line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

/// Parses `cpu user nice system idle iowait irq softirq steal ...`: busy is user, nice,
/// system, irq and softirq; idle, iowait and steal (time the hypervisor gave to others) count
/// only in the total. Guest time is already inside user and nice.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some((busy, busy + idle + iowait + steal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_splits_into_busy_and_total_ticks() {
        let line = "cpu  100 5 50 800 20 3 2 10 0 0";
        assert_eq!(parse_cpu_line(line), Some((160, 990)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_cpu_line("cpu 1 2 3"), None);
        assert_eq!(parse_cpu_line("cpu 1 2 x 4 5 6 7 8"), None);
    }

    /// CPU time of the calling thread, read from a clock independent of getrusage.
    fn thread_cpu_time() -> Duration {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only into the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
        Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
    }

    #[test]
    fn cpu_spent_by_a_thread_shows_as_process_cpu() {
        let before = CpuSample::take();
        let thread_before = thread_cpu_time();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut spins = 0u64;
        while thread_cpu_time() - thread_before < Duration::from_millis(30)
            && Instant::now() < deadline
        {
            spins = std::hint::black_box(spins + 1);
        }
        let spent = thread_cpu_time() - thread_before;
        let usage = CpuSample::take().since(&before);
        assert!(spent >= Duration::from_millis(30), "spun only {spent:?}");
        // getrusage counts in microseconds and may trail the thread clock by a tick.
        assert!(
            usage.process_us + 10_000 >= spent.as_micros() as u64,
            "process {} us, thread {spent:?}",
            usage.process_us
        );
        assert!(usage.process_cores > 0.0);
        if let Some(busy) = usage.machine_busy_percent {
            assert!((0.0..=100.0).contains(&busy), "{busy}");
        }
    }
}
