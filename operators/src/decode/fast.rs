//! The fast path of `decode`: a single pass over the bytes of a payload of the
//! common shape, producing the same [`Wire`] as the serde path ([`WireSeed`]).
//!
//! It handles what producers send nearly always: one JSON object, contract fields
//! as plain strings (no escape sequences), numbers, `null`, `true`/`false`, and
//! objects and arrays inside `status`, `pii` and unknown fields. Anything else —
//! an escape sequence, a control character, a duplicate or missing field, a wrong
//! type, deep nesting, a number it does not read exactly like serde_json, a syntax
//! error — returns `None`, and the serde path decides (and says why it failed).
//! So this module never rejects a payload and never accepts one the serde path
//! would refuse; a property test compares the two on generated payloads.
//!
//! Sensitive data is looked for exactly as in the serde path: national ids in
//! every key, string and number; deny-listed names among the keys of `status`,
//! `pii` and unknown fields, at any depth.

use std::borrow::Cow;

use super::{
    field_index, has_national_id, number_text_has_national_id, raw_has_national_id, Wire, PII,
    QUALITY, REDACTED, STATUS, VALUE,
};
use crate::sensitive::SensitiveScanner;

/// Nesting below this is left to the serde path (which allows 128 levels).
const MAX_DEPTH: usize = 32;

/// `Some` only when the payload has the common shape and parses completely.
pub(super) fn parse<'a>(text: &'a str, scanner: &SensitiveScanner) -> Option<Wire<'a>> {
    let mut p = Parser {
        text,
        b: text.as_bytes(),
        i: 0,
        scanner,
        sensitive: false,
    };
    let wire = p.object()?;
    p.ws();
    (p.i == p.b.len()).then_some(wire)
}

/// The position of the first `"`, `\` or control character (< 0x20), eight bytes
/// at a time. Within a word the lowest flagged byte is exact (borrows only run
/// upwards), and bytes >= 0x80 (UTF-8 sequences) are never flagged.
fn string_end(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hits = zero_byte(v ^ (ONES * u64::from(b'"')))
            | zero_byte(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| special(c)).map(|p| i + p)
}

fn special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

struct Parser<'a, 's> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    scanner: &'s SensitiveScanner,
    sensitive: bool,
}

impl<'a> Parser<'a, '_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// A string without escapes or control characters, without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // Quotes are ASCII, so both ends are character boundaries of `text`.
        Some(&self.text[start..start + len])
    }

    /// A JSON number, exactly as the grammar has it; returns its text.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            p.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some(&self.text[start..self.i])
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// A number somewhere inside `status`, `pii` or an unknown field: checked for a
    /// national id as serde_json's value (i64/u64/f64) would be.
    fn nested_number(&mut self) -> Option<()> {
        let text = self.number()?;
        let digits = text.trim_start_matches('-');
        let int_part = digits.split(['.', 'e', 'E']).next().unwrap_or_default();
        if digits.contains(['e', 'E']) || (int_part.len() > 9 && digits.len() != int_part.len()) {
            // Exponents and large fractions: serde_json's float formatting decides.
            return None;
        }
        if digits.len() == int_part.len() {
            if int_part.len() > 18 {
                return None; // near or beyond i64/u64: serde_json may read a float
            }
            // An integer is formatted back to exactly its text.
            self.sensitive |= number_text_has_national_id(text);
        }
        // A fraction with fewer than 10 integer digits is below 10^9: no id.
        Some(())
    }

    /// Any value inside `status`, `pii` or an unknown field.
    fn walk(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                self.sensitive |= has_national_id(s);
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.sensitive |= has_national_id(key) || self.scanner.denied(key);
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.walk(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.walk(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => self.nested_number()?,
        }
        Some(())
    }

    /// `value` and `quality`: the raw text of a number or a plain string.
    fn raw(&mut self) -> Option<&'a str> {
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            _ => return None,
        }
        let raw = &self.text[start..self.i];
        self.sensitive |= raw_has_national_id(raw);
        Some(raw)
    }

    fn object(&mut self) -> Option<Wire<'a>> {
        self.ws();
        self.eat(b'{')?;
        let mut seen = [false; super::FIELDS.len()];
        let mut strings: [Option<Cow<'a, str>>; 14] = Default::default();
        let (mut value, mut quality, mut redacted) = (None, None, None);
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            match field_index(key) {
                None => {
                    self.sensitive |= has_national_id(key) || self.scanner.denied(key);
                    self.walk(1)?;
                }
                Some(field) if std::mem::replace(&mut seen[field], true) => return None,
                Some(VALUE) => value = Some(self.raw()?),
                Some(QUALITY) => quality = Some(self.raw()?),
                Some(REDACTED) => {
                    redacted = match self.peek()? {
                        b't' => self.literal(b"true").map(|()| Some(true))?,
                        b'f' => self.literal(b"false").map(|()| Some(false))?,
                        b'n' => self.literal(b"null").map(|()| None)?,
                        _ => return None,
                    }
                }
                Some(STATUS | PII) => match self.peek()? {
                    b'{' => self.walk(1)?,
                    b'n' => self.literal(b"null")?,
                    _ => return None,
                },
                Some(field) => {
                    strings[field] = match self.peek()? {
                        b'"' => {
                            let s = self.string()?;
                            self.sensitive |= has_national_id(s);
                            Some(Cow::Borrowed(s))
                        }
                        b'n' => self.literal(b"null").map(|()| None)?,
                        _ => return None,
                    }
                }
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        let [schema, tenant, device_id, meter_id, quantity, direction, start, resolution, _, unit, _, version, area, subject] =
            strings;
        Some(Wire {
            schema: schema?,
            tenant: tenant?,
            device_id: device_id?,
            meter_id,
            quantity: quantity?,
            direction,
            start: start?,
            resolution: resolution?,
            value: value?,
            unit: unit?,
            quality: quality?,
            version,
            area,
            subject,
            redacted,
            sensitive: self.sensitive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::parse_wire;
    use crate::ids::with_check_digits;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn string_end_finds_the_first_special_byte(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(string_end(&bytes), bytes.iter().position(|&c| special(c)));
        }

        #[test]
        fn string_end_in_text(text in "[a-z\"\\\\\\x00-\\x1f\\x7fæø€]{0,40}") {
            let bytes = text.as_bytes();
            prop_assert_eq!(string_end(bytes), bytes.iter().position(|&c| special(c)));
        }
    }

    fn scanner() -> SensitiveScanner {
        SensitiveScanner::default()
    }

    fn national_ids() -> Vec<String> {
        (0..1000)
            .filter_map(|n| with_check_digits(&format!("150387{n:03}")))
            .take(3)
            .collect()
    }

    const GOOD: &str = r#"{"schema":"reading/v1","tenant":"oslo","device_id":"dev-1","meter_id":"707057500000000018","quantity":"electricity","direction":"import","start":"2026-03-29T01:00:00+02:00","resolution":"PT1H","value":1.234,"unit":"kWh","quality":"measured","version":"2026-03-30T06:00:00Z","area":"NO1","status":{"battery":0.87,"rssi":-71,"tags":["a",1,true,null]},"subject":"acct-42","pii":{"name":"Kari","email":"k@example.no"},"extra":{"x":[{}]}}"#;

    #[test]
    fn the_common_shape_takes_the_fast_path_and_matches_serde() {
        let s = scanner();
        for text in [
            GOOD.to_owned(),
            GOOD.replace(',', " ,\n\t").replace(':', " : "),
            format!("  {GOOD}\r\n"),
            GOOD.replace("\"quality\":\"measured\"", "\"quality\":127"),
            GOOD.replace("\"meter_id\":\"707057500000000018\"", "\"meter_id\":null"),
            GOOD.replace("\"Kari\"", "\"Kari Nordmann, Storgata 1, 0155 Oslo\""),
        ] {
            let fast = parse(&text, &s).unwrap_or_else(|| panic!("fast path: {text}"));
            assert_eq!(Some(&fast), parse_wire(&text, &s).ok().as_ref(), "{text}");
            assert!(!fast.sensitive, "{text}");
        }
    }

    #[test]
    fn sensitive_data_is_seen_in_every_position() {
        let s = scanner();
        let id = &national_ids()[0];
        for text in [
            GOOD.replace("acct-42", &format!("acct {id}")),
            GOOD.replace("\"rssi\":-71", &format!("\"rssi\":{id}")),
            GOOD.replace("\"rssi\":-71", &format!("\"rssi\":-{id}")),
            GOOD.replace("\"tags\"", &format!("\"{id}\"")),
            GOOD.replace("\"battery\"", "\"Religion\""),
            GOOD.replace("\"x\":", "\"health_data\":"),
            GOOD.replace("\"extra\"", "\"ethnic-origin\""),
            GOOD.replace("\"value\":1.234", &format!("\"value\":{id}")),
            // Hand-computed vectors (`ids::vectors`): formatted, without their
            // leading 0 as a number, and national-id field names.
            GOOD.replace("acct-42", "acct 010170-12343"),
            GOOD.replace("\"area\":\"NO1\"", "\"area\":\"41.01.70 56733\""),
            GOOD.replace("\"rssi\":-71", "\"rssi\":1017012343"),
            GOOD.replace("\"rssi\":-71", "\"rssi\":-1417023425"),
            GOOD.replace("\"value\":1.234", "\"value\":5039132100"),
            GOOD.replace("\"battery\"", "\"Fødselsnummer\""),
            GOOD.replace("\"extra\"", "\"fnr\""),
        ] {
            let fast = parse(&text, &s).unwrap_or_else(|| panic!("fast path: {text}"));
            assert!(fast.sensitive, "{text}");
            assert_eq!(Some(&fast), parse_wire(&text, &s).ok().as_ref(), "{text}");
        }
    }

    #[test]
    fn unusual_payloads_are_left_to_serde() {
        let s = scanner();
        for text in [
            GOOD.replace("dev-1", "dev-\\u0031"),
            GOOD.replace(
                "\"tenant\":\"oslo\"",
                "\"tenant\":\"oslo\",\"tenant\":\"oslo\"",
            ),
            GOOD.replace("\"rssi\":-71", "\"rssi\":1e10"),
            GOOD.replace("\"value\":1.234", "\"value\":01"),
            GOOD.replace("\"value\":1.234", "\"value\":null"),
            GOOD.replace("\"status\":{", "\"status\":[{")
                .replace("null]}", "null]}]"),
            format!("{GOOD} x"),
            GOOD[..GOOD.len() - 1].to_owned(),
            GOOD.replace("oslo", "os\u{1}lo"),
            format!("\u{feff}{GOOD}"),
        ] {
            assert!(parse(&text, &s).is_none(), "{text}");
        }
    }

    /// JSON-ish text for nested values: valid and invalid numbers, literals,
    /// strings with escapes, control characters and national ids, deny-listed keys.
    fn nested() -> impl Strategy<Value = String> {
        let ids = national_ids();
        let leaf = prop_oneof![
            8 => prop::sample::select(vec![
                "0", "-0", "1.5", "0.87", "-71", "1e5", "1E+2", "2.5e-3", "999999999.5",
                "1234567890.5", "12345678901234567890", "-9223372036854775809", "true",
                "false", "null", "\"a\"", "\"\\u0041\"", "\"\\\"\"", "\"æøå\"", "[]", "{}",
            ])
            .prop_map(str::to_owned),
            1 => prop::sample::select(vec![
                "01", "1.", ".5", "-", "nul", "tru", "\"x\u{1}\"", "[1,]", "{,}",
            ])
            .prop_map(str::to_owned),
            1 => prop::sample::select(ids.clone()).prop_map(|id| id.to_string()),
            1 => prop::sample::select(ids.clone()).prop_map(|id| format!("-{id}")),
            1 => prop::sample::select(ids).prop_map(|id| format!("\"note {id}\"")),
            // `ids::vectors`: formatted, and a number that lost its leading 0.
            1 => prop::sample::select(vec![
                "\"010170 12343\"", "\"12.52.85-67892\"", "\"010170 12345\"", "1017012343",
                "-1417023425", "1017012345", "1017012343.0",
            ])
            .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "battery",
                            "rssi",
                            "Religion",
                            "health_data",
                            "na\\u006de",
                            "k",
                            "email",
                            "",
                            "fnr",
                            "Fødsels-nummer",
                        ]),
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| {
                    let body: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }

    /// A value for any field: usually of the right type for some field, sometimes not.
    fn value() -> impl Strategy<Value = String> {
        let string_value = prop_oneof![
            12 => Just("\"plain\"".to_owned()),
            2 => Just("\"13038712345\"".to_owned()),
            2 => prop::sample::select(national_ids()).prop_map(|id| format!("\"x{id}\"")),
            1 => Just("null".to_owned()),
            1 => Just("\"esc\\u0061ped\"".to_owned()),
            1 => Just("42".to_owned()),
            1 => nested(),
        ];
        let number = prop_oneof![
            6 => prop::sample::select(vec!["1.234", "0", "127", "\"measured\"", "25.5e1", "-1"])
                .prop_map(str::to_owned),
            1 => prop::sample::select(national_ids()),
            1 => nested(),
        ];
        prop_oneof![
            3 => string_value,
            2 => number,
            2 => nested().prop_map(|v| format!("{{\"n\":{v}}}")),
            1 => nested(),
        ]
    }

    /// An unknown top-level field (now and then a second copy of a contract field).
    fn unknown_field() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            8 => prop::sample::select(vec!["extra", "Health", "x", "n\\u0061me", "religion", "13038712345"]),
            1 => prop::sample::select(vec!["tenant", "status", "value"]),
        ];
        (key, value()).prop_map(|(k, v)| format!("\"{k}\":{v}"))
    }

    /// A payload from GOOD's fields with some replaced, dropped or added, odd
    /// whitespace, trailing text or truncation.
    fn payload() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(unknown_field(), 0..3),
            prop::collection::vec((0usize..20, value()), 0..2),
            prop::option::weighted(0.15, 0usize..20),
            prop::sample::select(vec!["", "", "", " ", "\n\t", "\r\n ", "\u{a0}"]),
            prop::sample::select(vec!["", "", "", "", "", "", " ", "\n", "x", "}", ","]),
            prop::option::weighted(0.1, 0usize..600),
        )
            .prop_map(|(extra, replace, drop, ws, tail, cut)| {
                let base: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(GOOD).unwrap();
                let mut fields: Vec<(String, String)> = base
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect();
                for (i, v) in replace {
                    let i = i % fields.len();
                    fields[i].1 = v;
                }
                let mut fields: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                if let Some(d) = drop {
                    let d = d % fields.len();
                    fields.remove(d);
                }
                fields.extend(extra);
                let sep = format!("{ws},{ws}");
                let mut text = format!("{ws}{{{ws}{}{ws}}}{tail}", fields.join(&sep));
                if let Some(cut) = cut {
                    let mut at = cut.min(text.len());
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text.truncate(at);
                }
                text
            })
    }

    /// Whenever the fast path accepts a payload, the serde path accepts it too and
    /// reads exactly the same fields and sensitivity. The generated payloads reach
    /// both outcomes often (the test would be empty otherwise).
    #[test]
    fn never_disagrees_with_serde() {
        use proptest::test_runner::{Config, TestRunner};
        let s = scanner();
        use std::cell::Cell;
        let (fast_ok, fast_sensitive, left_to_serde) = (Cell::new(0), Cell::new(0), Cell::new(0));
        let mut runner = TestRunner::new(Config::with_cases(4000));
        runner
            .run(&payload(), |text| {
                match parse(&text, &s) {
                    Some(fast) => {
                        fast_ok.set(fast_ok.get() + 1);
                        fast_sensitive.set(fast_sensitive.get() + usize::from(fast.sensitive));
                        let slow = parse_wire(&text, &s);
                        prop_assert!(
                            slow.is_ok(),
                            "serde refuses what the fast path took: {}",
                            text
                        );
                        prop_assert_eq!(fast, slow.unwrap(), "{}", text);
                    }
                    None => left_to_serde.set(left_to_serde.get() + 1),
                }
                Ok(())
            })
            .unwrap();
        let (ok, sensitive, left) = (fast_ok.get(), fast_sensitive.get(), left_to_serde.get());
        eprintln!("fast path: {ok} (sensitive {sensitive}); left to serde: {left}");
        assert!(ok > 600, "fast path took {ok}");
        assert!(sensitive > 100, "sensitive on the fast path: {sensitive}");
        assert!(left > 800, "left to serde: {left}");
    }
}
