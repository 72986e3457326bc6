//! Numbers as decimal text, written without `core::fmt`.
//!
//! Every tick writes the texts of the values that changed (`52.10V`, `55.0`), the bank's cell
//! spread rounded to millivolts, and the names of the extreme cells. Through `format!` each
//! goes through the formatting machinery and its float algorithms, some kilobytes of code that
//! a tick, waking from a second's sleep, fetches cold every time. The functions here write the
//! same texts with a few hundred bytes of code: exact integer arithmetic for fixed decimals,
//! `ryu` for the shortest digits, [`push_digits`] for integers (also the listing's). Numbers
//! they do not cover (fixed decimals beyond [`MAX_DECIMALS`] or of magnitudes from 2^63) still
//! go through `core::fmt`, with the same result.

use std::fmt::Write as _;

/// The most decimals [`push_fixed`] writes by integer arithmetic.
pub const MAX_DECIMALS: usize = 9;

/// Appends `v` with `decimals` decimals, as `format!("{v:.decimals$}")` writes it: the exact
/// binary value rounded half to even (`0.125` → `0.12`, `1.005` → `1.00`, as `1.005` is
/// 1.00499… in binary), a minus sign on every negative number, also those that round to zero
/// (`-0.001` → `-0.00`), and `NaN`, `inf`, `-inf` for the non-finite.
pub fn push_fixed(out: &mut String, v: f64, decimals: usize) {
    match scaled(v, decimals) {
        Some(q) => {
            if v.is_sign_negative() {
                out.push('-');
            }
            let unit = POWERS[decimals];
            push_digits(out, q / unit, 1);
            if decimals > 0 {
                out.push('.');
                push_digits(out, q % unit, decimals);
            }
        }
        None => {
            let _ = write!(out, "{v:.decimals$}");
        }
    }
}

/// `x` rounded to `decimals` decimals as Python's `round(x, decimals)` does: the nearest
/// `f64` to the exact binary value rounded half to even (`round(0.0125, 3)` is `0.013`,
/// `0.0125` being 0.01250000000000000069… in binary). `x` itself where that is not exact here
/// (non-finite, more than [`MAX_DECIMALS`] decimals, |x|·10^decimals from 2^53).
pub fn round_to(x: f64, decimals: usize) -> f64 {
    match scaled(x, decimals) {
        // `q` < 2^63 and 10^decimals are exact doubles only up to 2^53; `q / 10^d` in f64 is
        // then one correctly rounded division, the nearest double to the decimal.
        Some(q) if q < 1 << 53 => {
            let magnitude = q as f64 / POWERS[decimals] as f64;
            if x.is_sign_negative() {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => x,
    }
}

const POWERS: [u64; MAX_DECIMALS + 1] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// |v|·10^decimals rounded half to even, exactly, where it fits in a `u64` below 2^63.
fn scaled(v: f64, decimals: usize) -> Option<u64> {
    if !v.is_finite() || decimals > MAX_DECIMALS {
        return None;
    }
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    // |v| = mantissa · 2^exponent.
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | 1 << 52, biased - 1075)
    };
    // < 2^53 · 10^9 < 2^83.
    let n = u128::from(mantissa) * u128::from(POWERS[decimals]);
    let q = if exponent >= 0 {
        if exponent > 40 {
            return None;
        }
        n << exponent
    } else {
        let shift = exponent.unsigned_abs();
        if shift >= 128 {
            // n < 2^83 ≤ half of 2^shift: below half a unit, rounds to zero.
            0
        } else {
            let q = n >> shift;
            let rest = n - (q << shift);
            let half = 1u128 << (shift - 1);
            if rest > half || (rest == half && q & 1 == 1) {
                q + 1
            } else {
                q
            }
        }
    };
    u64::try_from(q).ok().filter(|q| *q < 1 << 63)
}

/// Appends `n` in decimal, zero-padded to `width` digits (`push_digits(out, 5, 2)` writes
/// `05`; nothing for 0 at width 0).
pub fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// The shortest decimal digits that read back as a finite `f64`: `digits` (no leading or
/// trailing zero; `0` for zero) times 10^`exponent` in scientific form (`1.2345e-5` has digits
/// `12345` and exponent `-5`).
pub struct Shortest {
    bytes: [u8; 17],
    len: usize,
    /// Whether the number is negative (also `-0.0`).
    pub negative: bool,
    /// The power of ten of the first digit.
    pub exponent: i32,
}

impl Shortest {
    /// The shortest digits of `v`, which must be finite (`None` otherwise).
    pub fn of(v: f64) -> Option<Self> {
        if !v.is_finite() {
            return None;
        }
        let mut buffer = ryu::Buffer::new();
        // `-1.2345e-7`, `0.000123`, `1234.5`, `1e16`, `0.0`: a mantissa with or without a
        // point, and an exponent or none.
        let text = buffer.format_finite(v);
        let (mantissa, power) = text.split_once('e').unwrap_or((text, "0"));
        let power: i32 = power.parse().ok()?;
        let mut shortest = Shortest {
            bytes: [b'0'; 17],
            len: 0,
            negative: v.is_sign_negative(),
            exponent: 0,
        };
        // Digits before the point, less the leading zeros dropped.
        let mut before_point: i32 = 0;
        let mut seen_point = false;
        for c in mantissa.bytes() {
            match c {
                b'.' => seen_point = true,
                b'0'..=b'9' => {
                    if shortest.len == 0 && c == b'0' {
                        // A leading zero: it moves the point, not the digits.
                        if seen_point {
                            before_point -= 1;
                        }
                        continue;
                    }
                    *shortest.bytes.get_mut(shortest.len)? = c;
                    shortest.len += 1;
                    if !seen_point {
                        before_point += 1;
                    }
                }
                _ => {}
            }
        }
        while shortest.len > 1 && shortest.bytes[shortest.len - 1] == b'0' {
            shortest.len -= 1;
        }
        if shortest.len == 0 {
            shortest.len = 1; // zero: one `0`, exponent 0
        } else {
            shortest.exponent = before_point - 1 + power;
        }
        Some(shortest)
    }

    /// The digits, as ASCII.
    pub fn digits(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("0")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed sequence of bit patterns (xorshift), for numbers of every size.
    fn patterns(count: usize) -> impl Iterator<Item = u64> {
        let mut bits = 0x2545_f491_4f6c_dd1d_u64;
        (0..count).map(move |_| {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            bits
        })
    }

    fn fixed(v: f64, decimals: usize) -> String {
        let mut out = String::new();
        push_fixed(&mut out, v, decimals);
        out
    }

    #[test]
    fn fixed_decimals_are_written_as_core_fmt_writes_them() {
        // Ties, signs and zeros, the ends of the range, the non-finite.
        let ties = [
            0.25, 0.35, 2.5, 3.5, -2.5, 0.125, 0.375, 1.005, 9.995, 99.5, 999_999.5,
        ];
        let signs = [0.0, -0.0, -0.001, -0.4, 0.5, 52.1, -0.125];
        let ends = [1e-300, 5e-324, 1e15, 9.2e18, 1e19, 1e300, f64::MAX];
        let odd = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let mut numbers: Vec<f64> = [&ties[..], &signs, &ends, &odd].concat();
        // Halves at every decimal: k/2^n, the values where a tie is exact.
        for n in 1..=12 {
            for k in 0..64 {
                numbers.push(f64::from(k) / f64::from(1u32 << n));
                numbers.push(-(f64::from(k) + 1000.0) / f64::from(1u32 << n));
            }
        }
        for bits in patterns(25_000) {
            let raw = f64::from_bits(bits);
            numbers.push(raw);
            // Magnitudes a battery has: volts, amperes, watts.
            numbers.push((bits >> 11) as f64 / (1u64 << 53) as f64 * 2000.0 - 1000.0);
            numbers.push((bits % 100_000) as f64 / 1000.0);
        }
        for v in numbers {
            for decimals in 0..=MAX_DECIMALS + 2 {
                assert_eq!(
                    fixed(v, decimals),
                    format!("{v:.decimals$}"),
                    "{v:e} .{decimals}"
                );
            }
        }
    }

    #[test]
    fn round_to_is_the_nearest_double_to_the_rounded_decimal() {
        assert_eq!(round_to(3.4500000001 - 3.3, 3), 0.15);
        assert_eq!(round_to(0.0125, 3), 0.013);
        assert_eq!(round_to(0.0005, 3), 0.001); // 0.0005000000000000000104… in binary
        assert_eq!(round_to(0.0015, 3), 0.002); // 0.0015000000000000000312…
        assert_eq!(round_to(0.0045, 3), 0.004); // 0.0044999999999999996…
        assert_eq!(round_to(2.5, 0), 2.0);
        assert!(round_to(-0.0004, 3) == 0.0 && round_to(-0.0004, 3).is_sign_negative());
        assert!(round_to(f64::NAN, 3).is_nan());
        assert_eq!(round_to(1e300, 3), 1e300);
        // Against the text route: the correctly rounded text, read back.
        for bits in patterns(25_000) {
            let v = (bits >> 11) as f64 / (1u64 << 53) as f64 * 20.0 - 10.0;
            for decimals in 0..=6 {
                let by_text: f64 = format!("{v:.decimals$}").parse().unwrap();
                assert_eq!(round_to(v, decimals).to_bits(), by_text.to_bits(), "{v:e}");
            }
        }
    }

    /// Whether `ours` are the digits `{:e}` gives (`theirs`), or, where the exact value lies
    /// halfway between two shortest candidates, the even one of the two, as Python's repr
    /// takes it (`{:e}` may take either then).
    pub(crate) fn same_digits_or_even_tie(ours: &str, theirs: &str) -> bool {
        if ours == theirs {
            return true;
        }
        // Trailing zeros are dropped: `…970` is `…97`.
        let mut padded = ours.to_string();
        while padded.len() < theirs.len() {
            padded.push('0');
        }
        let (Some(a), Some(b)) = (padded.parse::<u64>().ok(), theirs.parse::<u64>().ok()) else {
            return false;
        };
        padded.len() == theirs.len() && a.abs_diff(b) == 1 && a % 2 == 0
    }

    #[test]
    fn shortest_digits_are_pythons() {
        assert!(Shortest::of(f64::NAN).is_none());
        for (v, digits, exponent) in [
            (0.0, "0", 0),
            (-0.0, "0", 0),
            (55.0, "55", 1),
            (0.1, "1", -1),
            (1.5e-5, "15", -5),
            (1e16, "1", 16),
            (123456.789, "123456789", 5),
            (5e-324, "5", -324),
            // Exactly -1149636667324797.25: CPython 3.11's repr ends in 2 (`{:e}` in 3).
            (-1149636667324797.2, "11496366673247972", 15),
        ] {
            let s = Shortest::of(v).unwrap();
            assert_eq!((s.digits(), s.exponent), (digits, exponent), "{v:e}");
            assert_eq!(s.negative, v.is_sign_negative());
        }
        for bits in patterns(200_000) {
            let v = f64::from_bits(bits);
            let Some(s) = Shortest::of(v) else {
                assert!(!v.is_finite());
                continue;
            };
            // `{:e}` is `-d.ddde-x`: as many digits, and the same power.
            let sci = format!("{v:e}");
            let (mantissa, power) = sci.split_once('e').unwrap();
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            assert!(
                same_digits_or_even_tie(s.digits(), &digits),
                "{} for {sci}",
                s.digits()
            );
            assert_eq!(s.exponent, power.parse::<i32>().unwrap(), "{sci}");
            assert_eq!(s.negative, v.is_sign_negative(), "{sci}");
        }
    }
}
