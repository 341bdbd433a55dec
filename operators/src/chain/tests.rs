//! Dead letters of public tenants are pseudonymized under the key their readings
//! use (the epoch of the reading's local date), so a replayed dead letter carries
//! the pseudonym the reading would have had; where no epoch key applies (a tenant
//! not configured, an epoch closed) under the day's short-lived dead-letter key,
//! never under the master key, whose pseudonyms would link forever.

use arrow::array::{Array, AsArray, RecordBatch};
use chrono::NaiveDate;
use serde_json::Value;

use super::Chain;
use crate::decode::{DecodeConfig, RawRecord};
use crate::epoch::{Epoch, Rotation};
use crate::operator::OperatorContext;
use crate::pseudonym::{IdKind, MasterKey, Pseudonymizer};
use crate::tenant::{Deployment, Rules, Tenant, TenantRegistry};

/// 2026-11-25T00:00:00Z
const NOW: i64 = 1_795_564_800_000_000;
const METER: &str = "707057500000000018";
const MASTER: [u8; 32] = [7; 32];

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

/// A public tenant whose keys rotate monthly, with October to December open,
/// and the dead-letter keys of 25 and 26 November (as the runner loads them).
fn chain(day_keys: [u8; 32]) -> Chain {
    let tenants = TenantRegistry::new([Tenant {
        id: "oslo".into(),
        deployment: Deployment::Public,
        timezone: chrono_tz::Europe::Oslo,
        rules: Rules {
            key_rotation: Rotation::Monthly,
            ..Rules::default()
        },
    }])
    .unwrap();
    let p = Pseudonymizer::new(MasterKey::from_bytes(MASTER));
    let mut chain = Chain::new(DecodeConfig::default(), tenants, Some(p)).unwrap();
    chain.set_epoch_keys(
        "oslo",
        &[
            (Epoch::Month(2026, 10), [1; 32]),
            (Epoch::Month(2026, 11), [2; 32]),
            (Epoch::Month(2026, 12), [3; 32]),
        ],
    );
    chain.set_dead_letter_keys(&[(day(25), day_keys), (day(26), [0xdd; 32])]);
    chain
}

fn reading(tenant: &str, start: &str, value: &str) -> String {
    format!(
        r#"{{"schema":"reading/v1","tenant":"{tenant}","device_id":"dev-1","meter_id":"{METER}",
        "quantity":"electricity","start":"{start}","resolution":"PT1H","value":{value},
        "unit":"kWh","quality":"measured"}}"#
    )
}

struct Out {
    readings: RecordBatch,
    /// (offset, payload) of each dead letter.
    dead: Vec<(i64, Value)>,
}

fn run(chain: &mut Chain, texts: &[String]) -> Out {
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
    let out = chain
        .process(&records, &OperatorContext { now_micros: NOW })
        .unwrap();
    let dead = out
        .dead_letters
        .iter()
        .map(|d| {
            let payload = d.payload.as_deref().expect("a redacted payload");
            (d.offset, serde_json::from_str(payload).unwrap())
        })
        .collect();
    Out {
        readings: out.readings,
        dead,
    }
}

fn stored(batch: &RecordBatch, column: &str) -> Vec<String> {
    let c = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"))
        .as_string::<i32>();
    (0..c.len()).map(|i| c.value(i).to_owned()).collect()
}

fn field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {v}"))
        .to_owned()
}

#[test]
fn a_dead_letter_carries_the_pseudonyms_of_its_readings_epoch() {
    let mut c = chain([0xaa; 32]);
    // Valid readings in October and November (local dates), and rejected ones
    // of the same meter: a negative value (decode) and a value beyond the
    // physical maximum (validate), on the same local dates. 2026-10-31T23:30Z
    // is 1 November in Oslo.
    let out = run(
        &mut c,
        &[
            reading("oslo", "2026-10-20T10:00:00Z", "1.5"),
            reading("oslo", "2026-10-31T23:00:00Z", "1.5"),
            reading("oslo", "2026-10-20T11:00:00Z", "-5"),
            reading("oslo", "2026-10-31T23:00:00Z", "99999"),
        ],
    );
    let meters = stored(&out.readings, "meter");
    let devices = stored(&out.readings, "device");
    assert_eq!(meters.len(), 2);
    assert_ne!(meters[0], meters[1], "one pseudonym per epoch");
    assert_eq!(out.dead.len(), 2);
    assert_eq!(field(&out.dead[0].1, "meter_id"), meters[0]);
    assert_eq!(field(&out.dead[0].1, "device_id"), devices[0]);
    assert_eq!(field(&out.dead[1].1, "meter_id"), meters[1]);
    assert_eq!(field(&out.dead[1].1, "device_id"), devices[1]);
}

#[test]
fn a_dead_letter_without_a_date_takes_the_current_epoch() {
    let mut c = chain([0xaa; 32]);
    // NOW is 25 November: a reading of November sets the expectation.
    let out = run(
        &mut c,
        &[
            reading("oslo", "2026-11-24T20:00:00Z", "1.5"),
            reading("oslo", "25 November", "1.5"),
        ],
    );
    assert_eq!(
        field(&out.dead[0].1, "meter_id"),
        stored(&out.readings, "meter")[0]
    );
}

#[test]
fn without_an_epoch_key_a_dead_letter_uses_the_days_key_never_the_master_key() {
    let master_pseudonym =
        Pseudonymizer::new(MasterKey::from_bytes(MASTER)).pseudonym("oslo", IdKind::Meter, METER);
    let texts = [
        // A tenant not configured, and an invalid reading of a closed epoch.
        reading("bergen", "2026-11-20T10:00:00Z", "1.5"),
        reading("oslo", "2026-06-20T10:00:00Z", "-5"),
        // The same tenant's open epoch: not the day key.
        reading("oslo", "2026-11-20T10:00:00Z", "-5"),
    ];
    let first = run(&mut chain([0xaa; 32]), &texts);
    let other_day_key = run(&mut chain([0xbb; 32]), &texts);
    for i in 0..2 {
        let p = field(&first.dead[i].1, "meter_id");
        assert_eq!(p.len(), 32);
        assert!(p.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(p, master_pseudonym);
        assert_ne!(p, field(&first.dead[2].1, "meter_id"));
        assert_ne!(
            p,
            field(&other_day_key.dead[i].1, "meter_id"),
            "the day's key decides"
        );
    }
    assert_eq!(
        field(&first.dead[2].1, "meter_id"),
        field(&other_day_key.dead[2].1, "meter_id")
    );
    // Not the master key's either for a tenant that is not configured.
    let bergen_master =
        Pseudonymizer::new(MasterKey::from_bytes(MASTER)).pseudonym("bergen", IdKind::Meter, METER);
    assert_ne!(field(&first.dead[0].1, "meter_id"), bergen_master);
}

#[test]
fn without_the_days_key_identifiers_are_removed() {
    let mut c = chain([0xaa; 32]);
    c.set_dead_letter_keys(&[]);
    let out = run(&mut c, &[reading("bergen", "2026-11-20T10:00:00Z", "1.5")]);
    let v = &out.dead[0].1;
    assert!(
        v.get("meter_id").is_none() && v.get("device_id").is_none(),
        "{v}"
    );
    assert!(!v.to_string().contains(METER));
}
