//! Shared fixtures for meterline's benchmarks (see `benches/`).
//!
//! Messages look like production `reading/v1` traffic: public and private tenants,
//! GSRNs, status objects, and `pii` on public readings.

use meterline_operators::{Deployment, MasterKey, Pseudonymizer, Tenant, TenantRegistry};

/// Two tenants: `oslo` (public) and `acme` (private).
pub fn tenants() -> TenantRegistry {
    TenantRegistry::new([
        Tenant {
            id: "oslo".into(),
            deployment: Deployment::Public,
            timezone: chrono_tz::Europe::Oslo,
            rules: meterline_operators::Rules::default(),
        },
        Tenant {
            id: "acme".into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Europe::Oslo,
            rules: meterline_operators::Rules::default(),
        },
    ])
    .expect("valid tenants")
}

pub fn pseudonymizer() -> Pseudonymizer {
    Pseudonymizer::new(MasterKey::from_bytes([42; 32]))
}

/// `n` messages from `meters` meters, hour after hour.
pub fn messages(n: usize, meters: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let meter = i % meters;
            let hour = i / meters;
            let public = meter.is_multiple_of(2);
            let tenant = if public { "oslo" } else { "acme" };
            let body = format!("70705750{meter:09}");
            let gsrn = format!(
                "{body}{}",
                meterline_operators::ids::gs1_check_digit(body.as_bytes())
            );
            let extra = if public {
                format!(
                    r#","pii":{{"name":"Resident {meter}","email":"r{meter}@example.no","ip":"10.0.0.{}"}}"#,
                    meter % 250
                )
            } else {
                format!(r#","subject":"acct-{meter}""#)
            };
            format!(
                r#"{{"schema":"reading/v1","tenant":"{tenant}","device_id":"dev-{meter:06}","meter_id":"{gsrn}","quantity":"electricity","direction":"import","start":"2026-01-{:02}T{:02}:00:00+01:00","resolution":"PT1H","value":{}.{:03},"unit":"kWh","quality":"measured","version":"2026-02-01T06:00:00Z","area":"NO1","status":{{"battery":0.87,"rssi":-71}}{extra}}}"#,
                1 + (hour / 24) % 28,
                hour % 24,
                i % 3,
                (i * 7919) % 1000
            )
            .into_bytes()
        })
        .collect()
}
