//! Identifier rules: GSRN metering point ids (kept, checked) and Norwegian national
//! identity numbers (never stored, detected so they can be dropped).

/// Why a string is not a GSRN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsrnError {
    /// Not exactly 18 ASCII digits.
    Shape,
    /// The GS1 check digit does not match.
    CheckDigit,
}

/// The GS1 mod-10 check digit of a digit string body (weight 3 on the rightmost
/// digit, then 1, 3, 1 ... going left). `body` must be ASCII digits.
pub fn gs1_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Check an 18-digit GSRN (any GS1 company prefix; the Norwegian prefix is a separate,
/// per-tenant rule).
///
/// # Errors
/// [`GsrnError::Shape`] or [`GsrnError::CheckDigit`].
pub fn check_gsrn(id: &str) -> Result<(), GsrnError> {
    let b = id.as_bytes();
    if b.len() != 18 || !b.iter().all(u8::is_ascii_digit) {
        return Err(GsrnError::Shape);
    }
    if gs1_check_digit(&b[..17]) != b[17] - b'0' {
        return Err(GsrnError::CheckDigit);
    }
    Ok(())
}

/// The kinds of Norwegian national identity number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NationalIdKind {
    /// Fødselsnummer: DDMMYY + individual number + two check digits.
    Fodselsnummer,
    /// D-number: first digit + 4 (day 41-71).
    DNumber,
    /// H-number: third digit + 4 (month 41-52).
    HNumber,
}

impl NationalIdKind {
    /// Stable label (metric label value, flag detail).
    pub fn as_str(self) -> &'static str {
        match self {
            NationalIdKind::Fodselsnummer => "fodselsnummer",
            NationalIdKind::DNumber => "d_number",
            NationalIdKind::HNumber => "h_number",
        }
    }
}

const K1_WEIGHTS: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const K2_WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

fn days_in_month(month: u32, year: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// Classify exactly 11 ASCII digits as a national identity number: both check
/// digits valid (the classic rule or the 2032 rule for the first) and a real
/// calendar date (in the 1900s or 2000s). `None` for anything else.
pub fn national_id(digits: &[u8]) -> Option<NationalIdKind> {
    if digits.len() != 11 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let d: Vec<u32> = digits.iter().map(|b| u32::from(b - b'0')).collect();
    let sum1: u32 = K1_WEIGHTS.iter().zip(&d[..9]).map(|(w, x)| w * x).sum();
    if (sum1 + d[9]) % 11 > 3 {
        return None;
    }
    let sum2: u32 = K2_WEIGHTS.iter().zip(&d[..10]).map(|(w, x)| w * x).sum();
    if !(sum2 + d[10]).is_multiple_of(11) {
        return None;
    }
    let mut day = d[0] * 10 + d[1];
    let mut month = d[2] * 10 + d[3];
    let year = d[4] * 10 + d[5];
    let mut kind = NationalIdKind::Fodselsnummer;
    if day > 40 {
        day -= 40;
        kind = NationalIdKind::DNumber;
    }
    if month > 40 {
        if kind == NationalIdKind::DNumber {
            return None;
        }
        month -= 40;
        kind = NationalIdKind::HNumber;
    }
    let valid_day = |century: u32| day >= 1 && day <= days_in_month(month, century + year);
    (valid_day(1900) || valid_day(2000)).then_some(kind)
}

/// The first national identity number in `text`: a run of exactly 11 ASCII digits,
/// or the 11 digits written `DDMMYY NNNNN`, `DDMMYY-NNNNN`, `DD.MM.YY NNNNN` or
/// `DD.MM.YY-NNNNN`. Every group is a whole digit run: digits inside a longer run
/// (a GSRN, say) are not candidates.
pub fn find_national_id(text: &[u8]) -> Option<NationalIdKind> {
    if text.len() < 11 {
        return None;
    }
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        if let Some(kind) = candidate_at(text, i).and_then(|digits| national_id(&digits)) {
            return Some(kind);
        }
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
    }
    None
}

/// The 11 digits of a candidate whose first digit run starts at `start`.
fn candidate_at(text: &[u8], start: usize) -> Option<[u8; 11]> {
    // The end of a run of exactly `len` digits at `at`.
    let run = |at: usize, len: usize| {
        let end = at + len;
        let digits = text.get(at..end)?;
        (digits.iter().all(u8::is_ascii_digit) && !text.get(end).is_some_and(u8::is_ascii_digit))
            .then_some(end)
    };
    let is = |at: usize, allowed: &[u8]| text.get(at).is_some_and(|b| allowed.contains(b));
    let mut out = [0u8; 11];
    if let Some(end) = run(start, 11) {
        out.copy_from_slice(&text[start..end]);
        return Some(out);
    }
    // The date, as DDMMYY or DD.MM.YY.
    let date_end = match run(start, 6) {
        Some(end) => {
            out[..6].copy_from_slice(&text[start..end]);
            end
        }
        None => {
            let (dd, mm, yy) = (start, start + 3, start + 6);
            run(dd, 2).filter(|&e| is(e, b"."))?;
            run(mm, 2).filter(|&e| is(e, b"."))?;
            let end = run(yy, 2)?;
            for (i, at) in [dd, mm, yy].into_iter().enumerate() {
                out[2 * i..2 * i + 2].copy_from_slice(&text[at..at + 2]);
            }
            end
        }
    };
    if !is(date_end, b" -") {
        return None;
    }
    let end = run(date_end + 1, 5)?;
    out[6..].copy_from_slice(&text[date_end + 1..end]);
    Some(out)
}

/// The national identity number in the text of a JSON number (as sent, or as
/// serde_json or Rust formats the value): 11 digits in it as in
/// [`find_national_id`], or an integer of exactly 10 digits (any sign, a fraction
/// of zeros at most), read as a number that lost its leading 0 on the way.
pub fn find_national_id_in_number(text: &str) -> Option<NationalIdKind> {
    if let Some(kind) = find_national_id(text.as_bytes()) {
        return Some(kind);
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.len() != 10
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b == b'0')
    {
        return None;
    }
    let mut digits = [b'0'; 11];
    digits[1..].copy_from_slice(int.as_bytes());
    national_id(&digits)
}

/// Complete 9 digits (DDMMYY + individual number) into an 11-digit number with
/// classic check digits, if the rule allows one (k = 10 is impossible). For test
/// data: meterline never stores such numbers.
pub fn with_check_digits(nine: &str) -> Option<String> {
    let d: Vec<u32> = nine.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum1: u32 = K1_WEIGHTS.iter().zip(&d).map(|(w, x)| w * x).sum();
    let k1 = (11 - sum1 % 11) % 11;
    if k1 == 10 {
        return None;
    }
    let mut ten = d.clone();
    ten.push(k1);
    let sum2: u32 = K2_WEIGHTS.iter().zip(&ten).map(|(w, x)| w * x).sum();
    let k2 = (11 - sum2 % 11) % 11;
    if k2 == 10 {
        return None;
    }
    Some(format!("{nine}{k1}{k2}"))
}

/// National identity numbers for tests, written out literally with their check
/// digits worked out by hand from the rules (DOMAIN.md section 1), never by this
/// module: k1 weights `3 7 6 1 8 9 4 5 2` over d1..d9 give sum1, k2 weights
/// `5 4 3 2 7 6 5 4 3 2` over d1..d10 give sum2; valid when `(sum1 + k1) % 11` is 0
/// (or 1-3 by the 2032 rule), `(sum2 + k2) % 11 == 0` and the date exists.
#[cfg(test)]
pub(crate) mod vectors {
    use super::NationalIdKind::{self, DNumber, Fodselsnummer, HNumber};

    /// Valid numbers, four of them starting with 0.
    pub(crate) const VALID: [(&str, NationalIdKind); 8] = [
        // 01.01.70 #123: sum1 = 0+7+0+1+56+0+4+10+6 = 84, 84 % 11 = 7, k1 = 4;
        // sum2 = 0+4+0+2+49+0+5+8+9+8 = 85, 85 % 11 = 8, k2 = 3.
        ("01017012343", Fodselsnummer),
        // 05.03.91 #321: sum1 = 0+35+0+3+72+9+12+10+2 = 143 = 13*11, k1 = 0;
        // sum2 = 0+20+0+6+63+6+15+8+3+0 = 121 = 11*11, k2 = 0.
        ("05039132100", Fodselsnummer),
        // 15.03.87 #124: sum1 = 3+35+0+3+64+63+4+10+8 = 190, 190 % 11 = 3, k1 = 8;
        // sum2 = 5+20+0+6+56+42+5+8+12+16 = 170, 170 % 11 = 5, k2 = 6.
        ("15038712486", Fodselsnummer),
        // 01.01.70 #123 by the 2032 rule: k1 = 5, (84 + 5) % 11 = 1;
        // sum2 = 85 - 2*4 + 2*5 = 87, 87 % 11 = 10, k2 = 1.
        ("01017012351", Fodselsnummer),
        // D-number of 01.01.70 #567: sum1 = 12+7+0+1+56+0+20+30+14 = 140,
        // 140 % 11 = 8, k1 = 3; sum2 = 20+4+0+2+49+0+25+24+21+6 = 151, 151 % 11 = 8, k2 = 3.
        ("41017056733", DNumber),
        // D-number of 31.03.99 #456: sum1 = 21+7+0+3+72+81+16+25+12 = 237,
        // 237 % 11 = 6, k1 = 5; sum2 = 35+4+0+6+63+54+20+20+18+10 = 230, 230 % 11 = 10, k2 = 1.
        ("71039945651", DNumber),
        // H-number of 01.01.70 #234: sum1 = 0+7+24+1+56+0+8+15+8 = 119,
        // 119 % 11 = 9, k1 = 2; sum2 = 0+4+12+2+49+0+10+12+12+4 = 105, 105 % 11 = 6, k2 = 5.
        ("01417023425", HNumber),
        // H-number of 12.12.85 #678: sum1 = 3+14+30+2+64+45+24+35+16 = 233,
        // 233 % 11 = 2, k1 = 9; sum2 = 5+8+15+4+56+30+30+28+24+18 = 218, 218 % 11 = 9, k2 = 2.
        ("12528567892", HNumber),
    ];

    /// Numbers that are not national ids, and why.
    pub(crate) const INVALID: [(&str, &str); 5] = [
        // sum2 = 85; (85 + 5) % 11 = 2.
        ("01017012345", "second check digit"),
        // sum2 = 170; (170 + 7) % 11 = 1.
        ("15038712487", "second check digit"),
        // k1 = 9: (84 + 9) % 11 = 5, beyond the 2032 rule; sum2 = 85 - 8 + 18 = 95,
        // (95 + 4) % 11 = 0.
        ("01017012394", "first check digit"),
        // 31.02.90 #123: sum1 = 9+7+0+2+72+0+4+10+6 = 110, k1 = 0;
        // sum2 = 15+4+0+4+63+0+5+8+9+0 = 108, 108 % 11 = 9, k2 = 2. No 31 February.
        ("31029012302", "no such date"),
        // Day 41 and month 41 at once, #125: sum1 = 12+7+24+1+56+0+4+10+10 = 124,
        // 124 % 11 = 3, k1 = 8; sum2 = 20+4+12+2+49+0+5+8+15+16 = 131, 131 % 11 = 10, k2 = 1.
        ("41417012581", "D- and H-number at once"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gsrn_vectors() {
        for ok in [
            "707057500022939815",
            "707057500000000018",
            "707057500123456785",
            "707057500999999997",
        ] {
            assert_eq!(check_gsrn(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_gsrn("707057500022939816"), Err(GsrnError::CheckDigit));
        assert_eq!(check_gsrn("707057500202939815"), Err(GsrnError::CheckDigit));
        assert_eq!(check_gsrn("70705750002293981"), Err(GsrnError::Shape));
        assert_eq!(check_gsrn("7070575000229398150"), Err(GsrnError::Shape));
        assert_eq!(check_gsrn("70705750002293981X"), Err(GsrnError::Shape));
        assert_eq!(check_gsrn(""), Err(GsrnError::Shape));
        // A Danish GSRN passes the checksum rule (the prefix rule is separate).
        let danish = format!("5713{:013}", 42);
        let full = format!("{danish}{}", gs1_check_digit(danish.as_bytes()));
        assert_eq!(check_gsrn(&full), Ok(()));
    }

    proptest! {
        #[test]
        fn any_single_digit_change_breaks_a_gsrn(serial in 0u32..10_000_000, pos in 0usize..18, delta in 1u8..10) {
            let body = format!("707057500{serial:08}");
            let id = format!("{body}{}", gs1_check_digit(body.as_bytes()));
            prop_assert_eq!(check_gsrn(&id), Ok(()));
            let mut bytes = id.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            prop_assert_eq!(check_gsrn(std::str::from_utf8(&bytes).unwrap()), Err(GsrnError::CheckDigit));
        }

        #[test]
        fn valid_national_ids_are_found_in_free_text(day in 1u32..29, month in 1u32..13, year in 0u32..100, ind in 0u32..1000, kind in 0u8..3) {
            let (dd, mm) = match kind {
                0 => (day, month),
                1 => (day + 40, month),
                _ => (day, month + 40),
            };
            let nine = format!("{dd:02}{mm:02}{year:02}{ind:03}");
            if let Some(id) = with_check_digits(&nine) {
                let expected = [NationalIdKind::Fodselsnummer, NationalIdKind::DNumber, NationalIdKind::HNumber][kind as usize];
                prop_assert_eq!(national_id(id.as_bytes()), Some(expected));
                let text = format!("call me, my number is {id}.");
                prop_assert_eq!(find_national_id(text.as_bytes()), Some(expected));
                // Inside a longer digit run it is not a candidate.
                let longer = format!("7{id}");
                prop_assert_eq!(find_national_id(longer.as_bytes()), None);
            }
        }
    }

    #[test]
    fn hand_computed_vectors_are_classified_as_the_rules_say() {
        for (number, kind) in vectors::VALID {
            assert_eq!(national_id(number.as_bytes()), Some(kind), "{number}");
            let text = format!("nr. {number}.");
            assert_eq!(find_national_id(text.as_bytes()), Some(kind), "{text}");
        }
        for (number, why) in vectors::INVALID {
            assert_eq!(national_id(number.as_bytes()), None, "{number}: {why}");
        }
    }

    /// `DDMMYY NNNNN`, `DDMMYY-NNNNN`, `DD.MM.YY NNNNN` and `DD.MM.YY-NNNNN`.
    fn formatted(number: &str) -> [String; 4] {
        let (date, rest) = number.split_at(6);
        let dotted = format!("{}.{}.{}", &date[..2], &date[2..4], &date[4..]);
        [
            format!("{date} {rest}"),
            format!("{date}-{rest}"),
            format!("{dotted} {rest}"),
            format!("{dotted}-{rest}"),
        ]
    }

    #[test]
    fn formatted_numbers_are_found_in_free_text() {
        for (number, kind) in vectors::VALID {
            for form in formatted(number) {
                assert_eq!(find_national_id(form.as_bytes()), Some(kind), "{form}");
                let text = format!("kunde {form}, ring tilbake");
                assert_eq!(find_national_id(text.as_bytes()), Some(kind), "{text}");
            }
        }
        for (number, why) in vectors::INVALID {
            for form in formatted(number) {
                assert_eq!(find_national_id(form.as_bytes()), None, "{form}: {why}");
            }
        }
        // Groups inside longer digit runs, other separators and other date shapes
        // are not candidates.
        for text in [
            "7010170 12343",
            "010170 123431",
            "010170  12343",
            "010170_12343",
            "010170/12343",
            "01.01.1970 12343",
            "01.0170 12343",
            "0101.70 12343",
            "01.01.70.12343",
            "2026-03-29 12:00",
        ] {
            assert_eq!(find_national_id(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn a_ten_digit_number_is_checked_with_its_leading_zero_restored() {
        for (number, kind) in vectors::VALID {
            if let Some(ten) = number.strip_prefix('0') {
                for text in [
                    ten.to_owned(),
                    format!("-{ten}"),
                    format!("{ten}.0"),
                    format!("{ten}.000"),
                ] {
                    assert_eq!(find_national_id_in_number(&text), Some(kind), "{text}");
                }
                assert_eq!(find_national_id_in_number(&format!("{ten}.5")), None);
            }
            // 11 digits in any notation, as before.
            assert_eq!(find_national_id_in_number(number), Some(kind), "{number}");
        }
        for (number, why) in vectors::INVALID {
            if let Some(ten) = number.strip_prefix('0') {
                assert_eq!(find_national_id_in_number(ten), None, "{number}: {why}");
            }
        }
        for text in ["101701234", "10170123430", "1.017012343e9", "0", "-"] {
            assert_eq!(find_national_id_in_number(text), None, "{text}");
        }
    }

    #[test]
    fn national_id_rules() {
        let id = (0..1000)
            .find_map(|ind| with_check_digits(&format!("010190{ind:03}")))
            .expect("valid check digits");
        assert_eq!(
            national_id(id.as_bytes()),
            Some(NationalIdKind::Fodselsnummer)
        );
        // Wrong second check digit.
        let mut bad = id.clone().into_bytes();
        bad[10] = b'0' + (bad[10] - b'0' + 1) % 10;
        assert_eq!(national_id(&bad), None);
        // Checksums right but no such date (31 February; month 13).
        for nine in ["310290123", "011390123", "000190123"] {
            if let Some(id) = with_check_digits(nine) {
                assert_eq!(national_id(id.as_bytes()), None, "{nine}");
            }
        }
        // 29 February exists in 2000 (and 1900 is not a leap year, but one century
        // suffices).
        if let Some(id) = with_check_digits("290200123") {
            assert!(national_id(id.as_bytes()).is_some());
        }
        // D and H at once is not a number.
        if let Some(id) = with_check_digits("414190123") {
            assert_eq!(national_id(id.as_bytes()), None);
        }
        // The 2032 rule: (sum1 + k1) % 11 in 0..=3 also passes the first check.
        let nine = "010190123";
        let d: Vec<u32> = nine.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum1: u32 = K1_WEIGHTS.iter().zip(&d).map(|(w, x)| w * x).sum();
        let found = (0..10u32).filter(|k1| (sum1 + k1) % 11 <= 3).any(|k1| {
            let mut ten = d.clone();
            ten.push(k1);
            let sum2: u32 = K2_WEIGHTS.iter().zip(&ten).map(|(w, x)| w * x).sum();
            let k2 = (11 - sum2 % 11) % 11;
            k2 < 10 && {
                let s = format!("{nine}{k1}{k2}");
                national_id(s.as_bytes()).is_some()
            }
        });
        assert!(found);
        // GSRNs and timestamps are not national ids.
        assert_eq!(find_national_id(b"707057500022939815"), None);
        assert_eq!(find_national_id(b"2026-03-29T01:00:00+02:00"), None);
    }
}
