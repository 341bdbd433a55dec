//! A fast path for the timestamps of the contract.
//!
//! Nearly every `start` and `version` has the shape `YYYY-MM-DDTHH:MM:SS`, an
//! optional fraction, and `Z` or `±HH:MM`. [`parse_micros`] reads exactly that shape
//! without allocating; anything else (lowercase `t`/`z`, a space separator, leap
//! seconds, unusual years, invalid text) goes to chrono's RFC 3339 parser, which
//! decides. Both give the same instant for every input the fast path accepts (a
//! property test compares them).

use chrono::{DateTime, FixedOffset};

/// Microseconds since the Unix epoch of an RFC 3339 timestamp with `Z` or an
/// offset, or `None` if it is not one.
pub fn parse_micros(text: &str) -> Option<i64> {
    fast(text.as_bytes()).or_else(|| {
        DateTime::<FixedOffset>::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_micros())
    })
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The common shape only; `None` means "ask chrono", not "invalid".
fn fast(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1900..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let nanos = digits(&frac[..n])? * 10i64.pow(9 - n as u32);
        micros = nanos / 1000;
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono(text: &str) -> Option<i64> {
        DateTime::<FixedOffset>::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_micros())
    }

    #[test]
    fn known_instants() {
        assert_eq!(fast(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            fast(b"2026-03-29T03:00:00+02:00"),
            Some(1_774_746_000 * 1_000_000)
        );
        assert_eq!(
            fast(b"2026-10-25T02:00:00.123456789+01:00"),
            chrono("2026-10-25T02:00:00.123456789+01:00")
        );
        assert_eq!(
            fast(b"2024-02-29T00:00:00Z"),
            chrono("2024-02-29T00:00:00Z")
        );
        // Not the common shape: chrono decides.
        for text in [
            "2026-03-29t01:00:00z",
            "2026-03-29 01:00:00Z",
            "2016-12-31T23:59:60Z",
            "2026-03-29T01:00:00",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-03-29T01:00:00+0200",
        ] {
            assert_eq!(fast(text.as_bytes()), None, "{text}");
            assert_eq!(parse_micros(text), chrono(text), "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// Wherever the fast path gives an answer, chrono gives the same one, and
        /// `parse_micros` always agrees with chrono.
        #[test]
        fn agrees_with_chrono(
            y in 1890i64..10000, mo in 0i64..14, d in 0i64..33, h in 0i64..25,
            mi in 0i64..61, s in 0i64..61, frac in proptest::option::of("[0-9]{0,11}"),
            off in prop_oneof![Just("Z".to_owned()), "[+-][0-2][0-9]:[0-6][0-9]", "[zZ+-]?[0-9:]{0,6}"],
            sep in prop_oneof![Just('T'), Just('t'), Just(' ')],
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}");
            if let Some(v) = fast(text.as_bytes()) {
                prop_assert_eq!(Some(v), chrono(&text), "{}", text);
            }
            prop_assert_eq!(parse_micros(&text), chrono(&text), "{}", text);
        }
    }
}
