//! Exact decimal parsing of JSON numbers into `Decimal128(18, 3)`.
//!
//! Values are parsed from the number's text, never through `f64`, so `0.1 + 0.2` sums
//! to exactly `0.300`. More than 3 decimals are rounded half to even (banker's
//! rounding: no bias when many values are summed). Elhub values carry at most 3.

/// Precision and scale of stored values: up to 999,999,999,999,999.999.
pub const PRECISION: u8 = 18;
pub const SCALE: i8 = 3;
const MAX_UNITS: i128 = 999_999_999_999_999_999;

/// Why a number text is not a storable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a JSON number.
    NotANumber,
    /// Outside Decimal(18, 3).
    OutOfRange,
}

/// Parse a JSON number's text into thousandths (scale 3), rounding half to even.
///
/// # Errors
/// [`DecimalError::NotANumber`] for text that is not a JSON number,
/// [`DecimalError::OutOfRange`] for magnitudes that do not fit Decimal(18, 3).
pub fn parse_thousandths(text: &str) -> Result<i128, DecimalError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = bytes.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    // Collect significant digits and the decimal exponent: value = digits * 10^exp.
    let mut digits: Vec<u8> = Vec::with_capacity(24);
    let mut exp: i64 = 0;
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        digits.push(bytes[i] - b'0');
        i += 1;
    }
    if i == int_start {
        return Err(DecimalError::NotANumber);
    }
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            digits.push(bytes[i] - b'0');
            exp -= 1;
            i += 1;
        }
        if i == frac_start {
            return Err(DecimalError::NotANumber);
        }
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        let mut exp_negative = false;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            exp_negative = bytes[i] == b'-';
            i += 1;
        }
        let exp_start = i;
        let mut e: i64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            e = e
                .saturating_mul(10)
                .saturating_add(i64::from(bytes[i] - b'0'));
            i += 1;
        }
        if i == exp_start {
            return Err(DecimalError::NotANumber);
        }
        exp = if exp_negative {
            exp.saturating_sub(e)
        } else {
            exp.saturating_add(e)
        };
    }
    if i != bytes.len() {
        return Err(DecimalError::NotANumber);
    }
    // Drop leading zeros so the digit count measures magnitude.
    let first = digits.iter().position(|&d| d != 0);
    let Some(first) = first else { return Ok(0) };
    let digits = &digits[first..];
    // Scale to thousandths: value * 1000 = digits * 10^(exp + 3).
    let shift = exp.saturating_add(i64::from(SCALE));
    let units = if shift >= 0 {
        // Integer part only; reject early if it cannot fit.
        if digits.len() as i64 + shift > 18 {
            return Err(DecimalError::OutOfRange);
        }
        let mut v: i128 = 0;
        for &d in digits {
            v = v * 10 + i128::from(d);
        }
        v * 10i128.pow(shift as u32)
    } else {
        let drop = (-shift) as usize;
        if drop > digits.len() {
            // Below a tenth of a unit: rounds to zero.
            0
        } else {
            let keep = digits.len() - drop;
            if keep > 18 {
                return Err(DecimalError::OutOfRange);
            }
            let mut v: i128 = 0;
            for &d in &digits[..keep] {
                v = v * 10 + i128::from(d);
            }
            let rest = &digits[keep..];
            let first_dropped = rest[0];
            let tail_nonzero = rest[1..].iter().any(|&d| d != 0);
            let round_up = match first_dropped {
                0..=4 => false,
                6..=9 => true,
                _ => tail_nonzero || v % 2 == 1,
            };
            if round_up {
                v += 1;
            }
            v
        }
    };
    if units > MAX_UNITS {
        return Err(DecimalError::OutOfRange);
    }
    Ok(if negative { -units } else { units })
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

    proptest! {
        #[test]
        fn round_trips_three_decimal_values(units in 0i128..999_999_999_999_999_999) {
            prop_assert_eq!(parse_thousandths(&format_thousandths(units)), Ok(units));
        }
    }
}
