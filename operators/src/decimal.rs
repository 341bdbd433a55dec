//! Exact decimal parsing of JSON numbers into `Decimal128(18, 3)`.
//!
//! Values are parsed from the number's text, never through `f64`, so `0.1 + 0.2` sums
//! to exactly `0.300`. More than 3 decimals are rounded half to even (banker's
//! rounding: no bias when many values are summed). Elhub values carry at most 3.
//!
//! Guarantees, for any text (any length, any exponent):
//! - a number that rounds to a value of Decimal(18, 3) is that value: `1e-9223372036854775807`
//!   is `0.000`, `18446744073709551617e-18` is `18.447`;
//! - every other number is [`DecimalError::OutOfRange`]: more than 15 integer digits,
//!   or an exponent that leaves the range (`1e9223372036854775807`), never a wrapped
//!   or truncated value;
//! - the work is one pass over the text, without allocation; nothing overflows.

/// Precision and scale of stored values: up to 999,999,999,999,999.999.
pub const PRECISION: u8 = 18;
pub const SCALE: i8 = 3;
const MAX_UNITS: i128 = 999_999_999_999_999_999;

/// Why a number text is not a storable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a JSON number.
    NotANumber,
    /// Outside Decimal(18, 3) after rounding to 3 decimals.
    OutOfRange,
}

/// The digit runs of a JSON number's text: `[-] int [. frac] [e|E [+|-] exp]`.
struct Parts<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    /// The exponent, saturated at `i64::MAX` in magnitude (beyond any range anyway).
    exp: i64,
}

/// Split a JSON number into its parts; `None` for anything the JSON grammar refuses
/// (a leading zero such as `01` included).
fn split(text: &str) -> Option<Parts<'_>> {
    let b = text.as_bytes();
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let negative = b.first() == Some(&b'-');
    let int_start = usize::from(negative);
    let mut i = digits(int_start);
    let int = &b[int_start..i];
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        frac = &b[i + 1..end];
        if frac.is_empty() {
            return None;
        }
        i = end;
    }
    let mut exp: i64 = 0;
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        let exp_negative = b.get(i) == Some(&b'-');
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        let magnitude = b[i..end].iter().fold(0i64, |e, d| {
            e.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
        exp = if exp_negative { -magnitude } else { magnitude };
        i = end;
    }
    (i == b.len()).then_some(Parts {
        negative,
        int,
        frac,
        exp,
    })
}

/// Parse a JSON number's text into thousandths (scale 3), rounding half to even.
///
/// Negative zero is zero: `-0`, and negative values that round to zero (`-0.0004`,
/// `-0.0005`), are `Ok(0)`, so they are stored as `0.000` rather than refused as
/// negative (there is no negative zero in a decimal column).
///
/// # Errors
/// [`DecimalError::NotANumber`] for text that is not a JSON number,
/// [`DecimalError::OutOfRange`] for numbers that do not round to a value of
/// Decimal(18, 3): more than 15 integer digits, however they are written.
pub fn parse_thousandths(text: &str) -> Result<i128, DecimalError> {
    let parts = split(text).ok_or(DecimalError::NotANumber)?;
    // value = D * 10^exp, D the integer of all digits (integer part, then fraction).
    let digits = || parts.int.iter().chain(parts.frac).map(|d| d - b'0');
    let leading_zeros = digits().take_while(|d| *d == 0).count();
    // Significant digits: 10^(n-1) <= D < 10^n.
    let n = (parts.int.len() + parts.frac.len() - leading_zeros) as i128;
    if n == 0 {
        return Ok(0);
    }
    // In thousandths: units = D * 10^shift. i128 holds every sum below exactly.
    let shift = i128::from(parts.exp) - parts.frac.len() as i128 + i128::from(SCALE);
    // units < 10^(n + shift); from 19 digits on it is at least 10^18 > MAX_UNITS.
    if n + shift > 18 {
        return Err(DecimalError::OutOfRange);
    }
    let mut sig = digits().skip(leading_zeros);
    let units = if shift >= 0 {
        // At most 18 digits and 10^17: fits.
        let d = sig.fold(0i128, |v, d| v * 10 + i128::from(d));
        d * 10i128.pow(shift as u32)
    } else if -shift > n {
        // Below a tenth of a thousandth: rounds to zero.
        0
    } else {
        // Keep n + shift (<= 18) digits, round half to even on the rest.
        let keep = (n + shift) as usize;
        let v = sig
            .by_ref()
            .take(keep)
            .fold(0i128, |v, d| v * 10 + i128::from(d));
        let first_dropped = sig.next().unwrap_or(0);
        let round_up = match first_dropped {
            0..=4 => false,
            6..=9 => true,
            _ => sig.any(|d| d != 0) || v % 2 == 1,
        };
        v + i128::from(round_up)
    };
    if units > MAX_UNITS {
        // 999999999999999.9995 rounds up to 10^15.
        return Err(DecimalError::OutOfRange);
    }
    Ok(if parts.negative { -units } else { units })
}

/// Format thousandths as a decimal string with 3 decimals.
pub fn format_thousandths(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_and_exponent_forms_exactly() {
        assert_eq!(parse_thousandths("1.234"), Ok(1234));
        assert_eq!(parse_thousandths("0"), Ok(0));
        assert_eq!(parse_thousandths("-0.5"), Ok(-500));
        assert_eq!(parse_thousandths("12"), Ok(12000));
        assert_eq!(parse_thousandths("1e3"), Ok(1_000_000));
        assert_eq!(parse_thousandths("1.5E-2"), Ok(15));
        assert_eq!(parse_thousandths("0.1"), Ok(100));
    }

    #[test]
    fn rounds_half_to_even_beyond_three_decimals() {
        assert_eq!(parse_thousandths("0.0005"), Ok(0));
        assert_eq!(parse_thousandths("0.0015"), Ok(2));
        assert_eq!(parse_thousandths("0.0025"), Ok(2));
        assert_eq!(parse_thousandths("0.00251"), Ok(3));
        assert_eq!(parse_thousandths("0.0024999"), Ok(2));
        assert_eq!(parse_thousandths("1.23456"), Ok(1235));
        assert_eq!(parse_thousandths("0.00000001"), Ok(0));
    }

    #[test]
    fn rejects_non_numbers_and_huge_values() {
        for bad in ["", "-", "1.", ".5", "1e", "abc", "\"1\"", "1.2.3", "NaN"] {
            assert_eq!(
                parse_thousandths(bad),
                Err(DecimalError::NotANumber),
                "{bad}"
            );
        }
        assert_eq!(parse_thousandths("1e300"), Err(DecimalError::OutOfRange));
        assert_eq!(
            parse_thousandths("1000000000000000"),
            Err(DecimalError::OutOfRange)
        );
        assert_eq!(
            parse_thousandths("999999999999999.999"),
            Ok(999_999_999_999_999_999)
        );
    }

    /// Regression: the exponent arithmetic overflowed (a panic in debug builds,
    /// `0.000` stored in release builds).
    #[test]
    fn an_exponent_of_i64_max_is_out_of_range_not_zero() {
        assert_eq!(
            parse_thousandths("1e9223372036854775807"),
            Err(DecimalError::OutOfRange)
        );
    }

    #[test]
    fn exponents_of_any_size_never_overflow() {
        for (text, expected) in [
            ("1e-9223372036854775807", Ok(0)),
            ("1e-9223372036854775808", Ok(0)),
            ("1e-99999999999999999999999999", Ok(0)),
            ("0e9223372036854775807", Ok(0)),
            ("0.000e99999999999999999999999", Ok(0)),
            ("18446744073709551617e-18", Ok(18_447)),
            ("18446744073709551617e-3", Err(DecimalError::OutOfRange)),
            ("1E+9223372036854775807", Err(DecimalError::OutOfRange)),
            ("1e18446744073709551616", Err(DecimalError::OutOfRange)),
            ("-1e9223372036854775807", Err(DecimalError::OutOfRange)),
            ("1e14", Ok(100_000_000_000_000_000)),
            ("1e15", Err(DecimalError::OutOfRange)),
            ("1e0000000000000000000000000003", Ok(1_000_000)),
            ("100000000000000000000e-20", Ok(1000)),
        ] {
            assert_eq!(parse_thousandths(text), expected, "{text}");
        }
    }

    #[test]
    fn more_than_15_integer_digits_are_out_of_range_however_written() {
        for text in [
            "1000000000000000",
            "1000000000000000.0",
            "1000000000000000000000",
            "18446744073709551616",
            "0.1e17",
            "100000000000000000000e-5",
            "999999999999999.9995", // rounds up to 10^15
        ] {
            assert_eq!(
                parse_thousandths(text),
                Err(DecimalError::OutOfRange),
                "{text}"
            );
        }
        assert_eq!(
            parse_thousandths("999999999999999.9994999"),
            Ok(999_999_999_999_999_999)
        );
        assert_eq!(
            parse_thousandths("999999999999999999e-3"),
            Ok(999_999_999_999_999_999)
        );
        assert_eq!(
            parse_thousandths("99999999999999999999e-6"),
            Ok(100_000_000_000_000_000)
        );
    }

    /// Decided: there is no negative zero in a decimal column, and a reading that
    /// rounds to zero is not negative; both are stored as `0.000`.
    #[test]
    fn negative_zero_and_negatives_rounding_to_zero_are_zero() {
        for text in ["-0", "-0.0", "-0e5", "-0.0001", "-0.0005", "-0.00049999"] {
            assert_eq!(parse_thousandths(text), Ok(0), "{text}");
        }
        assert_eq!(parse_thousandths("-0.0006"), Ok(-1));
        assert_eq!(parse_thousandths("-0.0015"), Ok(-2));
    }

    #[test]
    fn leading_zeros_are_not_json_numbers() {
        for text in ["01", "-01", "00.5", "00"] {
            assert_eq!(
                parse_thousandths(text),
                Err(DecimalError::NotANumber),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_of_60_kb_are_decided_exactly() {
        let zeros = "0".repeat(60_000);
        let nines = "9".repeat(60_000);
        for (text, expected) in [
            (format!("1{zeros}"), Err(DecimalError::OutOfRange)),
            (format!("1e{nines}"), Err(DecimalError::OutOfRange)),
            (format!("1e-{nines}"), Ok(0)),
            (format!("1{zeros}e-60000"), Ok(1000)),
            (format!("0.{zeros}1"), Ok(0)),
            (format!("1.{zeros}1"), Ok(1000)),
            (format!("0.0005{zeros}1"), Ok(1)),
            (format!("0.{nines}"), Ok(1000)),
        ] {
            assert_eq!(parse_thousandths(&text), expected, "{}...", &text[..20]);
        }
    }

    proptest! {
        #[test]
        fn round_trips_three_decimal_values(units in 0i128..999_999_999_999_999_999) {
            prop_assert_eq!(parse_thousandths(&format_thousandths(units)), Ok(units));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Any JSON number: exactly the specification's value (see
        /// [`reference::thousandths`]), or out of range. Never a panic.
        #[test]
        fn any_json_number_is_its_exact_rounded_value_or_out_of_range(
            text in reference::json_number()
        ) {
            prop_assert_eq!(parse_thousandths(&text), reference::thousandths(&text), "{}", text);
        }
    }

    #[test]
    fn the_reference_agrees_with_the_specification_by_hand() {
        for (text, expected) in [
            ("1.2345", Ok(1234)),
            ("1.2355", Ok(1236)),
            ("-2.5e-3", Ok(-2)),
            ("-0.0004", Ok(0)),
            ("18446744073709551617e-18", Ok(18_447)),
            ("999999999999999.9995", Err(DecimalError::OutOfRange)),
            ("1e9223372036854775807", Err(DecimalError::OutOfRange)),
            ("1e-9223372036854775807", Ok(0)),
            ("01", Err(DecimalError::NotANumber)),
        ] {
            assert_eq!(reference::thousandths(text), expected, "{text}");
        }
    }
}

/// An independent reference for tests: the specification applied by hand to the
/// number's text (no code shared with [`parse_thousandths`]), and generated JSON
/// number texts.
#[cfg(test)]
pub(crate) mod reference {
    use super::DecimalError;
    use proptest::prelude::*;

    /// Exponents beyond this are decided without expanding the number: generated
    /// mantissas have far fewer digits, so the value is then above 10^15 or below
    /// 0.0001.
    const EXPANDED: i128 = 1000;

    /// The number written out in positional notation (decimal point moved in the
    /// digit string), its integer part checked for more than 15 digits, its fraction
    /// rounded half to even at 3 decimals, then checked against 999999999999999.999.
    pub(crate) fn thousandths(text: &str) -> Result<i128, DecimalError> {
        use DecimalError::{NotANumber, OutOfRange};
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
            Some((m, e)) => (m, Some(e)),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) if digits(f) => (i, f),
            Some(_) => return Err(NotANumber),
            None => (mantissa, ""),
        };
        if !digits(int) || (int.len() > 1 && int.starts_with('0')) {
            return Err(NotANumber);
        }
        assert!(
            int.len() + frac.len() < (EXPANDED / 2) as usize,
            "mantissa too long for the reference"
        );
        let all = format!("{int}{frac}");
        if all.bytes().all(|b| b == b'0') {
            return Ok(0);
        }
        // The decimal point's position in `all`, counted from the left.
        let point: i128 = match exponent {
            None => int.len() as i128,
            Some(e) => {
                let (minus, magnitude) = match e.strip_prefix(['+', '-']) {
                    Some(m) => (e.starts_with('-'), m),
                    None => (false, e),
                };
                if !digits(magnitude) {
                    return Err(NotANumber);
                }
                let magnitude = magnitude.trim_start_matches('0');
                if magnitude.len() > 6 || magnitude.parse::<i128>().unwrap_or(0) > EXPANDED {
                    return if minus { Ok(0) } else { Err(OutOfRange) };
                }
                let e: i128 = magnitude.parse().unwrap_or(0);
                int.len() as i128 + if minus { -e } else { e }
            }
        };
        let (int_part, frac_part) = if point <= 0 {
            (
                String::new(),
                format!("{}{all}", "0".repeat((-point) as usize)),
            )
        } else if point as usize >= all.len() {
            (
                format!("{all}{}", "0".repeat(point as usize - all.len())),
                String::new(),
            )
        } else {
            let (i, f) = all.split_at(point as usize);
            (i.to_owned(), f.to_owned())
        };
        let int_part = int_part.trim_start_matches('0');
        if int_part.len() > 15 {
            return Err(OutOfRange);
        }
        let padded = format!("{frac_part}000");
        let (kept, dropped) = (&padded[..3], &frac_part[frac_part.len().min(3)..]);
        let mut units: u128 = format!("0{int_part}{kept}")
            .parse()
            .expect("at most 19 digits");
        // Digit strings of one length compare like their numbers.
        let half = format!("5{}", "0".repeat(dropped.len().saturating_sub(1)));
        let up = !dropped.is_empty()
            && match dropped.cmp(half.as_str()) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => units % 2 == 1,
            };
        units += u128::from(up);
        if units > 999_999_999_999_999_999 {
            return Err(OutOfRange);
        }
        let units = units as i128;
        Ok(if negative { -units } else { units })
    }

    /// JSON number texts: every grammar form, integers and fractions of any length,
    /// u64 values, exponents up to i64/u64 limits and beyond, values at the edges of
    /// the range and of rounding.
    pub(crate) fn json_number() -> impl Strategy<Value = String> {
        let int = prop_oneof![
            2 => Just("0".to_owned()),
            4 => "[1-9][0-9]{0,5}",
            4 => "[1-9][0-9]{12,19}",
            2 => any::<u64>().prop_map(|v| v.to_string()),
            1 => "[1-9][0-9]{20,120}",
            1 => "9{14,17}",
        ];
        let frac = prop_oneof![
            3 => "[0-9]{1,4}",
            2 => "[0-9]{5,25}",
            1 => "[0-9]{26,120}",
            1 => "(0{2,40}|9{2,40})5(0{0,5}|0{0,5}1)",
            1 => "[0-9]{2}5",
        ];
        let exponent_magnitude = prop_oneof![
            4 => (0u32..40).prop_map(|e| e.to_string()),
            1 => "0{1,3}[0-9]{1,2}",
            1 => prop::sample::select(vec![
                "9223372036854775807",
                "9223372036854775808",
                "18446744073709551615",
                "18446744073709551616",
                "170141183460469231731687303715884105728",
                "99999999999999999999999999999999999999999999999",
                "1000",
                "999",
            ])
            .prop_map(str::to_owned),
            1 => any::<u64>().prop_map(|v| v.to_string()),
            1 => any::<i64>().prop_map(|v| v.unsigned_abs().to_string()),
        ];
        let exponent = (
            prop::sample::select(vec!["e", "E"]),
            prop::sample::select(vec!["", "+", "-"]),
            exponent_magnitude,
        )
            .prop_map(|(e, sign, m)| format!("{e}{sign}{m}"));
        (
            any::<bool>(),
            int,
            prop::option::of(frac),
            prop::option::weighted(0.5, exponent),
        )
            .prop_map(|(minus, int, frac, exp)| {
                format!(
                    "{}{int}{}{}",
                    if minus { "-" } else { "" },
                    frac.map(|f| format!(".{f}")).unwrap_or_default(),
                    exp.unwrap_or_default()
                )
            })
    }
}
