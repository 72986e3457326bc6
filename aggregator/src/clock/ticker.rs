//! The tick's clock: one wake-up per tick.
//!
//! A `tokio::time::interval` of one second wakes the process twice per tick (its timer wheel
//! wakes at the coarse slot some tens of milliseconds early, then again at the deadline) and
//! re-arms through the runtime's event fd; on a small ARM box, and on virtual machines, each
//! wake-up costs more than the whole tick's work. A periodic `timerfd` fires once per period
//! and is read where it fires, so the process sleeps in a single `epoll_wait` between ticks.
//! Where no timer fd can be made, the interval is the fallback.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Ticks every `period`, the first one at once. Ticks missed while the daemon was busy are
/// not caught up: the next tick comes at the next period boundary (the tick measures its own
/// time step, so nothing is lost).
pub struct Ticker {
    clock: Clock,
    period: Duration,
}

enum Clock {
    TimerFd(AsyncFd<OwnedFd>),
    Interval(tokio::time::Interval),
}

impl Ticker {
    /// A ticker on a timer fd, or on the runtime's timer when the system has none. Must be
    /// called within the runtime.
    pub fn new(period: Duration) -> Ticker {
        // A period of zero would disarm a timer fd and make an interval panic.
        let period = period.max(Duration::from_millis(1));
        let clock = match timer_fd(period) {
            Ok(fd) => Clock::TimerFd(fd),
            Err(err) => {
                tracing::debug!("no timer fd ({err}); ticking on the runtime's timer");
                interval(period)
            }
        };
        Ticker { clock, period }
    }

    /// Whether the ticker runs on a timer fd (else on the runtime's timer).
    #[cfg(test)]
    fn on_timer_fd(&self) -> bool {
        matches!(self.clock, Clock::TimerFd(_))
    }

    /// Waits for the next tick. Cancel-safe: a tick that fires while the future is dropped is
    /// taken by the next call.
    pub async fn tick(&mut self) {
        match &mut self.clock {
            Clock::Interval(interval) => {
                interval.tick().await;
            }
            Clock::TimerFd(fd) => {
                if let Err(err) = expiry(fd).await {
                    // Cannot happen with a timer fd in practice; never spin on it.
                    tracing::warn!("the timer fd failed ({err}); ticking on the runtime's timer");
                    self.clock = interval(self.period);
                }
            }
        }
    }
}

/// Waits for the timer fd's next expiry and takes it.
async fn expiry(fd: &AsyncFd<OwnedFd>) -> std::io::Result<()> {
    loop {
        let mut ready = fd.readable().await?;
        let mut expirations = [0u8; 8];
        match rustix::io::read(ready.get_inner(), &mut expirations) {
            Ok(8) => {
                // Read: not readable until the next expiry, which the runtime sees as a new
                // event (so clearing loses nothing), and the next call sleeps without a read
                // that would only say "not yet".
                ready.clear_ready();
                return Ok(());
            }
            // Not yet due (spurious readiness): wait again.
            Ok(_) | Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// The runtime's interval (first tick at once), the fallback (`period` not zero).
fn interval(period: Duration) -> Clock {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Clock::Interval(interval)
}

/// A non-blocking periodic timer fd on the monotonic clock, first expiry at once (`period`
/// not zero).
fn timer_fd(period: Duration) -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let interval = Timespec {
        tv_sec: i64::try_from(period.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(period.subsec_nanos()),
    };
    // An `it_value` of zero would disarm the timer: 1 ns means "now".
    let first = Timespec {
        tv_sec: 0,
        tv_nsec: 1,
    };
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: interval,
            it_value: first,
        },
    )?;
    // SAFETY: the `OwnedFd` is a valid timer fd, moved into the `AsyncFd`, which owns it and
    // closes it only when dropped (after deregistering it).
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    //! Time enters only as wide margins: a late machine makes no test fail, a wrong ticker does.
    use super::*;
    use crate::testing::runtime;
    use tokio::time::timeout;

    #[test]
    fn first_tick_at_once_on_a_timer_fd() {
        runtime().block_on(async {
            let mut ticker = Ticker::new(Duration::from_secs(60));
            assert!(ticker.on_timer_fd(), "Linux has timer fds");
            timeout(Duration::from_secs(30), ticker.tick())
                .await
                .expect("the first tick comes at once, not after a period");
        });
    }

    #[test]
    fn ticks_come_one_per_period() {
        runtime().block_on(async {
            let period = Duration::from_millis(40);
            let mut ticker = Ticker::new(period);
            let start = std::time::Instant::now();
            for _ in 0..5 {
                ticker.tick().await;
            }
            // Never early: the fifth tick is four periods after the first.
            assert!(start.elapsed() >= period * 4, "{:?}", start.elapsed());
        });
    }

    #[test]
    fn missed_ticks_are_not_caught_up() {
        runtime().block_on(async {
            let period = Duration::from_millis(500);
            let mut ticker = Ticker::new(period);
            ticker.tick().await;
            // Busy for three periods: one tick is owed, not three.
            std::thread::sleep(period * 3 + period / 5);
            timeout(period, ticker.tick())
                .await
                .expect("the owed tick comes at once");
            let next = timeout(period / 4, ticker.tick()).await;
            assert!(next.is_err(), "missed ticks were caught up");
        });
    }

    #[test]
    fn a_dropped_wait_keeps_its_tick() {
        runtime().block_on(async {
            let period = Duration::from_secs(1);
            let mut ticker = Ticker::new(period);
            ticker.tick().await;
            // A wait abandoned (as `select!` does when another branch wins) ...
            let abandoned = timeout(Duration::from_millis(1), ticker.tick()).await;
            assert!(abandoned.is_err());
            // ... while the tick fires: the next wait gets it at once, not a period later.
            std::thread::sleep(period + period / 5);
            timeout(period / 2, ticker.tick())
                .await
                .expect("the tick that fired while nobody waited was lost");
        });
    }
}
