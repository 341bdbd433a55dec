//! Sensitive data that must never be stored: Norwegian national identity numbers
//! anywhere in a payload, and fields that carry special categories of personal data
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

use crate::ids::{find_national_id, NationalIdKind};

/// Default deny-list of field names (compared after lower-casing and removing `_`,
/// `-` and spaces, so `political_opinion`, `political-opinion` and `politicalOpinion`
/// are the same name). Generic device words such as `health` (device health) are not on
/// it; extend it with `[privacy] special_category_fields`.
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
    deny: Vec<Vec<Vec<u8>>>,
}

/// Longest normalized field name compared (longer names are never on the list).
const MAX_NAME: usize = 64;

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
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
    /// A scanner for a deny-list of field names.
    pub fn new(fields: impl IntoIterator<Item = String>) -> Self {
        let mut deny: Vec<Vec<Vec<u8>>> = vec![Vec::new(); MAX_NAME + 1];
        for f in fields {
            let n = normalize(&f).into_bytes();
            if !n.is_empty() && n.len() <= MAX_NAME && !deny[n.len()].contains(&n) {
                deny[n.len()].push(n);
            }
        }
        Self { deny }
    }

    /// True if a field name is on the deny-list (ignoring ASCII case, `_`, `-` and
    /// spaces). No allocation.
    pub fn denied(&self, key: &str) -> bool {
        let mut buf = [0u8; MAX_NAME];
        let mut n = 0;
        for b in key.bytes() {
            if matches!(b, b'_' | b'-' | b' ') {
                continue;
            }
            if n == MAX_NAME {
                return false;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        self.deny[n].iter().any(|t| t[..] == buf[..n])
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
            // Any notation: -15038712345 and 15038712345.0 hold the same digits.
            Value::Number(n) => match find_national_id(n.to_string().as_bytes()) {
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
                    if self.denied(k) {
                        found.special_category += 1;
                        return false;
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
    use crate::ids::with_check_digits;

    fn fnr() -> String {
        with_check_digits("150387123")
            .or_else(|| with_check_digits("150387124"))
            .unwrap()
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
