//! The old program's state files, into our [`State`].
//!
//! 3.x writes `charge` (the counter in Ah, `%.3f`) and `last_balancing` (the day of the year of
//! the last balancing, 1–366); 4.x renamed them `storedvalue_charge` and
//! `storedvalue_last_balancing` and ships a charge of `-1`, meaning "start from the BMSs' SoC".
//! Where both names are present the 4.x one is taken: 4.x writes only that one.

use std::path::Path;

use plugin_api::LocalDate;

use super::map::Row;
use super::ImportError;
use aggregator_core::state::{State, StrategyState};

/// The counter file names, 4.x first.
const CHARGE_FILES: [&str; 2] = ["storedvalue_charge", "charge"];
/// The balancing day file names, 4.x first.
const BALANCING_FILES: [&str; 2] = ["storedvalue_last_balancing", "last_balancing"];

/// The strategy whose state holds the last balancing date.
const BALANCING_STRATEGY: &str = "lfp-balancing";

/// Reads the state files in `dir` for a config whose strategy is `strategy`; `today` dates the
/// day of the year.
pub fn read(
    dir: &Path,
    strategy: &str,
    today: LocalDate,
) -> Result<(State, Vec<Row>), ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::file(
            dir,
            "is not a folder (--state-from wants the folder of the old state files)",
        ));
    }
    let mut rows = Vec::new();
    let mut state = State::default();

    if let Some((name, text)) = first_present(dir, &CHARGE_FILES, &mut rows)? {
        let file = dir.join(name);
        let first = text.lines().next().unwrap_or("").trim();
        let charge: f64 = first
            .parse()
            .ok()
            .filter(|c: &f64| c.is_finite())
            .ok_or_else(|| ImportError::at(&file, 1, format!("`{first}` is not a charge in Ah")))?;
        if charge < 0.0 {
            rows.push(Row::none(
                format!("{name} = {first}"),
                "a negative charge asks for a start from the BMSs' SoC: the counter starts \
                 from the first complete bank, as on a first start",
            ));
        } else {
            state.charge_ah = Some(charge);
            rows.push(Row::became(
                format!("{name} = {first}"),
                vec![("charge_ah".into(), super::python_float(charge))],
            ));
        }
    }

    if let Some((name, text)) = first_present(dir, &BALANCING_FILES, &mut rows)? {
        let file = dir.join(name);
        let first = text.lines().next().unwrap_or("").trim();
        let day: u16 = first.parse().ok().filter(|d| *d <= 366).ok_or_else(|| {
            ImportError::at(
                &file,
                1,
                format!("`{first}` is not a day of the year (1 to 366)"),
            )
        })?;
        let old = format!("{name} = {first}");
        if strategy != BALANCING_STRATEGY {
            rows.push(Row::none(
                old,
                format!("only the {BALANCING_STRATEGY} strategy keeps a balancing date; this config uses {strategy}"),
            ));
        } else {
            let date = (day > 0).then(|| latest_day_of_year(day, today));
            let text = date.map_or("null".to_string(), |d| format!("\"{d}\""));
            // The lfp-balancing plugin's state (its state.rs); every other part starts afresh,
            // as the old program's did at every start.
            let json = format!(
                "{{\"last_balancing\":{text},\"phase\":\"normal\",\"feed_in\":\"untouched\",\
                 \"discharge_latched\":false,\"dynamic_cvl\":false}}"
            );
            state.strategy = Some(StrategyState {
                plugin: BALANCING_STRATEGY.into(),
                state: json,
            });
            let shown = match date {
                Some(d) => format!("{d} (the latest day {day} of a year up to today)"),
                None => "none (0: balancing is due)".into(),
            };
            rows.push(Row::became(
                old,
                vec![(
                    format!("strategy {BALANCING_STRATEGY} last_balancing"),
                    shown,
                )],
            ));
        }
    }
    Ok((state, rows))
}

/// The first of `names` present in `dir`, with its text; the others present are reported as
/// left aside.
fn first_present(
    dir: &Path,
    names: &[&'static str],
    rows: &mut Vec<Row>,
) -> Result<Option<(&'static str, String)>, ImportError> {
    let mut found: Option<(&'static str, String)> = None;
    for name in names {
        let file = dir.join(name);
        match std::fs::read_to_string(&file) {
            Ok(text) => match &found {
                Some((taken, _)) => rows.push(Row::none(
                    format!("{name} (file)"),
                    format!("{taken} is the 4.x file and was taken instead"),
                )),
                None => found = Some((name, text)),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(ImportError::io(&file, "cannot read", err)),
        }
    }
    if found.is_none() {
        rows.push(Row::none(
            format!("{} (file)", names.join(" / ")),
            "not found: the daemon starts this part afresh",
        ));
    }
    Ok(found)
}

/// The latest date up to `today` that is day `day` of its year (day 366 of a year without
/// it is its last day).
fn latest_day_of_year(day: u16, today: LocalDate) -> LocalDate {
    let in_year = |year: i32| {
        let first = LocalDate::new(year, 1, 1).unwrap_or(today);
        let last = LocalDate::new(year, 12, 31).unwrap_or(today);
        first.add_days(i64::from(day) - 1).min(last)
    };
    let this_year = in_year(today.year);
    if this_year <= today {
        this_year
    } else {
        in_year(today.year - 1)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
mod tests {
    use super::*;

    fn date(y: i32, m: u8, d: u8) -> LocalDate {
        LocalDate::new(y, m, d).unwrap()
    }

    #[test]
    fn a_day_of_the_year_is_the_latest_such_day_up_to_today() {
        let today = date(2026, 12, 3); // day 337
        assert_eq!(latest_day_of_year(337, today), today);
        assert_eq!(latest_day_of_year(1, today), date(2026, 1, 1));
        assert_eq!(latest_day_of_year(359, today), date(2025, 12, 25));
        assert_eq!(latest_day_of_year(366, today), date(2025, 12, 31));
        assert_eq!(latest_day_of_year(60, date(2028, 3, 1)), date(2028, 2, 29));
    }

    #[test]
    fn the_4x_names_win_and_the_others_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("charge"), "100.000").unwrap();
        std::fs::write(dir.path().join("storedvalue_charge"), "250.500").unwrap();
        let (state, rows) = read(dir.path(), "lfp-balancing", date(2026, 12, 3)).unwrap();
        assert_eq!(state.charge_ah, Some(250.5));
        assert_eq!(state.strategy, None);
        let text: Vec<String> = rows.iter().map(Row::line).collect();
        assert!(
            text.iter().any(|l| l.starts_with("charge (file)")
                && l.contains("storedvalue_charge is the 4.x file")),
            "{text:?}"
        );
        assert!(text.iter().any(|l| l.contains("not found")), "{text:?}");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("charge"), "full\n").unwrap();
        let e = read(dir.path(), "lfp-balancing", date(2026, 12, 3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:1: `full` is not a charge in Ah",
                dir.path().join("charge").display()
            )
        );
        std::fs::write(dir.path().join("charge"), "1.0").unwrap();
        std::fs::write(dir.path().join("last_balancing"), "400").unwrap();
        let e = read(dir.path(), "lfp-balancing", date(2026, 12, 3)).unwrap_err();
        assert!(e.message.contains("not a day of the year"), "{e}");
    }
}
