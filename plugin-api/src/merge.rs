//! The arithmetic of the bank merge: how the daemon turns the values of the online and stale
//! batteries into the bank's. The daemon's merge and [`crate::testing`]'s bank builder both
//! call these, so that a plugin's tests see a bank merged as the daemon merges it.

/// Mean of the values; `None` if any is missing or there are none, or if finite but huge
/// values (a BMS may publish 1e308 V) sum to infinity.
pub fn mean_all(mut values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values.try_fold((0.0, 0usize), |(sum, n), v| Some((sum + v?, n + 1)))?;
    (n > 0)
        .then(|| sum / n as f64)
        .filter(|mean| mean.is_finite())
}

/// Mean of the values present; `None` if there are none.
pub fn mean_present(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    mean_all(values.flatten().map(Some))
}

/// Sum of the values; `None` if any is missing.
pub fn sum_all(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values.sum()
}

/// Sum of the counts present. A negative count is no count (only a broken driver sends one):
/// it is left out, never taken off the others'. Saturates: a BMS may publish any integer, and
/// two huge ones must not overflow.
pub fn count_sum(values: impl Iterator<Item = Option<i64>>) -> i64 {
    values
        .flatten()
        .filter(|n| *n >= 0)
        .fold(0, i64::saturating_add)
}

/// Σ value·capacity / Σ capacity over `(value, installed capacity)` pairs, non-finite values
/// counting as missing. With `all_or_nothing`, one missing value or capacity makes the result
/// `None` (time to go); otherwise the batteries without one are left out (SoC).
pub fn weighted(
    values: impl Iterator<Item = (Option<f64>, Option<f64>)>,
    all_or_nothing: bool,
) -> Option<f64> {
    let mut weighted_sum = 0.0;
    let mut weight = 0.0;
    for (value, capacity) in values {
        match (value.filter(|v| v.is_finite()), capacity) {
            (Some(v), Some(cap)) => {
                weighted_sum += v * cap;
                weight += cap;
            }
            _ if all_or_nothing => return None,
            _ => {}
        }
    }
    (weight > 0.0).then(|| weighted_sum / weight)
}

/// Which end [`extreme`] looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The highest value.
    Max,
    /// The lowest value.
    Min,
}

/// The item with the extreme finite value and that value; the first item wins a tie, items
/// without a value or with a non-finite one are left out.
pub fn extreme<T>(items: impl Iterator<Item = (T, Option<f64>)>, pick: Pick) -> Option<(T, f64)> {
    let mut best: Option<(T, f64)> = None;
    for (item, value) in items {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        let better = match &best {
            None => true,
            Some((_, b)) => match pick {
                Pick::Max => v > *b,
                Pick::Min => v < *b,
            },
        };
        if better {
            best = Some((item, v));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_leaves_out_or_refuses_what_is_missing() {
        assert_eq!(mean_all([Some(1.0), Some(2.0)].into_iter()), Some(1.5));
        assert_eq!(mean_all([Some(1.0), None].into_iter()), None);
        assert_eq!(mean_all([Some(1e308), Some(1e308)].into_iter()), None);
        assert_eq!(mean_present([Some(1.0), None].into_iter()), Some(1.0));
        assert_eq!(sum_all([Some(1.0), None].into_iter()), None);
        assert_eq!(count_sum([Some(i64::MAX), Some(1)].into_iter()), i64::MAX);
        // One pack blocking and another's garbage -1: one module blocks, not none.
        assert_eq!(count_sum([Some(1), Some(-1), None].into_iter()), 1);
        assert_eq!(count_sum([Some(i64::MIN)].into_iter()), 0);
        let socs = [(Some(20.0), Some(100.0)), (None, Some(300.0))];
        assert_eq!(weighted(socs.into_iter(), false), Some(20.0));
        assert_eq!(weighted(socs.into_iter(), true), None);
        let cells = [
            ("a", Some(3.3)),
            ("b", Some(3.4)),
            ("c", Some(3.4)),
            ("d", None),
        ];
        assert_eq!(extreme(cells.into_iter(), Pick::Max), Some(("b", 3.4)));
        assert_eq!(extreme(cells.into_iter(), Pick::Min), Some(("a", 3.3)));
        assert_eq!(
            extreme([("x", Some(f64::NAN))].into_iter(), Pick::Max),
            None
        );
    }
}
