//! CPU time spent during a transfer by the client, the server and the S3
//! server, read from `/proc`.
//!
//! On a machine with few cores the three share them, so a transfer's wall time
//! depends on everyone's CPU, not only the system under test's: these figures
//! show where the cores went. The client is a child process of the bench (its
//! time is counted once it exits and is reaped, in this process's `cutime` and
//! `cstime`); the node and Garage are processes of their own; the reference
//! server and the embedded S3 server run inside the bench.

use std::fs;
use std::io;
use std::time::Duration;

/// A process whose CPU time is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This process (the reference server, the embedded S3 server).
    Own,
    /// Another process.
    Pid(u32),
}

/// What to measure during a transfer: the server's process and, when it has
/// one that can be read, the S3 server's.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    /// The server under test.
    pub server: Process,
    /// The S3 server behind it (none for the reference server, or an S3
    /// server elsewhere).
    pub s3: Option<Process>,
}

/// CPU counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    children: Duration,
    server: Duration,
    s3: Option<Duration>,
}

/// CPU time (user + system) used during one transfer.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// By the client process.
    pub client: Duration,
    /// By the server under test.
    pub server: Duration,
    /// By the S3 server, when measured.
    pub s3: Option<Duration>,
}

impl CpuUse {
    /// Everyone's CPU time together.
    pub fn total(&self) -> Duration {
        self.client + self.server + self.s3.unwrap_or_default()
    }
}

impl Meter {
    /// The counters now.
    pub fn read(&self) -> io::Result<Reading> {
        Ok(Reading {
            children: children_cpu()?,
            server: process_cpu(self.server)?,
            s3: self.s3.map(process_cpu).transpose()?,
        })
    }
}

impl Reading {
    /// What was used between this reading and `later`.
    pub fn until(&self, later: &Reading) -> CpuUse {
        CpuUse {
            client: later.children.saturating_sub(self.children),
            server: later.server.saturating_sub(self.server),
            s3: match (self.s3, later.s3) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        }
    }
}

/// User + system time of `process`.
fn process_cpu(process: Process) -> io::Result<Duration> {
    let [utime, stime, ..] = stat_times(process)?;
    Ok(ticks(utime + stime))
}

/// User + system time of this process's children that have exited and been
/// waited for.
fn children_cpu() -> io::Result<Duration> {
    let [.., cutime, cstime] = stat_times(Process::Own)?;
    Ok(ticks(cutime + cstime))
}

/// Fields 14 to 17 of `/proc/PID/stat`: utime, stime, cutime, cstime, in clock ticks.
fn stat_times(process: Process) -> io::Result<[u64; 4]> {
    let path = match process {
        Process::Own => "/proc/self/stat".to_owned(),
        Process::Pid(pid) => format!("/proc/{pid}/stat"),
    };
    let stat = fs::read_to_string(&path)?;
    parse_stat_times(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {path}")))
}

/// The four times from the text of a stat file. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`: field 3 is the first after it.
fn parse_stat_times(stat: &str) -> Option<[u64; 4]> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// Clock ticks as a duration.
fn ticks(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / clock_ticks_per_second())
}

/// The unit of the times in `/proc` (`USER_HZ`).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_counted_from_the_end_of_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    170 30 12 8 20 0 4 0 500 1000 200 18446744073709551615";
        assert_eq!(parse_stat_times(stat), Some([170, 30, 12, 8]));
        assert_eq!(parse_stat_times("4242 (cut) S 1 2"), None);
        assert_eq!(parse_stat_times("no parenthesis"), None);
    }

    #[test]
    fn a_busy_child_and_this_process_are_measured() {
        let meter = Meter {
            server: Process::Own,
            s3: Some(Process::Own),
        };
        let before = meter.read().unwrap();
        // A child that burns some CPU, then is waited for.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let used = before.until(&meter.read().unwrap());
        assert!(used.client > Duration::ZERO, "{used:?}");
        assert!(used.server > Duration::ZERO, "{used:?}");
        // Both read this process, a moment apart.
        let s3 = used.s3.expect("the S3 process is measured");
        assert!(s3 > Duration::ZERO, "{used:?}");
        assert_eq!(used.total(), used.client + used.server + s3);
    }
}
