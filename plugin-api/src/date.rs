//! Calendar dates as plugins see them: the local date of the tick.

use abi_stable::StableAbi;

/// A day of the proleptic Gregorian calendar in the device's local time zone.
///
/// The host fills it from the wall clock each tick. Strategies that count days (balancing every
/// N days) compare dates with [`LocalDate::days_since`], which is right across year ends and
/// leap days, unlike a day-of-year difference.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalDate {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1 = January … 12 = December.
    pub month: u8,
    /// Day of the month, 1 … 31.
    pub day: u8,
}

impl LocalDate {
    /// A date from its parts; `None` when the day does not exist (30 February, month 13).
    pub fn new(year: i32, month: u8, day: u8) -> Option<Self> {
        let date = Self { year, month, day };
        ((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)).then_some(date)
    }

    /// Days since 1970-01-01 (negative before), the civil-from-days inverse.
    pub fn days_since_epoch(&self) -> i64 {
        // Howard Hinnant's days_from_civil: shift the year to start in March so that the leap
        // day is the last day of the shifted year.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Self { year, month, day }
    }

    /// Whole days from `earlier` to `self` (negative if `earlier` is later).
    pub fn days_since(&self, earlier: LocalDate) -> i64 {
        self.days_since_epoch() - earlier.days_since_epoch()
    }

    /// The date `days` later (or earlier, if negative).
    pub fn add_days(&self, days: i64) -> Self {
        Self::from_days_since_epoch(self.days_since_epoch() + days)
    }
}

impl std::fmt::Display for LocalDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for LocalDate {
    type Err = String;

    /// Parses `YYYY-MM-DD`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a date of the form YYYY-MM-DD");
        let mut parts = text.trim().splitn(3, '-');
        let year = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let month = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let day = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Self::new(year, month, day).ok_or_else(bad)
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> LocalDate {
        text.parse().unwrap()
    }

    #[test]
    fn epoch_is_day_zero() {
        assert_eq!(date("1970-01-01").days_since_epoch(), 0);
        assert_eq!(date("2000-03-01").days_since_epoch(), 11_017);
    }

    #[test]
    fn counts_across_year_end_and_leap_day() {
        assert_eq!(date("2025-01-01").days_since(date("2024-12-31")), 1);
        assert_eq!(date("2024-03-01").days_since(date("2024-02-28")), 2);
        assert_eq!(date("2023-03-01").days_since(date("2023-02-28")), 1);
        assert_eq!(date("2027-01-05").days_since(date("2025-12-20")), 381);
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        let start = date("1900-01-01").days_since_epoch();
        for days in start..start + 146_097 {
            let d = LocalDate::from_days_since_epoch(days);
            assert_eq!(d.days_since_epoch(), days);
            assert_eq!(LocalDate::new(d.year, d.month, d.day), Some(d));
        }
    }

    #[test]
    fn rejects_days_that_do_not_exist() {
        assert!(LocalDate::new(2023, 2, 29).is_none());
        assert!(LocalDate::new(2024, 2, 29).is_some());
        assert!(LocalDate::new(1900, 2, 29).is_none());
        assert!(LocalDate::new(2026, 13, 1).is_none());
        assert!("2026-04-31".parse::<LocalDate>().is_err());
        assert!("yesterday".parse::<LocalDate>().is_err());
    }
}
