//! Today's date in the device's time zone, for the strategies that count days (a full balance
//! every N days).
//!
//! The C library answers, as it does for every other program on the device: `tzset` reads `TZ`
//! or `/etc/localtime` (the zone the Venus OS GUI sets) and, in glibc, reads the file again only
//! when it changed; `localtime_r` turns the clock into a date. A time-zone library would read
//! the whole zone database into memory for one date a minute.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plugin_api::LocalDate;

/// How long a looked-up date is used: a minute late at midnight does not matter to a count of
/// days, and the zone is not looked up every tick.
const REUSE_FOR: Duration = Duration::from_secs(60);

/// Today's local date (UTC when the C library cannot tell, which it does only for a clock
/// beyond its calendar).
pub fn today() -> LocalDate {
    thread_local! {
        static LAST: Cell<Option<(Instant, LocalDate)>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if let Some((at, date)) = LAST.get() {
        if now.duration_since(at) < REUSE_FOR {
            return date;
        }
    }
    let seconds = unix_seconds(SystemTime::now());
    let date = local_date(seconds).unwrap_or_else(|| utc_date(seconds));
    LAST.set(Some((now, date)));
    date
}

/// The day this program was built: no right clock reads a date before it.
pub fn build_date() -> LocalDate {
    let day = env!("AGGREGATOR_BUILD_DAY").parse().unwrap_or(0);
    LocalDate::from_days_since_epoch(day)
}

/// How long, in the daemon's running time, the clock must read dates before the last plausible
/// one (none before the build date) without a break before they are taken as right: a clock
/// set ahead by mistake and corrected must not hold its wrong date until that date comes round
/// (docs/tick.md §2). A day, because a device booted without network time is covered for as
/// long as it normally takes to get it; one that runs a day without it has its own clock's date
/// taken, which counts on from there.
pub const CLOCK_SET_BACK_AFTER_S: f64 = 86_400.0;

/// Keeps an implausible clock from reaching the strategies (docs/tick.md §2): a date before the
/// build date, always, or before the last plausible one (a device booted without network time)
/// is replaced by the last plausible date, until the clock has read dates before the last
/// plausible one for [`CLOCK_SET_BACK_AFTER_S`]: then the last plausible date was the wrong one.
#[derive(Clone, Debug)]
pub struct DateGuard {
    floor: LocalDate,
    last_plausible: Option<LocalDate>,
    /// True while the clock reads an implausible date (logged once per episode).
    wrong: bool,
    /// Since when (the tick's monotonic seconds) the clock has read dates between the floor
    /// and the last plausible date without a break.
    behind_since_s: Option<f64>,
}

impl DateGuard {
    /// A guard with this floor (the build date) and the last plausible date of an earlier run.
    pub fn new(floor: LocalDate, last_plausible_day: Option<i64>) -> Self {
        Self {
            floor,
            last_plausible: last_plausible_day.map(LocalDate::from_days_since_epoch),
            wrong: false,
            behind_since_s: None,
        }
    }

    /// The date to hand on for a clock reading `today` at `now_s` (monotonic seconds, the
    /// tick's); logs once when the clock turns implausible and once when it is right again, or
    /// taken as right after [`CLOCK_SET_BACK_AFTER_S`].
    pub fn date(&mut self, today: LocalDate, now_s: f64) -> LocalDate {
        let earliest = self
            .last_plausible
            .map_or(self.floor, |last| last.max(self.floor));
        if today >= earliest {
            if self.wrong {
                tracing::info!("the clock reads {today} again, a plausible date");
            }
            return self.take(today);
        }
        if today < self.floor {
            // No clock is right before the build date, however long it says so.
            self.behind_since_s = None;
        } else {
            let since_s = *self.behind_since_s.get_or_insert(now_s);
            if now_s - since_s >= CLOCK_SET_BACK_AFTER_S {
                tracing::warn!(
                    "the clock has read dates before {earliest} for a day without a break: \
                     {today} is taken as right, and {earliest} as the date of a clock that was \
                     set ahead and corrected"
                );
                return self.take(today);
            }
        }
        if !self.wrong {
            tracing::warn!(
                "the clock reads {today}, before {earliest} (the build date or the last plausible \
                 date): no network time? {earliest} stands in, so no balancing starts and the \
                 month's voltage stays, until the clock is right (a date from the build date on \
                 is taken after a day of such dates)"
            );
            self.wrong = true;
        }
        earliest
    }

    /// Hands on `today` and remembers it as the last plausible date.
    fn take(&mut self, today: LocalDate) -> LocalDate {
        self.wrong = false;
        self.behind_since_s = None;
        self.last_plausible = Some(today);
        today
    }

    /// The last plausible date, to be saved (days since 1970-01-01).
    pub fn last_plausible_day(&self) -> Option<i64> {
        self.last_plausible.map(|d| d.days_since_epoch())
    }
}

/// Seconds since 1970-01-01 UTC, negative before.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

// POSIX, in every C library; the `libc` crate does not declare it.
extern "C" {
    fn tzset();
}

/// The date in the device's zone at `seconds` since the epoch.
pub fn local_date(seconds: i64) -> Option<LocalDate> {
    let time = libc::time_t::try_from(seconds).ok()?;
    // SAFETY: `tm` is plain data that `localtime_r` fills; it reads `time` only. `tzset` and
    // `localtime_r` touch the C library's zone state, which only this function uses in the
    // process (the daemon's one thread calls it), and nothing here changes the environment.
    let tm = unsafe {
        tzset();
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        tm
    };
    LocalDate::new(
        tm.tm_year.checked_add(1900)?,
        u8::try_from(tm.tm_mon + 1).ok()?,
        u8::try_from(tm.tm_mday).ok()?,
    )
}

/// The date in UTC at `seconds` since the epoch.
pub fn utc_date(seconds: i64) -> LocalDate {
    LocalDate::from_days_since_epoch(seconds.div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u8, d: u8) -> LocalDate {
        LocalDate::new(y, m, d).unwrap()
    }

    #[test]
    fn a_clock_before_the_build_date_or_the_last_plausible_date_is_not_handed_on() {
        let built = day(2026, 12, 1);
        let mut guard = DateGuard::new(built, None);
        // Booted without network time: 1970, then 2000.
        assert_eq!(guard.date(day(1970, 1, 1), 0.0), built);
        assert_eq!(guard.date(day(2000, 1, 1), 60.0), built);
        // The clock is set: the real date, remembered.
        assert_eq!(guard.date(day(2027, 3, 5), 120.0), day(2027, 3, 5));
        assert_eq!(
            guard.last_plausible_day(),
            Some(day(2027, 3, 5).days_since_epoch())
        );
        // Back to an older date (a restart before network time): the last plausible one stays.
        let mut after_restart = DateGuard::new(built, guard.last_plausible_day());
        assert_eq!(after_restart.date(day(2026, 12, 2), 0.0), day(2027, 3, 5));
        assert_eq!(after_restart.date(day(2027, 3, 6), 60.0), day(2027, 3, 6));
        assert!(build_date() >= day(2026, 1, 1), "built in {}", build_date());
    }

    /// The lines `run` logs at warning level and above.
    fn warnings(run: impl FnOnce()) -> Vec<String> {
        crate::testing::logged(tracing::Level::WARN, run)
    }

    const HOUR_S: f64 = 3_600.0;

    #[test]
    fn a_clock_set_ahead_and_corrected_is_taken_after_a_day_behind() {
        let built = day(2026, 1, 1);
        let (ahead, right) = (day(2036, 6, 1), day(2026, 6, 1));
        let mut guard = DateGuard::new(built, None);
        let logged = warnings(|| {
            // A typo in the GUI: 2036 for a tick, corrected an hour later.
            assert_eq!(guard.date(ahead, 0.0), ahead);
            for hour in 1..=24 {
                let now_s = f64::from(hour) * HOUR_S;
                assert_eq!(guard.date(right, now_s), ahead, "after {hour} h");
            }
            let corrected_s = HOUR_S;
            let day_behind_s = corrected_s + CLOCK_SET_BACK_AFTER_S;
            assert_eq!(guard.date(right, day_behind_s - 1.0), ahead);
            // A day of running time behind it without a break: the clock's date is taken.
            assert_eq!(guard.date(right, day_behind_s), right);
            assert_eq!(guard.date(right, day_behind_s + 60.0), right);
        });
        assert_eq!(guard.last_plausible_day(), Some(right.days_since_epoch()));
        let taken: Vec<_> = logged
            .iter()
            .filter(|l| l.contains("taken as right"))
            .collect();
        assert_eq!(taken.len(), 1, "{logged:#?}");
        assert!(
            taken[0].contains("2026-06-01") && taken[0].contains("2036-06-01"),
            "{}",
            taken[0]
        );
        // Saved, it holds after a restart: the clock counts on from it, an older date stands in.
        let mut after_restart = DateGuard::new(built, guard.last_plausible_day());
        assert_eq!(after_restart.date(day(2026, 6, 2), 0.0), day(2026, 6, 2));
        assert_eq!(after_restart.date(right, HOUR_S), day(2026, 6, 2));
    }

    #[test]
    fn a_reading_at_the_last_plausible_date_restarts_the_day() {
        let built = day(2026, 1, 1);
        let (ahead, right) = (day(2036, 6, 1), day(2026, 6, 1));
        let mut guard = DateGuard::new(built, Some(ahead.days_since_epoch()));
        assert_eq!(guard.date(right, 0.0), ahead);
        // Twelve hours in, the clock reads the last plausible date again, then the older one.
        assert_eq!(guard.date(ahead, 12.0 * HOUR_S), ahead);
        assert_eq!(guard.date(right, 13.0 * HOUR_S), ahead);
        // A day from the first reading, but not from the break: still the stand-in.
        assert_eq!(guard.date(right, 30.0 * HOUR_S), ahead);
        assert_eq!(
            guard.date(right, 13.0 * HOUR_S + CLOCK_SET_BACK_AFTER_S - 1.0),
            ahead
        );
        assert_eq!(guard.last_plausible_day(), Some(ahead.days_since_epoch()));
        // A day from the break.
        let now_s = 13.0 * HOUR_S + CLOCK_SET_BACK_AFTER_S;
        assert_eq!(guard.date(right, now_s), right);
    }

    #[test]
    fn a_date_before_the_build_date_is_never_taken() {
        let built = day(2026, 12, 1);
        let mut guard = DateGuard::new(built, Some(day(2027, 3, 5).days_since_epoch()));
        let logged = warnings(|| {
            // Ten years of 1970, with and without a last plausible date.
            for hour in 0..=10 * 365 * 24 {
                let now_s = f64::from(hour) * HOUR_S;
                assert_eq!(guard.date(day(1970, 1, 1), now_s), day(2027, 3, 5));
            }
            let mut fresh = DateGuard::new(built, None);
            for hour in 0..=10 * 365 * 24 {
                let now_s = f64::from(hour) * HOUR_S;
                assert_eq!(fresh.date(day(2026, 11, 30), now_s), built);
            }
        });
        assert_eq!(logged.len(), 2, "one line each: {logged:#?}");
        // Readings before the build date break a day behind the last plausible date.
        let mut guard = DateGuard::new(built, Some(day(2027, 3, 5).days_since_epoch()));
        assert_eq!(guard.date(day(2027, 1, 1), 0.0), day(2027, 3, 5));
        assert_eq!(guard.date(day(1970, 1, 1), HOUR_S), day(2027, 3, 5));
        let resumed_s = 2.0 * HOUR_S;
        assert_eq!(guard.date(day(2027, 1, 1), resumed_s), day(2027, 3, 5));
        let day_from_start_s = CLOCK_SET_BACK_AFTER_S + HOUR_S;
        assert_eq!(
            guard.date(day(2027, 1, 1), day_from_start_s),
            day(2027, 3, 5)
        );
        let day_from_resume_s = resumed_s + CLOCK_SET_BACK_AFTER_S;
        assert_eq!(
            guard.date(day(2027, 1, 1), day_from_resume_s),
            day(2027, 1, 1)
        );
    }

    use std::process::Command;

    /// What `date` (coreutils, the same C library and zone) prints for `seconds`.
    fn date_says(seconds: i64, utc: bool) -> String {
        let mut cmd = Command::new("date");
        if utc {
            cmd.arg("-u");
        }
        let out = cmd
            .arg("-d")
            .arg(format!("@{seconds}"))
            .arg("+%Y-%m-%d")
            .output()
            .expect("date runs");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    const MOMENTS: [i64; 7] = [
        0,
        951_782_400,   // 2000-02-29 00:00 UTC: a leap day of a century year
        1_709_251_199, // 2024-02-29 23:59:59 UTC
        NEW_YEARS_EVE,
        1_798_761_600, // 2027-01-01 00:00 UTC
        -86_401,       // 1969-12-30 23:59:59 UTC
        4_102_444_800, // 2100-01-01 00:00 UTC, not a leap year
    ];

    #[test]
    fn the_local_date_is_the_one_date_prints() {
        for seconds in MOMENTS {
            // A C library with a 32-bit `time_t` (armv7's glibc before 2.34) has no date past
            // January 2038: `local_date` has none either, and `today` falls back to UTC.
            if libc::time_t::try_from(seconds).is_err() {
                assert!(local_date(seconds).is_none(), "at {seconds}");
                continue;
            }
            let ours = local_date(seconds).expect("a date").to_string();
            assert_eq!(ours, date_says(seconds, false), "at {seconds}");
        }
    }

    #[test]
    fn the_utc_date_is_the_one_date_prints() {
        for seconds in MOMENTS {
            assert_eq!(
                utc_date(seconds).to_string(),
                date_says(seconds, true),
                "at {seconds}"
            );
        }
    }

    #[test]
    fn today_is_the_date_of_now() {
        let before = local_date(unix_seconds(SystemTime::now())).unwrap();
        let today = today();
        let after = local_date(unix_seconds(SystemTime::now())).unwrap();
        assert!(
            today == before || today == after,
            "{today} not {before}/{after}"
        );
    }

    /// The last second of 2024 in UTC.
    const NEW_YEARS_EVE: i64 = 1_735_689_599;

    #[test]
    fn the_zone_is_the_one_tz_names() {
        // In a child process: the zone is read from the environment, which a test must not
        // change in its own (threaded) process.
        // The test's name as the harness knows it: the module path without the crate.
        let module = module_path!().split_once("::").unwrap().1;
        let test = format!("{module}::print_the_local_date");
        for (tz, expected) in [("JST-9", "2025-01-01"), ("HST10", "2024-12-31")] {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", test.as_str()])
                .args(["--ignored", "--nocapture", "--test-threads=1"])
                .env("TZ", tz)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("local date: {expected}")),
                "TZ={tz}: {text}"
            );
        }
    }

    #[test]
    #[ignore = "run in a child process by the_zone_is_the_one_tz_names"]
    fn print_the_local_date() {
        println!("local date: {}", local_date(NEW_YEARS_EVE).unwrap());
    }

    #[test]
    fn seconds_before_the_epoch_are_negative() {
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(5)), 5);
    }
}
