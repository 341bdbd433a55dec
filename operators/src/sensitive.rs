//! Sensitive data that must never be stored: Norwegian national identity numbers
//! anywhere in a payload (in free text also in their usual written forms, and as a
//! JSON number that lost its leading 0), fields named for them ([`NATIONAL_ID_FIELDS`],
//! whatever their value), and fields that carry special categories of personal data
//! (health, biometrics, religion, politics, ethnicity, children, ...) by name.
//!
//! Detection happens in `decode`, while it parses (the only place where `status`,
//! `pii` and unknown fields still exist): every key, string (unescaped) and number
//! at any depth is checked for national ids, and keys of `status`, `pii` and unknown
//! fields are checked with [`SensitiveScanner::denied`].
//!
//! Only a payload with a hit is parsed into a tree and rewritten without the
//! offending values ([`SensitiveScanner::clean`]); the rewritten payload is what
//! decode, dead letters and replay see. Dead-letter payloads are always cleaned.
//!
//! A detected value is dropped, never hashed and kept: a keyed hash of an 11-digit
//! number with a valid date and two check digits is still a national id to whoever
//! holds the key.

use serde_json::Value;

use crate::ids::{find_national_id, find_national_id_in_number, NationalIdKind};

/// Field names that hold a national identity number: their value is removed whatever
/// it looks like (a typo, half a number, a number in another notation). Always on
/// the deny-list: `[privacy] special_category_fields` replaces the special
/// categories, never these. Compared like them, and with `ø`/`Ø` read as `o`.
/// Counted as the kind the name says.
pub const NATIONAL_ID_FIELDS: [(&str, NationalIdKind); 9] = [
    ("fødselsnummer", NationalIdKind::Fodselsnummer),
    ("fodselsnummer", NationalIdKind::Fodselsnummer),
    ("foedselsnummer", NationalIdKind::Fodselsnummer),
    ("personnummer", NationalIdKind::Fodselsnummer),
    ("personnr", NationalIdKind::Fodselsnummer),
    ("fnr", NationalIdKind::Fodselsnummer),
    ("pnr", NationalIdKind::Fodselsnummer),
    ("d_nummer", NationalIdKind::DNumber),
    ("dnummer", NationalIdKind::DNumber),
];

/// Default deny-list of field names (compared after lower-casing and removing `_`,
/// `-` and spaces, so `political_opinion`, `political-opinion` and `politicalOpinion`
/// are the same name). Generic device words such as `health` (device health) are not on
/// it; `[privacy] special_category_fields` replaces it (not [`NATIONAL_ID_FIELDS`]).
pub const DEFAULT_SPECIAL_CATEGORY_FIELDS: [&str; 36] = [
    "health_data",
    "health_condition",
    "medical",
    "medical_condition",
    "diagnosis",
    "medication",
    "disability",
    "pregnancy",
    "biometric",
    "biometrics",
    "biometric_data",
    "fingerprint",
    "face_template",
    "face_image",
    "iris_scan",
    "religion",
    "religious_belief",
    "beliefs",
    "political_opinion",
    "political_party",
    "politics",
    "party_membership",
    "trade_union",
    "trade_union_membership",
    "ethnicity",
    "ethnic_origin",
    "race",
    "sexual_orientation",
    "sex_life",
    "genetic_data",
    "child",
    "children",
    "child_age",
    "children_ages",
    "number_of_children",
    "minors",
];

/// What was removed, by kind. Labels are the `kind` of
/// `meterline_sensitive_removed_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SensitiveCounts {
    pub fodselsnummer: u64,
    pub d_number: u64,
    pub h_number: u64,
    pub special_category: u64,
}

impl SensitiveCounts {
    pub const KINDS: [&'static str; 4] =
        ["fodselsnummer", "d_number", "h_number", "special_category"];

    pub fn add(&mut self, other: &SensitiveCounts) {
        self.fodselsnummer += other.fodselsnummer;
        self.d_number += other.d_number;
        self.h_number += other.h_number;
        self.special_category += other.special_category;
    }

    pub fn total(&self) -> u64 {
        self.fodselsnummer + self.d_number + self.h_number + self.special_category
    }

    /// (kind label, count) pairs.
    pub fn by_kind(&self) -> [(&'static str, u64); 4] {
        [
            (Self::KINDS[0], self.fodselsnummer),
            (Self::KINDS[1], self.d_number),
            (Self::KINDS[2], self.h_number),
            (Self::KINDS[3], self.special_category),
        ]
    }

    fn national(&mut self, kind: NationalIdKind) {
        match kind {
            NationalIdKind::Fodselsnummer => self.fodselsnummer += 1,
            NationalIdKind::DNumber => self.d_number += 1,
            NationalIdKind::HNumber => self.h_number += 1,
        }
    }
}

/// The result of scanning one payload.
#[derive(Debug, Default)]
pub struct Sanitized {
    /// The rewritten payload when something was removed; `None` when the original
    /// bytes are clean and can be used as they are.
    pub bytes: Option<Vec<u8>>,
    pub removed: SensitiveCounts,
    /// `device_id` or `meter_id` held a national id and was removed: the reading
    /// cannot be keyed and becomes a `sensitive_identifier` dead letter.
    pub identifier_removed: bool,
}

/// Finds and removes sensitive data in JSON payloads.
#[derive(Debug, Clone)]
pub struct SensitiveScanner {
    /// Normalized field names, by length (index = normalized length).
    deny: Vec<Vec<(Vec<u8>, Listed)>>,
}

/// Why a field name is on the deny-list.
#[derive(Debug, Clone, Copy)]
enum Listed {
    SpecialCategory,
    NationalId(NationalIdKind),
}

/// Longest normalized field name compared (longer names are never on the list).
const MAX_NAME: usize = 64;

/// `name` without `_`, `-` and spaces, ASCII lower-cased and `ø`/`Ø` as `o`, in
/// `buf`; `None` when that is longer than [`MAX_NAME`]. No allocation.
fn normalize<'b>(name: &str, buf: &'b mut [u8; MAX_NAME]) -> Option<&'b [u8]> {
    let mut n = 0;
    let mut put = |byte: u8| -> Option<()> {
        *buf.get_mut(n)? = byte;
        n += 1;
        Some(())
    };
    for c in name.chars() {
        match c {
            '_' | '-' | ' ' => {}
            'ø' | 'Ø' => put(b'o')?,
            // ASCII byte by byte: no slice copy per character.
            c if c.is_ascii() => put(c.to_ascii_lowercase() as u8)?,
            c => {
                let mut utf8 = [0u8; 4];
                for &byte in c.encode_utf8(&mut utf8).as_bytes() {
                    put(byte)?;
                }
            }
        }
    }
    Some(&buf[..n])
}

impl Default for SensitiveScanner {
    fn default() -> Self {
        Self::new(
            DEFAULT_SPECIAL_CATEGORY_FIELDS
                .iter()
                .map(|s| s.to_string()),
        )
    }
}

impl SensitiveScanner {
    /// A scanner for a deny-list of special-category field names, plus the
    /// [`NATIONAL_ID_FIELDS`], which no list can leave out.
    pub fn new(fields: impl IntoIterator<Item = String>) -> Self {
        let mut scanner = Self {
            deny: vec![Vec::new(); MAX_NAME + 1],
        };
        for (name, kind) in NATIONAL_ID_FIELDS {
            scanner.insert(name, Listed::NationalId(kind));
        }
        for f in fields {
            scanner.insert(&f, Listed::SpecialCategory);
        }
        scanner
    }

    fn insert(&mut self, name: &str, why: Listed) {
        let mut buf = [0u8; MAX_NAME];
        if let Some(n) = normalize(name, &mut buf).filter(|n| !n.is_empty()) {
            let same_length = &mut self.deny[n.len()];
            if !same_length.iter().any(|(t, _)| t == n) {
                same_length.push((n.to_vec(), why));
            }
        }
    }

    fn listed(&self, key: &str) -> Option<Listed> {
        let mut buf = [0u8; MAX_NAME];
        let n = normalize(key, &mut buf)?;
        self.deny[n.len()]
            .iter()
            .find_map(|(t, why)| (t[..] == *n).then_some(*why))
    }

    /// True if a field name is on the deny-list (ignoring ASCII case, `_`, `-` and
    /// spaces, reading `ø` as `o`). No allocation.
    pub fn denied(&self, key: &str) -> bool {
        self.listed(key).is_some()
    }

    /// Parse a payload and remove every national id and special-category field,
    /// wherever it is. `bytes: None` in the result when nothing was removed (or the
    /// payload is not JSON: decode dead-letters it and nothing of it is stored).
    pub fn clean(&self, bytes: &[u8]) -> Sanitized {
        let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
            return Sanitized::default();
        };
        let mut out = Sanitized::default();
        if let Value::Object(map) = &mut value {
            for field in ["device_id", "meter_id"] {
                if let Some(Value::String(s)) = map.get(field) {
                    if let Some(kind) = find_national_id(s.as_bytes()) {
                        out.removed.national(kind);
                        out.identifier_removed = true;
                        map.remove(field);
                    }
                }
            }
        }
        if self.clean_value(&mut value, &mut out.removed) {
            value = Value::Null;
        }
        if out.removed.total() > 0 {
            out.bytes = serde_json::to_vec(&value).ok();
        }
        out
    }

    /// Remove sensitive parts of `v`; true if `v` itself must go.
    pub fn clean_value(&self, v: &mut Value, found: &mut SensitiveCounts) -> bool {
        match v {
            Value::String(s) => match find_national_id(s.as_bytes()) {
                Some(kind) => {
                    found.national(kind);
                    true
                }
                None => false,
            },
            // Any notation: -15038712345 and 15038712345.0 hold the same digits; a
            // 10-digit integer is checked with its lost leading 0.
            Value::Number(n) => match find_national_id_in_number(&n.to_string()) {
                Some(kind) => {
                    found.national(kind);
                    true
                }
                None => false,
            },
            Value::Array(items) => {
                items.retain_mut(|x| !self.clean_value(x, found));
                false
            }
            Value::Object(map) => {
                map.retain(|k, x| {
                    match self.listed(k) {
                        Some(Listed::NationalId(kind)) => {
                            found.national(kind);
                            return false;
                        }
                        Some(Listed::SpecialCategory) => {
                            found.special_category += 1;
                            return false;
                        }
                        None => {}
                    }
                    if let Some(kind) = find_national_id(k.as_bytes()) {
                        found.national(kind);
                        return false;
                    }
                    !self.clean_value(x, found)
                });
                false
            }
            Value::Null | Value::Bool(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::vectors::VALID;
    use crate::ids::with_check_digits;

    fn fnr() -> String {
        with_check_digits("150387123")
            .or_else(|| with_check_digits("150387124"))
            .unwrap()
    }

    fn cleaned(s: &SensitiveScanner, payload: &str) -> (Value, SensitiveCounts) {
        let out = s.clean(payload.as_bytes());
        let bytes = out.bytes.unwrap_or_else(|| payload.as_bytes().to_vec());
        (serde_json::from_slice(&bytes).unwrap(), out.removed)
    }

    #[test]
    fn a_ten_digit_integer_is_read_with_its_leading_zero_restored() {
        let s = SensitiveScanner::default();
        let mut checked = 0;
        for (number, kind) in VALID.iter().filter(|(n, _)| n.starts_with('0')) {
            let ten = &number[1..];
            for n in [ten.to_owned(), format!("-{ten}"), format!("{ten}.0")] {
                let payload = format!(r#"{{"status":{{"n":{n},"ok":1}},"extra":[{n},2]}}"#);
                let (value, removed) = cleaned(&s, &payload);
                assert_eq!(
                    value,
                    serde_json::json!({"status": {"ok": 1}, "extra": [2]}),
                    "{payload}"
                );
                let mut expected = SensitiveCounts::default();
                expected.national(*kind);
                expected.national(*kind);
                assert_eq!(removed, expected, "{payload}");
                checked += 1;
            }
        }
        assert_eq!(checked, 12);
        // A string of 10 digits did not lose a leading zero; an invalid number, a
        // fraction and 9 digits are not national ids.
        for payload in [
            r#"{"n":"1017012343"}"#,
            r#"{"n":1017012345}"#,
            r#"{"n":1017012343.5}"#,
            r#"{"n":101701234}"#,
        ] {
            assert_eq!(s.clean(payload.as_bytes()).removed.total(), 0, "{payload}");
        }
    }

    #[test]
    fn national_id_field_names_are_removed_whatever_the_value_and_under_any_deny_list() {
        let scanners = [
            SensitiveScanner::default(),
            SensitiveScanner::new(["shoe_size".to_owned()]),
            SensitiveScanner::new(Vec::<String>::new()),
        ];
        for s in &scanners {
            for key in [
                "fødselsnummer",
                "Fødselsnummer",
                "FØDSELSNUMMER",
                "fodselsnummer",
                "foedselsnummer",
                "personnummer",
                "fnr",
                "FNR",
                "pnr",
                "personnr",
                "d_nummer",
                "dnummer",
                "D-nummer",
                "Personnummer ",
            ] {
                assert!(s.denied(key), "{key}");
                let payload = format!(
                    r#"{{"pii":{{"{key}":"not even digits","ok":1}},"{key}":12,"status":{{"{key}":{{"x":null}}}}}}"#
                );
                let (value, removed) = cleaned(s, &payload);
                assert_eq!(
                    value,
                    serde_json::json!({"pii": {"ok": 1}, "status": {}}),
                    "{payload}"
                );
                assert_eq!(removed.total(), 3, "{key}");
                assert_eq!(removed.special_category, 0, "{key}");
            }
            for key in ["nr", "fnrx", "person", "nummer", "fødsel", "d"] {
                assert!(!s.denied(key), "{key}");
            }
        }
    }

    #[test]
    fn clean_payloads_are_not_rewritten() {
        let s = SensitiveScanner::default();
        let p = br#"{"schema":"reading/v1","meter_id":"707057500022939815","start":"2026-03-29T01:00:00+02:00","status":{"health":"ok"}}"#;
        let out = s.clean(p);
        assert!(out.bytes.is_none());
        assert_eq!(out.removed.total(), 0);
    }

    #[test]
    fn national_ids_are_removed_everywhere() {
        let s = SensitiveScanner::default();
        let id = fnr();
        let payload = format!(
            r#"{{"subject":"customer {id}","status":{{"note":"owner {id}","codes":[1,"{id}",{n}]}},"pii":{{"{id}":"x"}},"area":"0150"}}"#,
            n = id.trim_start_matches('0')
        );
        let out = s.clean(payload.as_bytes());
        let bytes = out.bytes.expect("rewritten");
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains(&id), "{text}");
        assert!(text.contains("\"area\":\"0150\""));
        assert!(text.contains("\"codes\":[1"));
        assert!(!out.identifier_removed);
        assert!(out.removed.total() >= 4, "{:?}", out.removed);
    }

    #[test]
    fn numbers_in_any_notation_are_checked() {
        let s = SensitiveScanner::default();
        let id = fnr();
        let exponent = format!("{}.{}e10", &id[..1], &id[1..]);
        for number in [format!("-{id}"), format!("{id}.0"), exponent] {
            let payload = format!(r#"{{"status":{{"n":{number},"ok":1}}}}"#);
            let out = s.clean(payload.as_bytes());
            let text = String::from_utf8(out.bytes.expect("rewritten")).unwrap();
            assert_eq!(text, r#"{"status":{"ok":1}}"#, "{number}");
        }
    }

    #[test]
    fn an_identifier_holding_a_national_id_is_reported() {
        let s = SensitiveScanner::default();
        let payload = format!(r#"{{"device_id":"dev-{}","value":1}}"#, fnr());
        let out = s.clean(payload.as_bytes());
        assert!(out.identifier_removed);
        assert_eq!(out.bytes.as_deref(), Some(&br#"{"value":1}"#[..]));
    }

    #[test]
    fn special_category_fields_are_removed_by_name_in_any_spelling() {
        let s = SensitiveScanner::default();
        let payload = br#"{"pii":{"Religion":"x","political-opinion":"y","name":"z","numberOfChildren":2},"status":{"health_condition":"asthma","battery":3}}"#;
        for key in [
            "Religion",
            "political-opinion",
            "numberOfChildren",
            "health_condition",
            "HEALTH CONDITION",
        ] {
            assert!(s.denied(key), "{key}");
        }
        for key in ["name", "battery", "health", "status", ""] {
            assert!(!s.denied(key), "{key}");
        }
        assert!(!s.denied(&"x".repeat(500)));
        let out = s.clean(payload);
        let text = String::from_utf8(out.bytes.unwrap()).unwrap();
        assert_eq!(out.removed.special_category, 4, "{text}");
        assert!(!text.contains("asthma") && !text.contains("\"x\"") && !text.contains("\"y\""));
        assert!(text.contains("battery") && text.contains("\"name\":\"z\""));
    }

    #[test]
    fn escapes_do_not_hide_anything() {
        let s = SensitiveScanner::default();
        let id = fnr();
        let escaped: String = id.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let payload = format!(r#"{{"status":{{"note":"{escaped}","rel\u0069gion":"x"}}}}"#);
        let out = s.clean(payload.as_bytes());
        assert_eq!(
            out.removed.fodselsnummer + out.removed.d_number + out.removed.h_number,
            1
        );
        assert_eq!(out.removed.special_category, 1);
    }

    #[test]
    fn the_deny_list_is_configurable() {
        let s = SensitiveScanner::new(["Shoe Size".to_owned()]);
        let out = s.clean(br#"{"pii":{"shoe_size":44,"religion":"x"}}"#);
        assert_eq!(out.removed.special_category, 1);
        assert!(String::from_utf8(out.bytes.unwrap())
            .unwrap()
            .contains("religion"));
    }
}
