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

/// The first national identity number in `text`, looking only at runs of exactly 11
/// ASCII digits (digits inside a longer run, such as a GSRN, are not candidates).
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
        let start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        if i - start == 11 {
            if let Some(kind) = national_id(&text[start..i]) {
                return Some(kind);
            }
        }
    }
    None
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
