//! Piecewise-linear curves (cell voltage → current factor).

/// Looks `x` up in the curve through the points `(xs[i], ys[i])`.
///
/// Below the first point the first factor holds, above the last the last. Inside, the first
/// segment whose upper end is ≥ `x` is used, and the arithmetic is done in the order
/// `y0 + (y1 - y0) / (x1 - x0) * (x - x0)`, so results match the program this replaces to the
/// last bit. Returns NaN for a NaN `x` or an empty curve; `xs` and `ys` must have the same
/// length (checked when the config is read).
pub fn interpolate(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    let (Some(&x_first), Some(&x_last)) = (xs.first(), xs.last()) else {
        return f64::NAN;
    };
    if x <= x_first {
        return ys[0];
    }
    if x >= x_last {
        return ys[ys.len() - 1];
    }
    for i in 0..xs.len() - 1 {
        if x <= xs[i + 1] {
            return ys[i] + (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) * (x - xs[i]);
        }
    }
    f64::NAN
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    #[test]
    fn clamps_outside_and_interpolates_inside() {
        let xs = [1.0, 2.0, 3.0];
        let ys = [0.0, 1.0, 0.5];
        assert_eq!(interpolate(&xs, &ys, 0.5), 0.0);
        assert_eq!(interpolate(&xs, &ys, 3.5), 0.5);
        assert_eq!(interpolate(&xs, &ys, 1.5), 0.5);
        assert_eq!(interpolate(&xs, &ys, 2.5), 0.75);
        assert!(interpolate(&xs, &ys, f64::NAN).is_nan());
        assert!(interpolate(&[], &[], 1.0).is_nan());
    }
}
