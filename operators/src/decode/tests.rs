use super::*;
use crate::pseudonym::MasterKey;
use crate::tenant::{Rules, Tenant};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Date32Type, Decimal128Type, TimestampMicrosecondType};

const GOOD: &str = r#"{"schema":"reading/v1","tenant":"oslo","device_id":"dev-000123",
 "meter_id":"707057500000000018","quantity":"electricity","direction":"import",
 "start":"2026-03-29T01:00:00+02:00","resolution":"PT1H","value":1.234,"unit":"kWh",
 "quality":"measured","version":"2026-03-30T06:00:00Z","area":"NO1",
 "status":{"battery":0.9},"subject":"acct-42",
 "pii":{"name":"Kari Nordmann","email":"kari@example.no"},"extra":"ignored"}"#;

fn decoder() -> Decoder {
    decoder_with_retired(&[])
}

fn decoder_with_retired(retired: &[&str]) -> Decoder {
    let tenants = TenantRegistry::new([
        Tenant {
            id: "oslo".into(),
            deployment: Deployment::Public,
            timezone: chrono_tz::Europe::Oslo,
            rules: Rules::default(),
        },
        Tenant {
            id: "acme".into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Europe::Oslo,
            rules: Rules::default(),
        },
    ])
    .unwrap()
    .with_retired(retired.iter().copied());
    let key = MasterKey::from_bytes([9; 32]);
    Decoder::new(
        DecodeConfig::default(),
        tenants,
        Some(Pseudonymizer::new(key)),
    )
}

fn ctx() -> OperatorContext {
    OperatorContext {
        now_micros: 1_700_000_000_000_000,
    }
}

fn decode_texts(texts: &[&str]) -> DecodeOutput {
    let records: Vec<RawRecord> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| RawRecord {
            partition: 0,
            offset: i as i64,
            payload: Some(t.as_bytes()),
            replay_tag: None,
        })
        .collect();
    decoder().decode(&records, &ctx())
}

fn with(field: &str, json_value: &str) -> String {
    let mut v: Value = serde_json::from_str(GOOD).unwrap();
    v[field] = serde_json::from_str(json_value).unwrap();
    v.to_string()
}

fn without(field: &str) -> String {
    let mut v: Value = serde_json::from_str(GOOD).unwrap();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

fn date(text: &str) -> i32 {
    days_since_epoch(NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap())
}

#[test]
fn decodes_a_good_reading_exactly() {
    let out = decode_texts(&[GOOD]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let b = &out.batch;
    assert_eq!(b.num_rows(), 1);
    assert_eq!(b.column(1).as_string::<i32>().value(0), "dev-000123");
    assert_eq!(
        b.column(2).as_string::<i32>().value(0),
        "707057500000000018"
    );
    let start = b
        .column(6)
        .as_primitive::<TimestampMicrosecondType>()
        .value(0);
    // 01:00+02:00 is 23:00Z the day before.
    assert_eq!(
        start,
        DateTime::parse_from_rfc3339("2026-03-28T23:00:00Z")
            .unwrap()
            .timestamp_micros()
    );
    let local = b.column(8).as_primitive::<Date32Type>().value(0);
    assert_eq!(local, date("2026-03-29"));
    assert_eq!(b.column(9).as_primitive::<Decimal128Type>().value(0), 1234);
    assert_eq!(
        b.column(7)
            .as_primitive::<arrow::datatypes::Int32Type>()
            .value(0),
        60
    );
}

#[test]
fn local_date_follows_the_tenant_calendar_across_dst() {
    // 2026-10-25 is a 25-hour day in Oslo: 2026-10-24T22:00Z .. 2026-10-25T23:00Z.
    let cases = [
        ("2026-10-24T21:45:00Z", "2026-10-24"),
        ("2026-10-24T22:00:00Z", "2026-10-25"),
        ("2026-10-25T00:00:00Z", "2026-10-25"), // first 02:00 local
        ("2026-10-25T01:00:00Z", "2026-10-25"), // second 02:00 local
        ("2026-10-25T22:45:00Z", "2026-10-25"),
        ("2026-10-25T23:00:00Z", "2026-10-26"),
        // 2026-03-29 is 23 hours: 2026-03-28T23:00Z .. 2026-03-29T22:00Z.
        ("2026-03-28T22:45:00Z", "2026-03-28"),
        ("2026-03-28T23:00:00Z", "2026-03-29"),
        ("2026-03-29T21:45:00Z", "2026-03-29"),
        ("2026-03-29T22:00:00Z", "2026-03-30"),
    ];
    for (start, expected) in cases {
        let out = decode_texts(&[&with("start", &format!("\"{start}\""))]);
        let got = out.batch.column(8).as_primitive::<Date32Type>().value(0);
        assert_eq!(got, date(expected), "{start}");
    }
}

#[test]
fn a_retired_tenant_accepts_no_new_readings() {
    let records = [RawRecord {
        partition: 0,
        offset: 0,
        payload: Some(GOOD.as_bytes()),
        replay_tag: None,
    }];
    let out = decoder_with_retired(&["oslo"]).decode(&records, &ctx());
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.dead_letters[0].reason, Reason::UnknownTenant);
    assert!(out.dead_letters[0].detail.contains("retired"));
    let out = decoder_with_retired(&["acme"]).decode(&records, &ctx());
    assert_eq!(out.batch.num_rows(), 1);
}

#[test]
fn bad_records_become_dead_letters_with_reasons() {
    let cases: Vec<(String, Reason)> = vec![
        ("{not json".into(), Reason::MalformedJson),
        ("[1,2,3]".into(), Reason::NotAnObject),
        ("\"just a string\"".into(), Reason::NotAnObject),
        (with("schema", "\"reading/v2\""), Reason::UnsupportedSchema),
        (with("tenant", "\"nobody\""), Reason::UnknownTenant),
        (without("device_id"), Reason::MissingField),
        (without("value"), Reason::MissingField),
        (without("start"), Reason::MissingField),
        (with("value", "\"1.5\""), Reason::WrongType),
        (with("value", "null"), Reason::WrongType),
        (with("device_id", "42"), Reason::WrongType),
        (with("meter_id", "[1]"), Reason::WrongType),
        (with("pii", "\"Kari\""), Reason::WrongType),
        (with("value", "-1"), Reason::NegativeValue),
        (with("value", "1e300"), Reason::InvalidValue),
        (with("quantity", "\"plutonium\""), Reason::InvalidValue),
        (with("direction", "\"sideways\""), Reason::InvalidValue),
        (with("resolution", "\"PT5M\""), Reason::InvalidValue),
        (with("unit", "\"MWh\""), Reason::InvalidValue),
        (with("quality", "\"guessed\""), Reason::InvalidValue),
        (with("device_id", "\"\""), Reason::InvalidValue),
        (
            with("start", "\"2026-03-29T01:00:00\""),
            Reason::InvalidTimestamp,
        ),
        (with("version", "\"yesterday\""), Reason::InvalidTimestamp),
        (
            GOOD.replacen(
                "\"tenant\":\"oslo\"",
                "\"tenant\":\"oslo\",\"tenant\":\"oslo\"",
                1,
            ),
            Reason::MalformedJson,
        ),
        ("[".repeat(10_000), Reason::MalformedJson),
    ];
    let texts: Vec<&str> = cases.iter().map(|(t, _)| t.as_str()).collect();
    let out = decode_texts(&texts);
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.dead_letters.len(), cases.len());
    for (dl, (_, expected)) in out.dead_letters.iter().zip(&cases) {
        assert_eq!(dl.reason, *expected, "offset {}: {}", dl.offset, dl.detail);
        assert!(!dl.detail.contains("Kari"), "{}", dl.detail);
        assert!(!dl.detail.contains("plutonium"), "{}", dl.detail);
        assert!(!dl.detail.contains("dev-000123"), "{}", dl.detail);
    }
}

#[test]
fn size_utf8_and_empty_payloads_are_dead_letters() {
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    let not_utf8: &[u8] = &[b'{', 0xff, 0xfe, b'}'];
    let records = [
        RawRecord {
            partition: 1,
            offset: 10,
            payload: Some(big.as_bytes()),
            replay_tag: None,
        },
        RawRecord {
            partition: 1,
            offset: 11,
            payload: Some(not_utf8),
            replay_tag: None,
        },
        RawRecord {
            partition: 1,
            offset: 12,
            payload: None,
            replay_tag: None,
        },
        RawRecord {
            partition: 1,
            offset: 13,
            payload: Some(GOOD.as_bytes()),
            replay_tag: None,
        },
    ];
    let out = decoder().decode(&records, &ctx());
    let reasons: Vec<Reason> = out.dead_letters.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [Reason::TooLarge, Reason::NotUtf8, Reason::EmptyPayload]
    );
    assert!(out.dead_letters.iter().all(|d| d.payload.is_none()));
    assert_eq!(out.dead_letters[0].payload_bytes, big.len() as u64);
    assert_eq!(out.batch.num_rows(), 1);
    let offsets = out
        .batch
        .column(16)
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(offsets.value(0), 13);
}

#[test]
fn public_dead_letter_payloads_keep_no_identifiers_or_pii() {
    let bad = with("value", "-5");
    let out = decode_texts(&[&bad]);
    let dl = &out.dead_letters[0];
    let payload = dl.payload.as_deref().unwrap();
    for secret in [
        "dev-000123",
        "707057500000000018",
        "acct-42",
        "Kari",
        "kari@",
        "battery",
    ] {
        assert!(!payload.contains(secret), "{secret} in {payload}");
    }
    let v: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(v["redacted"], true);
    assert_eq!(v["device_id"].as_str().unwrap().len(), 32);
    assert_eq!(v["value"], -5);
    assert_eq!(dl.tenant.as_deref(), Some("oslo"));
}

#[test]
fn private_dead_letter_payloads_keep_ids_but_never_pii() {
    let bad = with("tenant", "\"acme\"").replace("1.234", "-1.234");
    let out = decode_texts(&[&bad]);
    let payload = out.dead_letters[0].payload.as_deref().unwrap();
    assert!(payload.contains("dev-000123"));
    assert!(payload.contains("acct-42"));
    assert!(!payload.contains("Kari"));
}

#[test]
fn optional_fields_may_be_null_or_absent() {
    let mut v: Value = serde_json::from_str(GOOD).unwrap();
    for f in [
        "meter_id",
        "direction",
        "version",
        "area",
        "status",
        "subject",
        "pii",
    ] {
        v[f] = Value::Null;
    }
    let a = v.to_string();
    for f in [
        "meter_id",
        "direction",
        "version",
        "area",
        "status",
        "subject",
        "pii",
    ] {
        v.as_object_mut().unwrap().remove(f);
    }
    let b = v.to_string();
    let out = decode_texts(&[&a, &b]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(out.batch.num_rows(), 2);
    assert_eq!(out.batch.column(5).as_string::<i32>().value(0), "import");
    assert!(out.batch.column(2).is_null(1));
}

#[test]
fn escaped_strings_decode() {
    let text = GOOD.replace("dev-000123", "dev-\\u00e6\\\"q");
    let out = decode_texts(&[&text]);
    assert_eq!(out.batch.column(1).as_string::<i32>().value(0), "dev-æ\"q");
}

#[test]
fn special_category_fields_are_found_while_parsing_and_removed() {
    let mut nested: Value = serde_json::from_str(GOOD).unwrap();
    nested["status"] = serde_json::json!({"battery": 1, "nested": [{"Religion": "secret-a"}]});
    let mut top: Value = serde_json::from_str(GOOD).unwrap();
    top["healthCondition"] = serde_json::json!("secret-b");
    top["start"] = serde_json::json!("2026-03-29T02:00:00+02:00");
    let mut dead: Value = serde_json::from_str(GOOD).unwrap();
    dead["tenant"] = serde_json::json!("acme");
    dead["value"] = serde_json::json!(-1);
    dead["extra"] = serde_json::json!({"political_opinion": "secret-c", "battery": 2});
    let out = decode_texts(&[&nested.to_string(), &top.to_string(), &dead.to_string()]);
    assert_eq!(out.batch.num_rows(), 2);
    assert_eq!(out.sensitive.special_category, 3);
    let flags = out
        .batch
        .column_by_name("flags")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    assert!(flags
        .values()
        .iter()
        .all(|f| f & flags::SENSITIVE_REMOVED != 0));
    let dl = &out.dead_letters[0];
    assert_eq!(dl.reason, Reason::NegativeValue);
    let payload = dl.payload.as_deref().unwrap();
    assert!(
        !payload.contains("secret-c") && !payload.contains("political"),
        "{payload}"
    );
    assert!(
        payload.contains("battery"),
        "private payloads keep the rest of an unknown field"
    );
}

#[test]
fn national_ids_are_found_while_parsing_in_every_position() {
    let id = (0..1000)
        .find_map(|ind| crate::ids::with_check_digits(&format!("150387{ind:03}")))
        .unwrap();
    let n: u64 = id.parse().unwrap();
    let escaped: String = id.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let exponent = format!("{}.{}e10", &id[..1], &id[1..]);
    let mut texts = Vec::new();
    for (i, (field, value)) in [
        ("subject", format!("\"x {id}\"")),
        ("area", format!("\"{id}\"")),
        ("status", format!("{{\"note\":\"{id}\"}}")),
        ("status", format!("{{\"n\":[1,{n}]}}")),
        ("status", format!("{{\"n\":-{n}}}")),
        ("status", format!("{{\"n\":{exponent}}}")),
        ("pii", format!("{{\"{id}\":1}}")),
        ("extra", format!("\"{escaped}\"")),
    ]
    .iter()
    .enumerate()
    {
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        v["start"] = serde_json::json!(format!("2026-03-29T{:02}:00:00Z", i + 3));
        let mut text = v.to_string();
        // Insert the raw JSON text of the field (keeps escapes and number notation).
        text.insert_str(1, &format!("\"{field}\":{value},"));
        let text = text.replacen(&format!(",\"{field}\":"), &format!(",\"{field}_orig\":"), 1);
        texts.push(text);
    }
    let mut dev: Value = serde_json::from_str(GOOD).unwrap();
    dev["device_id"] = serde_json::json!(format!("dev-{id}"));
    texts.push(dev.to_string());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = decode_texts(&refs);
    assert_eq!(out.batch.num_rows(), 8, "{:?}", out.dead_letters);
    assert_eq!(out.dead_letters.len(), 1);
    assert_eq!(out.dead_letters[0].reason, Reason::SensitiveIdentifier);
    assert!(out.sensitive.fodselsnummer >= 9, "{:?}", out.sensitive);
    let flags = out
        .batch
        .column_by_name("flags")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    assert!(flags
        .values()
        .iter()
        .all(|f| f & flags::SENSITIVE_REMOVED != 0));
    for col in ["subject", "area", "device_id", "meter_id"] {
        let c = out.batch.column_by_name(col).unwrap().as_string::<i32>();
        assert!(c.iter().flatten().all(|v| !v.contains(&id[..10])), "{col}");
    }
    let payload = out.dead_letters[0].payload.as_deref().unwrap_or_default();
    assert!(!payload.contains(&id[..10]));
}

#[test]
fn every_contract_field_is_recognized_in_order() {
    for (i, name) in FIELDS.iter().enumerate() {
        assert_eq!(field_index(name), Some(i), "{name}");
    }
    assert_eq!(field_index("Tenant"), None);
    assert_eq!(field_index("tenant_"), None);
}

/// GOOD for the private tenant at hour `h` of 2026-03-29 (UTC), with `fields`
/// (raw JSON text, escapes and number notation kept) in place of GOOD's fields of
/// the same names.
fn private_reading(h: u32, value: &str, fields: &str) -> String {
    let mut v: Value = serde_json::from_str(GOOD).unwrap();
    let replaced: Value = serde_json::from_str(&format!("{{{fields}}}")).unwrap();
    for key in replaced.as_object().unwrap().keys() {
        v.as_object_mut().unwrap().remove(key);
    }
    v["tenant"] = serde_json::json!("acme");
    v["start"] = serde_json::json!(format!("2026-03-29T{h:02}:00:00Z"));
    v["value"] = serde_json::from_str(value).unwrap();
    let text = v.to_string();
    format!("{{{fields},{}", &text[1..])
}

fn flagged(out: &DecodeOutput) -> bool {
    let flags = out
        .batch
        .column_by_name("flags")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    flags
        .values()
        .iter()
        .all(|f| f & flags::SENSITIVE_REMOVED != 0)
}

fn stored_text(out: &DecodeOutput) -> String {
    let mut text = String::new();
    for col in ["device_id", "meter_id", "subject", "area"] {
        let c = out.batch.column_by_name(col).unwrap().as_string::<i32>();
        for v in c.iter().flatten() {
            text.push_str(v);
            text.push('\n');
        }
    }
    for dl in &out.dead_letters {
        text.push_str(dl.payload.as_deref().unwrap_or_default());
        text.push_str(&dl.detail);
        text.push('\n');
    }
    text
}

#[test]
fn formatted_national_ids_in_any_string_of_a_private_tenant_are_removed() {
    // Hand-computed vectors (see `ids::vectors`), in the forms people write them.
    let texts = [
        private_reading(1, "1.5", r#""area":"010170 12343""#),
        private_reading(2, "1.5", r#""status":{"note":"eier 41.01.70-56733"}"#),
        private_reading(3, "1.5", r#""kommentar":"ring 12.52.85\u002067892""#),
        private_reading(4, "1.5", r#""subject":"kunde 150387-12486""#),
        private_reading(
            5,
            "-1",
            r#""kommentar":"05.03.91-32100","note":"71039945651""#,
        ),
        private_reading(6, "-1", r#""area":"014170 23425""#),
    ];
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = decode_texts(&refs);
    assert_eq!(out.batch.num_rows(), 4, "{:?}", out.dead_letters);
    assert_eq!(out.dead_letters.len(), 2);
    assert!(flagged(&out));
    assert!(out.batch.column_by_name("area").unwrap().is_null(0));
    let stored = stored_text(&out);
    for secret in [
        "12343", "56733", "67892", "12486", "32100", "45651", "23425",
    ] {
        assert!(!stored.contains(secret), "{secret} in {stored}");
    }
    let s = out.sensitive;
    assert_eq!(
        (s.fodselsnummer, s.d_number, s.h_number),
        (3, 2, 2),
        "{s:?}"
    );
}

#[test]
fn a_national_id_sent_as_a_ten_digit_number_is_removed() {
    // 01017012343, 01417023425 and 05039132100 without their leading 0.
    let texts = [
        private_reading(
            1,
            "1.5",
            r#""status":{"n":1017012343},"extra":[1417023425]"#,
        ),
        private_reading(
            2,
            "-1",
            r#""extra":{"ids":[5039132100,3]},"more":1017012343.0"#,
        ),
        // Not national ids: an invalid number, a 10-digit string.
        private_reading(3, "1.5", r#""extra":1017012345,"code":"1017012343""#),
    ];
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = decode_texts(&refs);
    assert_eq!(out.batch.num_rows(), 2, "{:?}", out.dead_letters);
    let flags = out
        .batch
        .column_by_name("flags")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    assert_ne!(flags.value(0) & flags::SENSITIVE_REMOVED, 0);
    assert_eq!(flags.value(1) & flags::SENSITIVE_REMOVED, 0);
    let payload = out.dead_letters[0].payload.as_deref().unwrap();
    for secret in ["5039132100", "1017012343"] {
        assert!(!payload.contains(secret), "{secret} in {payload}");
    }
    assert!(payload.contains("\"ids\":[3]"), "{payload}");
    let s = out.sensitive;
    assert_eq!(
        (s.fodselsnummer, s.d_number, s.h_number),
        (3, 0, 1),
        "{s:?}"
    );
}

#[test]
fn national_id_field_names_are_removed_even_when_the_deny_list_is_replaced() {
    let config = DecodeConfig {
        sensitive: SensitiveScanner::new(["shoe_size".to_owned()]),
        ..DecodeConfig::default()
    };
    let mut decoder = Decoder::new(config, decoder().tenants().clone(), None);
    let texts = [
        private_reading(
            1,
            "1.5",
            r#""fnr":"secret-a","status":{"Fødselsnummer":"secret-b"}"#,
        ),
        private_reading(
            2,
            "-1",
            r#""personnummer":{"v":"secret-c"},"D-nummer":"secret-d""#,
        ),
        private_reading(
            3,
            "-1",
            r#""extra":{"pnr":17,"foedselsnummer":[1]},"ok":"kept""#,
        ),
    ];
    let records: Vec<RawRecord> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| RawRecord {
            partition: 0,
            offset: i as i64,
            payload: Some(t.as_bytes()),
            replay_tag: None,
        })
        .collect();
    let out = decoder.decode(&records, &ctx());
    assert_eq!(out.batch.num_rows(), 1, "{:?}", out.dead_letters);
    assert!(flagged(&out));
    let stored = stored_text(&out);
    for secret in ["secret", "nummer", "fnr", "pnr"] {
        assert!(!stored.contains(secret), "{secret} in {stored}");
    }
    let last: Value =
        serde_json::from_str(out.dead_letters[1].payload.as_deref().unwrap()).unwrap();
    assert_eq!(last["extra"], serde_json::json!({}));
    assert_eq!(last["ok"], "kept");
    let s = out.sensitive;
    assert_eq!(
        (s.fodselsnummer, s.d_number, s.special_category),
        (5, 1, 0),
        "{s:?}"
    );
}

#[test]
fn private_dead_letter_payloads_keep_no_status() {
    let bad = private_reading(
        1,
        "-1",
        r#""status":{"battery":0.9,"firmware":"fw-7.1","note":"door code 4411"}"#,
    );
    let out = decode_texts(&[&bad]);
    let payload = out.dead_letters[0].payload.as_deref().unwrap();
    let v: Value = serde_json::from_str(payload).unwrap();
    assert!(v.get("status").is_none(), "{payload}");
    for secret in ["battery", "fw-7.1", "door code"] {
        assert!(!payload.contains(secret), "{secret} in {payload}");
    }
    // What replay needs is all there.
    assert_eq!(v["device_id"], "dev-000123");
    assert_eq!(v["value"], -1);
}

/// Regression: this value was stored as `0.000` (release) or panicked (debug).
#[test]
fn value_1e9223372036854775807_is_an_invalid_value_dead_letter() {
    let text = GOOD.replace("\"value\":1.234", "\"value\":1e9223372036854775807");
    let out = decode_texts(&[&text]);
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.dead_letters[0].reason, Reason::InvalidValue);
    assert!(out.dead_letters[0].detail.contains("`value`"));
}

/// `text` with `value` replaced by the raw JSON number `number`.
fn with_number(text: &str, number: &str) -> String {
    text.replace("\"value\":1.234", &format!("\"value\":{number}"))
}

/// The same payload, made to take the serde path (an escape in `device_id`).
fn via_serde(text: &str) -> String {
    let text = text.replace("\"dev-000123\"", "\"dev-\\u0030000123\"");
    assert!(fast::parse(&text, &SensitiveScanner::default()).is_none());
    text
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

    /// Through both parsers, any JSON number is stored as its exact value rounded
    /// half to even at 3 decimals (independent reference), or refused.
    #[test]
    fn any_number_is_stored_exactly_or_refused_on_both_decode_paths(
        number in crate::decimal::reference::json_number()
    ) {
        let fast_text = with_number(GOOD, &number);
        proptest::prop_assert!(fast::parse(&fast_text, &SensitiveScanner::default()).is_some());
        let texts = [fast_text.clone(), via_serde(&fast_text)];
        let out = decode_texts(&[&texts[0], &texts[1]]);
        // A digit run that happens to be a national id is removed, not stored.
        proptest::prop_assume!(out.sensitive.total() == 0);
        match crate::decimal::reference::thousandths(&number) {
            Ok(units) if units >= 0 => {
                proptest::prop_assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
                let stored = out.batch.column(9).as_primitive::<Decimal128Type>();
                proptest::prop_assert_eq!(stored.value(0), units);
                proptest::prop_assert_eq!(stored.value(1), units);
            }
            expected => {
                proptest::prop_assert_eq!(out.batch.num_rows(), 0);
                let reason = match expected {
                    Ok(_) => Reason::NegativeValue,
                    Err(_) => Reason::InvalidValue,
                };
                for dl in &out.dead_letters {
                    proptest::prop_assert_eq!(dl.reason, reason);
                    proptest::prop_assert!(dl.detail.starts_with("field `value`:"), "{}", dl.detail);
                }
            }
        }
    }
}

/// Decided: `-0` and negative values that round to zero are stored as 0.000, not
/// dead-lettered as negative (a reading of zero has no sign).
#[test]
fn negative_zero_and_negatives_rounding_to_zero_are_stored_as_zero() {
    let numbers = [
        "-0",
        "-0.0",
        "-0.0001",
        "-0.0005",
        "-0e-9223372036854775807",
    ];
    let texts: Vec<String> = numbers.iter().map(|n| with_number(GOOD, n)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = decode_texts(&refs);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let stored = out.batch.column(9).as_primitive::<Decimal128Type>();
    assert!(stored.values().iter().all(|v| *v == 0));
    let out = decode_texts(&[&with_number(GOOD, "-0.0006")]);
    assert_eq!(out.dead_letters[0].reason, Reason::NegativeValue);
}

#[test]
fn exact_edges_of_the_range_are_stored_rounded() {
    let numbers = ["1e-9223372036854775807", "18446744073709551617e-18"];
    let texts: Vec<String> = numbers.iter().map(|n| with_number(GOOD, n)).collect();
    let out = decode_texts(&[&texts[0], &texts[1], &via_serde(&texts[1])]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let stored = out.batch.column(9).as_primitive::<Decimal128Type>();
    assert_eq!(stored.values().to_vec(), [0, 18_447, 18_447]);
}

/// A number literal of 60 KB (under the 64 KiB message limit) is decided in one
/// pass: refused where it leaves the range, with a detail that does not grow with it.
#[test]
fn a_60_kb_number_literal_is_refused_with_a_short_detail() {
    let zeros = "0".repeat(60_000);
    let nines = "9".repeat(60_000);
    let huge = format!("1{zeros}");
    let value_texts = [
        with_number(GOOD, &huge),
        via_serde(&with_number(GOOD, &huge)),
        with_number(GOOD, &format!("1e{nines}")),
        with_number(GOOD, &format!("-{huge}.5")),
    ];
    let elsewhere = [
        GOOD.replace("\"battery\":0.9", &format!("\"battery\":{huge}")),
        GOOD.replace("\"extra\":\"ignored\"", &format!("\"extra\":{huge}")),
        GOOD.replace("\"extra\":\"ignored\"", &format!("\"extra\":-1e{nines}")),
    ];
    let refs: Vec<&str> = value_texts
        .iter()
        .chain(&elsewhere)
        .map(String::as_str)
        .collect();
    let out = decode_texts(&refs);
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.dead_letters.len(), refs.len());
    for dl in &out.dead_letters[..value_texts.len()] {
        assert_eq!(dl.reason, Reason::InvalidValue, "{}", dl.detail);
        assert!(dl.detail.starts_with("field `value`:"), "{}", dl.detail);
    }
    for dl in &out.dead_letters[value_texts.len()..] {
        // Outside `value`, numbers are 64-bit floats; this one is beyond them.
        assert_eq!(dl.reason, Reason::MalformedJson, "{}", dl.detail);
        assert!(dl.detail.contains("64-bit float"), "{}", dl.detail);
    }
    for dl in &out.dead_letters {
        assert!(dl.detail.len() < 200, "{}", dl.detail);
        assert!(!dl.payload.as_deref().unwrap_or_default().contains(&zeros));
    }
    // A 60 KB literal that rounds into the range is stored, rounded.
    let long_fraction = with_number(GOOD, &format!("1.{zeros}1"));
    let out = decode_texts(&[&long_fraction, &via_serde(&long_fraction)]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let stored = out.batch.column(9).as_primitive::<Decimal128Type>();
    assert_eq!(stored.values().to_vec(), [1000, 1000]);
}

/// 1,000,000 readings, each in its own 15-minute slot, spread over 28 years and
/// decoded 10,000 at a time: the local-date cache never holds more than its bound,
/// and every local date is still the tenant's calendar date.
#[test]
fn the_local_date_cache_stays_bounded_over_a_million_slots() {
    const RECORDS: usize = 1_000_000;
    const BATCH: usize = 10_000;
    const SLOT_SECS: i64 = 15 * 60;
    let base = DateTime::parse_from_rfc3339("1990-01-01T00:00:00Z")
        .unwrap()
        .timestamp();
    let mut decoder = decoder();
    let mut largest = 0;
    for first in (0..RECORDS).step_by(BATCH) {
        // A permutation of 0..RECORDS (104729 is prime to 10^6): distinct slots,
        // every batch spread over all the years.
        let starts: Vec<i64> = (first..first + BATCH)
            .map(|i| base + (i as i64 * 104_729) % RECORDS as i64 * SLOT_SECS)
            .collect();
        let payloads: Vec<String> = starts
            .iter()
            .map(|s| {
                let start = DateTime::from_timestamp(*s, 0).unwrap();
                format!(
                    r#"{{"schema":"reading/v1","tenant":"oslo","device_id":"d","quantity":"electricity","start":"{}","resolution":"PT15M","value":1,"unit":"kWh","quality":"measured"}}"#,
                    start.format("%Y-%m-%dT%H:%M:%SZ")
                )
            })
            .collect();
        let records: Vec<RawRecord> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord {
                partition: 0,
                offset: (first + i) as i64,
                payload: Some(p.as_bytes()),
                replay_tag: None,
            })
            .collect();
        let out = decoder.decode(&records, &ctx());
        assert_eq!(
            out.batch.num_rows(),
            BATCH,
            "{:?}",
            out.dead_letters.first()
        );
        let cached = decoder.cached_local_dates();
        assert!(cached <= MAX_CACHED_LOCAL_DATES, "{cached} after {first}");
        largest = largest.max(cached);
        let dates = out.batch.column(8).as_primitive::<Date32Type>();
        for row in (0..BATCH).step_by(997) {
            let local = DateTime::from_timestamp(starts[row], 0)
                .unwrap()
                .with_timezone(&chrono_tz::Europe::Oslo)
                .date_naive();
            assert_eq!(dates.value(row), days_since_epoch(local), "{}", starts[row]);
        }
    }
    // The cache was used across batches (not emptied per call) up to its bound.
    assert!(largest > BATCH, "{largest}");
}

#[test]
fn may_be_replay_holds_for_every_spelling_of_redacted() {
    // The decoder looks at the replay tag only when `redacted` is true; a source
    // that skips headers for other payloads must never skip one of these.
    let plain = GOOD.replace(r#""extra":"ignored""#, r#""redacted":true"#);
    let escaped = GOOD.replace(r#""extra":"ignored""#, r#""re\u0064acted":true"#);
    let escaped_upper = GOOD.replace(r#""extra":"ignored""#, r#""\u0072edacted":true"#);
    for payload in [&plain, &escaped, &escaped_upper] {
        assert!(may_be_replay(payload.as_bytes()), "{payload}");
    }
    // A reading without the word or an escape needs no header.
    assert!(!may_be_replay(GOOD.as_bytes()));
    assert!(!may_be_replay(b""));
}
