//! A generator of realistic `reading/v1` traffic, shared by `demo` and `simulate`.
//!
//! Meters belong to one public tenant (a utility) and one private tenant (a
//! commercial customer). Every fourth meter reports PT15M, the rest PT1H. Values
//! follow a household daily shape (night trough, morning and evening peaks) with
//! per-meter scale and noise; days follow the tenant's local calendar, so DST days
//! have 23 or 25 hours (92/100 quarters). Public readings carry `pii` (which must
//! never be stored); private readings carry a `subject`.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Tenant ids the generator uses (the demo configures them).
pub const PUBLIC_TENANT: &str = "oslo-utility";
pub const PRIVATE_TENANT: &str = "acme-industri";

/// Kinds of bad record the generator can mix in, each with its expected reason.
pub const BAD_KINDS: [(&str, &str); 6] = [
    ("malformed", "malformed_json"),
    ("unknown_tenant", "unknown_tenant"),
    ("missing_field", "missing_field"),
    ("wrong_type", "wrong_type"),
    ("negative_value", "negative_value"),
    ("naive_time", "invalid_timestamp"),
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorSpec {
    pub meters: usize,
    pub first_day: NaiveDate,
    pub days: u32,
    pub timezone: Tz,
    /// Bad records to mix in (spread evenly).
    pub bad: usize,
    pub seed: u64,
}

/// One message: key (the device) and JSON payload.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: String,
    pub payload: Vec<u8>,
    /// Expected dead-letter reason, for bad records.
    pub bad_reason: Option<&'static str>,
}

/// The generator's two tenants (Europe/Oslo): [`PUBLIC_TENANT`] and
/// [`PRIVATE_TENANT`]. Generated data has fixed dates, so readings of any age are
/// accepted (the rest of the validation rules are the defaults).
pub fn tenants() -> meterline_operators::TenantRegistry {
    use meterline_operators::{Deployment, Rules, Tenant, TenantRegistry};
    let rules = Rules {
        max_age_micros: 100 * 366 * 86_400 * 1_000_000,
        ..Rules::default()
    };
    TenantRegistry::new([
        Tenant {
            id: PUBLIC_TENANT.into(),
            deployment: Deployment::Public,
            timezone: chrono_tz::Europe::Oslo,
            rules: rules.clone(),
        },
        Tenant {
            id: PRIVATE_TENANT.into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Europe::Oslo,
            rules,
        },
    ])
    .expect("valid tenant ids")
}

/// A valid Norwegian GSRN for a serial: prefix 7070575000, 7 digits, GS1 check digit.
pub fn gsrn(serial: u32) -> String {
    let body = format!("7070575000{:07}", serial % 10_000_000);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i.is_multiple_of(2) { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Relative household load by local hour (mean about 1).
fn shape(hour: u32) -> f64 {
    const SHAPE: [f64; 24] = [
        0.55, 0.5, 0.48, 0.47, 0.48, 0.55, 0.8, 1.2, 1.35, 1.1, 0.95, 0.9, 0.9, 0.88, 0.9, 1.0,
        1.2, 1.5, 1.65, 1.55, 1.4, 1.2, 0.95, 0.7,
    ];
    SHAPE[hour as usize % 24]
}

/// The start of a local date as a UTC instant.
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let naive = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    tz.from_local_datetime(&naive)
        .earliest()
        .expect("midnight exists in European zones")
        .with_timezone(&Utc)
}

impl GeneratorSpec {
    /// Meter i: (tenant, device id, meter id, resolution minutes).
    pub fn meter(&self, i: usize) -> (&'static str, String, String, i64) {
        let tenant = if i.is_multiple_of(2) {
            PUBLIC_TENANT
        } else {
            PRIVATE_TENANT
        };
        let resolution = if i % 4 == 3 { 15 } else { 60 };
        (
            tenant,
            format!("dev-{i:06}"),
            gsrn(i as u32 + 1),
            resolution,
        )
    }

    /// The number of good readings [`generate`](Self::generate) produces.
    pub fn good_count(&self) -> usize {
        let start = local_midnight(self.timezone, self.first_day);
        let end = local_midnight(
            self.timezone,
            self.first_day + Duration::days(i64::from(self.days)),
        );
        let hours = ((end - start).num_minutes() / 60) as usize;
        (0..self.meters)
            .map(|i| {
                if self.meter(i).3 == 15 {
                    hours * 4
                } else {
                    hours
                }
            })
            .sum()
    }

    /// All messages, good and bad interleaved, in a deterministic order.
    pub fn generate(&self) -> Vec<Message> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let start = local_midnight(self.timezone, self.first_day);
        let end = local_midnight(
            self.timezone,
            self.first_day + Duration::days(i64::from(self.days)),
        );
        let mut out = Vec::with_capacity(self.good_count() + self.bad);
        // Time-major order, like live traffic: every meter's interval, then the next.
        let mut t = start;
        let scales: Vec<f64> = (0..self.meters)
            .map(|_| rng.random_range(0.4..2.5))
            .collect();
        while t < end {
            for (i, scale) in scales.iter().enumerate() {
                let (tenant, device, meter, res) = self.meter(i);
                let steps = if res == 15 { 4 } else { 1 };
                for q in 0..steps {
                    let start_q = t + Duration::minutes(q * res);
                    let local_hour = start_q.with_timezone(&self.timezone).hour();
                    let hourly = scale * shape(local_hour) * rng.random_range(0.8..1.2);
                    let value = (hourly / steps as f64 * 1000.0).round() / 1000.0;
                    out.push(self.reading(tenant, &device, &meter, start_q, res, value, i));
                }
            }
            t += Duration::hours(1);
        }
        if self.bad > 0 && !out.is_empty() {
            let stride = (out.len() / self.bad).max(1);
            for k in 0..self.bad {
                let kind = BAD_KINDS[k % BAD_KINDS.len()];
                let at = (k * stride + stride / 2).min(out.len());
                out.insert(at, self.bad_message(kind, k));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn reading(
        &self,
        tenant: &str,
        device: &str,
        meter: &str,
        start: DateTime<Utc>,
        resolution: i64,
        value: f64,
        i: usize,
    ) -> Message {
        let local = start.with_timezone(&self.timezone);
        let version = start + Duration::hours(30);
        let mut v = json!({
            "schema": "reading/v1",
            "tenant": tenant,
            "device_id": device,
            "meter_id": meter,
            "quantity": "electricity",
            "direction": "import",
            "start": local.to_rfc3339(),
            "resolution": if resolution == 15 { "PT15M" } else { "PT1H" },
            "value": value,
            "unit": "kWh",
            "quality": "measured",
            "version": version.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "area": "NO1",
            "status": { "battery": 0.87, "rssi": -71, "firmware": "3.2.1" },
        });
        if tenant == PUBLIC_TENANT {
            v["pii"] = json!({
                "name": format!("Resident {i}"),
                "email": format!("resident{i}@example.no"),
                "phone": format!("+47 9{:07}", i),
                "address": format!("Storgata {}, 0155 Oslo", i + 1),
                "ip": format!("10.0.{}.{}", i / 250, i % 250),
                "lat": 59.9139, "lon": 10.7522, "zip": "0155"
            });
        } else {
            v["subject"] = json!(format!("acct-{i}"));
        }
        Message {
            key: device.to_owned(),
            payload: v.to_string().into_bytes(),
            bad_reason: None,
        }
    }

    fn bad_message(&self, (kind, reason): (&str, &'static str), k: usize) -> Message {
        let good = |tenant: &str| {
            json!({
                "schema": "reading/v1", "tenant": tenant, "device_id": format!("bad-{k}"),
                "quantity": "electricity", "start": "2026-10-25T02:00:00+01:00",
                "resolution": "PT1H", "value": 1.0, "unit": "kWh", "quality": "measured"
            })
        };
        let payload = match kind {
            "malformed" => "{\"schema\": \"reading/v1\", \"tenant\": ".to_owned(),
            "unknown_tenant" => good("no-such-tenant").to_string(),
            "missing_field" => {
                let mut v = good(PUBLIC_TENANT);
                v.as_object_mut().map(|m| m.remove("value"));
                v.to_string()
            }
            "wrong_type" => {
                let mut v = good(PRIVATE_TENANT);
                v["value"] = json!("1.0");
                v.to_string()
            }
            "negative_value" => {
                let mut v = good(PUBLIC_TENANT);
                v["value"] = json!(-3.5);
                v.to_string()
            }
            _ => {
                let mut v = good(PRIVATE_TENANT);
                v["start"] = json!("2026-10-25T02:00:00");
                v.to_string()
            }
        };
        Message {
            key: format!("bad-{k}"),
            payload: payload.into_bytes(),
            bad_reason: Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsrns_have_valid_check_digits() {
        // Vector from shared domain facts: serial 1 -> 707057500000000018.
        assert_eq!(gsrn(1), "707057500000000018");
        assert_eq!(gsrn(2293981), "707057500022939815");
    }

    #[test]
    fn dst_days_have_25_and_23_hours() {
        let spec = |day: &str| GeneratorSpec {
            meters: 4, // three hourly meters and one quarter-hourly meter
            first_day: NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap(),
            days: 1,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: 1,
        };
        assert_eq!(spec("2026-10-25").good_count(), 3 * 25 + 100);
        assert_eq!(spec("2026-03-29").good_count(), 3 * 23 + 92);
        assert_eq!(spec("2026-06-01").generate().len(), 3 * 24 + 96);
    }

    #[test]
    fn bad_records_are_mixed_in() {
        let spec = GeneratorSpec {
            meters: 3,
            first_day: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            days: 1,
            timezone: chrono_tz::Europe::Oslo,
            bad: 6,
            seed: 1,
        };
        let msgs = spec.generate();
        assert_eq!(msgs.len(), spec.good_count() + 6);
        assert_eq!(msgs.iter().filter(|m| m.bad_reason.is_some()).count(), 6);
    }
}
