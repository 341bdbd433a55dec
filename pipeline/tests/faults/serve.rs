//! `meterline serve` on real infrastructure: a lake written by `meterline run`
//! from a tansu broker into S3 (moto), served over TLS, and read by real
//! clients (psql, and Python's psycopg with tokens made by PyJWT, an
//! implementation independent of meterline's).
//!
//! Three tenants: acme-industri and bergen-bedrift (private), oslo-utility
//! (public, 10 meters). In acme, subject `acct-a` owns meter A (its readings
//! carry the subject) and holds an Elhub consent on the shared meter from
//! N-40h (its readings carry no subject); `acct-b` owns meter B. bergen has a
//! subject with the same id `acct-a` on meter T. Every meter's values are its
//! own, so a row that leaks says whose it is.
//!
//! Checked: each role sees exactly the tables and rows of the role matrix (the
//! expected rows come from what the test produced, and for the aggregates from
//! a direct read of the lake with an explicit predicate); a suite of crafted
//! queries as an acme analyst and as `acct-a` returns nothing of another
//! tenant or subject; refused tokens (PyJWT: expired, beyond the leeway,
//! `alg: none`, an RS256 token on an HS256 server, wrong audience and issuer,
//! missing claims, an unknown tenant) get "authentication failed", the reason
//! in the log and no token in it; the statement timeout, the row limit, the
//! memory limit and a client's cancel request fail one query cleanly while the
//! server serves on; plaintext
//! and a listen address off loopback without TLS are refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, DurationRound, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Oslo;
use meterline::dev::generator::gsrn;
use meterline::dev::testkit::{free_port, unique_name, Process, TestCa};
use serde_json::{json, Value};

use crate::rig::{eventually_async, metric, scrape, serial, Rig, KEY_HEX};
use crate::traffic::{event, hourly, hours, send};
use crate::GRACE;

const ACME: &str = "acme-industri";
const BERGEN: &str = "bergen-bedrift";
const OSLO: &str = "oslo-utility";
const ISSUER: &str = "https://auth.test/";
const AUDIENCE: &str = "meterline";
const SECRET: &str = "a-test-secret-of-more-than-32-bytes-0123456789";

/// The Python with psycopg and PyJWT (scripts/test.sh makes it).
fn python() -> PathBuf {
    let path = std::env::var_os("METERLINE_PYTHON")
        .map(PathBuf::from)
        .expect(
            "METERLINE_PYTHON is not set: scripts/test.sh installs psycopg and PyJWT into a venv \
         and points it there",
        );
    assert!(
        path.exists(),
        "METERLINE_PYTHON {} does not exist",
        path.display()
    );
    path
}

/// Runs request batches through `sql_client.py`.
struct Client {
    port: u16,
    ca: PathBuf,
}

impl Client {
    fn run(&self, requests: &[Value]) -> Vec<Value> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/sql_client.py");
        let doc = json!({
            "host": "127.0.0.1", "port": self.port, "ca": self.ca,
            // Token times are relative to the moment the tokens are made.
            "now": meterline::dev::testkit::clock().now().timestamp(),
            "requests": requests,
        });
        let mut child = Command::new(python())
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python starts");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(doc.to_string().as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sql_client.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(results.len(), requests.len());
        results
    }

    fn one(&self, token: &Value, sql: &str) -> Value {
        self.run(&[json!({"token": token, "sql": sql})]).remove(0)
    }

    /// The rows of a query that must succeed.
    fn rows(&self, token: &Value, sql: &str) -> Vec<Vec<Value>> {
        let r = self.one(token, sql);
        assert!(r.get("error").is_none(), "{sql}: {}", r["error"]);
        rows_of(&r)
    }

    fn count(&self, token: &Value, sql: &str) -> i64 {
        let rows = self.rows(token, sql);
        rows[0][0].as_str().unwrap().parse().unwrap()
    }
}

fn rows_of(r: &Value) -> Vec<Vec<Value>> {
    r["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {r}"))
        .iter()
        .map(|row| row.as_array().unwrap().clone())
        .collect()
}

fn claims(tenant: &str, role: &str, sub: Option<&str>, meters: &[&str]) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "tenant": tenant, "role": role,
        "exp": {"now+": 3600}, "iat": {"now+": 0},
    });
    if let Some(s) = sub {
        c["sub"] = json!(s);
    }
    if !meters.is_empty() {
        c["meters"] = json!(meters);
    }
    c
}

fn hs(claims: Value) -> Value {
    json!({"alg": "HS256", "key": SECRET, "claims": claims})
}

/// The dates in the first column of a query over the lake.
async fn dates(rig: &Rig, sql: &str) -> Vec<NaiveDate> {
    let batches = rig.query(sql).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let a = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Date32Array>()
            .expect("a date column");
        out.extend((0..a.len()).map(|i| a.value_as_date(i).expect("a date")));
    }
    out
}

/// Local dates whose whole day lies at or after `from`.
fn whole_days_from(dates: &[NaiveDate], from: DateTime<Utc>) -> Vec<NaiveDate> {
    dates
        .iter()
        .copied()
        .filter(|d| {
            Oslo.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
                .earliest()
                .unwrap()
                .with_timezone(&Utc)
                >= from
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_enforces_the_role_matrix_for_real_clients_over_tls() {
    let _serial = serial().await;
    let mut rig = Rig::new(1);
    let subjects_topic = unique_name("subjects");
    rig.broker.create_topic(&subjects_topic, 1);
    let n = meterline::dev::testkit::clock()
        .now()
        .duration_trunc(hours(1))
        .unwrap();
    let m_a = gsrn(18_001);
    let m_b = gsrn(18_002);
    let m_shared = gsrn(18_003);
    let m_twin = gsrn(18_004);
    let public: Vec<String> = (0..10).map(|i| gsrn(18_100 + i)).collect();
    let from = n - hours(48);
    let shared_from = n - hours(40);

    // The lake, written by `meterline run`.
    let config = rig.config("serve18", None, "max_batch_rows = 1000");
    let ca = TestCa::generate();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ca.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let secret_file = config.with_file_name("jwt.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = free_port();
    let metrics_port = free_port();
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            r#"
[[tenants]]
id = "{BERGEN}"
deployment = "private"
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}

[privacy]
subject_events_topic = "{subjects_topic}"

[serve]
listen = "127.0.0.1:{port}"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
statement_timeout_secs = 5
max_result_rows = 1000
memory_limit_mib = 4
refresh_secs = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[serve.jwt]
hs256_secret_file = "{secret}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_secs = 60
"#,
            cert = ca.cert.display(),
            key = ca.key.display(),
            secret = secret_file.display(),
        );
    std::fs::write(&config, text).unwrap();

    let events = vec![
        event(
            "consent_granted",
            ACME,
            "acct-a",
            n - hours(50),
            json!({"purpose": "name", "email": "a@example.no", "name": "Acme A"}),
        ),
        event(
            "elhub_consent_granted",
            ACME,
            "acct-a",
            shared_from,
            json!({"meters": [m_shared]}),
        ),
        event(
            "consent_granted",
            ACME,
            "acct-b",
            n - hours(50),
            json!({"purpose": "name", "email": "b@example.no", "name": "Acme B"}),
        ),
        event(
            "consent_granted",
            BERGEN,
            "acct-a",
            n - hours(50),
            json!({"purpose": "name", "email": "twin@example.no", "name": "Bergen A"}),
        ),
    ];
    send(&rig, &subjects_topic, &events, None).await;
    let mut readings = hourly(ACME, &m_a, Some("acct-a"), from, 24, 0.101);
    readings.extend(hourly(ACME, &m_b, Some("acct-b"), from, 24, 0.202));
    readings.extend(hourly(ACME, &m_shared, None, from, 24, 0.303));
    readings.extend(hourly(BERGEN, &m_twin, Some("acct-a"), from, 24, 0.404));
    for m in &public {
        readings.extend(hourly(OSLO, m, None, from, 24, 0.5));
    }
    rig.produce(&readings).await;
    let mut run = rig.spawn("run", &config);
    eventually_async(
        "the lake and its aggregates",
        Duration::from_secs(240),
        || async {
            let counts = [
                ("readings", 336),
                ("consent_ledger", 4),
                ("subjects", 3),
                ("consumption_hourly", 336),
            ];
            let mut all = true;
            let mut seen = Vec::new();
            for (table, n) in counts {
                let c = rig
                    .try_count(&format!("SELECT count(*) FROM {table}"))
                    .await;
                seen.push(format!("{table}={c:?}"));
                all &= c == Ok(n);
            }
            for table in ["area_consumption_hourly", "consumption_monthly"] {
                let c = rig
                    .try_count(&format!("SELECT count(*) FROM {table}"))
                    .await;
                seen.push(format!("{table}={c:?}"));
                all &= c.is_ok_and(|c| c > 0);
            }
            eprintln!("lake: {}", seen.join(" "));
            all
        },
    )
    .await;
    assert!(run
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));

    // The oracle for aggregates: the lake read directly, predicates spelled out.
    let oracle = |sql: String| {
        let rig = &rig;
        async move { rig.count(&sql).await as i64 }
    };
    let shared_dates = dates(
        &rig,
        &format!("SELECT local_date FROM consumption_daily WHERE tenant = '{ACME}' AND meter = '{m_shared}'"),
    )
    .await;
    let shared_months = dates(
        &rig,
        &format!("SELECT month FROM consumption_monthly WHERE tenant = '{ACME}' AND meter = '{m_shared}'"),
    )
    .await;

    // A listen address off loopback without TLS: exit 2, nothing served.
    {
        let plain = config.with_file_name("plain.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text
            .replace(
                &format!("listen = \"127.0.0.1:{port}\""),
                "listen = \"0.0.0.0:1\"",
            )
            .replace(&format!("tls_cert_file = \"{}\"\n", ca.cert.display()), "")
            .replace(&format!("tls_key_file = \"{}\"\n", ca.key.display()), "");
        std::fs::write(&plain, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_meterline"))
            .args(["serve", "--config"])
            .arg(&plain)
            .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("serve.listen") && stderr.contains("TLS"),
            "{stderr}"
        );
    }

    let mut serve_cmd = Command::new(env!("CARGO_BIN_EXE_meterline"));
    serve_cmd
        .args(["serve", "--config"])
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX);
    let serve = Process::spawn("serve", serve_cmd);
    serve.wait_line(0, Duration::from_secs(60), |l| {
        l.contains("serving the lake")
    });
    let client = Client {
        port,
        ca: ca.ca.clone(),
    };

    let op_acme = hs(claims(ACME, "operator", None, &[]));
    let op_all = hs(claims("*", "operator", None, &[]));
    let analyst = hs(claims(ACME, "analyst", None, &[]));
    let analyst_pub = hs(claims(OSLO, "analyst", None, &[]));
    let subject_a = hs(claims(ACME, "subject", Some("acct-a"), &[]));
    let subject_b_shared = hs(claims(ACME, "subject", Some("acct-b"), &[m_a.as_str()]));
    let subject_twin = hs(claims(BERGEN, "subject", Some("acct-a"), &[]));

    // The role matrix: tables.
    let existing: BTreeSet<&str> = {
        let lake = meterline_sinks::Lake::new(&rig.lake()).unwrap();
        let mut out = BTreeSet::new();
        for name in meterline::query::sql::TABLES {
            if meterline_sinks::open_existing(&lake, name)
                .await
                .unwrap()
                .is_some()
            {
                out.insert(name);
            }
        }
        out
    };
    // The cost tables exist once `meterline run` has a private tenant.
    let per_meter = [
        "readings",
        "consumption_hourly",
        "consumption_daily",
        "consumption_monthly",
        "cost_hourly",
        "cost_daily",
        "cost_monthly",
        "capacity_peaks",
        "duration_curve",
        "temperature_daily",
        "temperature_sensitivity",
    ];
    let area = [
        "area_consumption_hourly",
        "area_consumption_daily",
        "area_consumption_monthly",
    ];
    let tables = |allowed: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = allowed
            .iter()
            .filter(|t| existing.contains(**t))
            .map(|t| (*t).to_owned())
            .collect();
        if v.iter().any(|t| t == "readings") {
            v.push("readings_current".to_owned());
        }
        v.sort();
        v
    };
    // Reference data about no one (`tax_rates` is written at every start):
    // every role sees it.
    let reference = [
        "spot_prices",
        "weather_observations",
        "grid_tariffs",
        "tax_rates",
        "exchange_rates",
        "weather_stations",
    ];
    let all: Vec<&str> = existing.iter().copied().collect();
    let analyst_tables: Vec<&str> = per_meter
        .iter()
        .chain(["meter_profiles"].iter())
        .chain(area.iter())
        .chain(reference.iter())
        .copied()
        .collect();
    let public_analyst_tables: Vec<&str> = area.iter().chain(reference.iter()).copied().collect();
    let subject_tables: Vec<&str> = per_meter
        .iter()
        .copied()
        .chain(["meter_profiles", "subjects"])
        .chain(reference)
        .collect();
    let listing = "SELECT table_name FROM information_schema.tables \
                   WHERE table_schema = 'public' ORDER BY table_name";
    for (who, token, expected) in [
        ("acme operator", &op_acme, tables(&all)),
        ("* operator", &op_all, tables(&all)),
        ("acme analyst", &analyst, tables(&analyst_tables)),
        ("oslo analyst", &analyst_pub, tables(&public_analyst_tables)),
        ("acme subject", &subject_a, tables(&subject_tables)),
    ] {
        let seen: Vec<String> = client
            .rows(token, listing)
            .into_iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(seen, expected, "{who}'s tables");
        // pg_catalog agrees with information_schema.
        let pg: Vec<String> = client
            .rows(
                token,
                "SELECT c.relname FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' ORDER BY c.relname",
            )
            .into_iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(pg, expected, "{who}'s pg_class");
    }
    assert!(existing.contains("subjects") && existing.contains("consent_ledger"));
    assert!(
        existing.contains("tax_rates"),
        "meterline run writes tax_rates"
    );

    // Grafana's PostgreSQL data source: the table list and the column list
    // its query builder sends (Grafana 10-11, `postgresMetaQuery.ts`).
    // datafusion-pg-catalog answers its `search_path` subquery with '', so
    // the tables come schema-qualified, a name Grafana then queries as is.
    let search_path = "quote_ident(table_schema) IN (SELECT CASE WHEN trim(s[i]) = '\"$user\"' \
        THEN user ELSE trim(s[i]) END FROM generate_series(\
        array_lower(string_to_array(current_setting('search_path'),','),1), \
        array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
        string_to_array(current_setting('search_path'),',') s)";
    let grafana_tables = format!(
        "SELECT CASE WHEN {search_path} THEN quote_ident(table_name) \
         ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS \"table\" \
         FROM information_schema.tables WHERE quote_ident(table_schema) NOT IN \
         ('information_schema', 'pg_catalog', '_timescaledb_cache', '_timescaledb_catalog', \
         '_timescaledb_internal', '_timescaledb_config', 'timescaledb_information', \
         'timescaledb_experimental') ORDER BY CASE WHEN {search_path} THEN 0 ELSE 1 END, 1"
    );
    let listed: Vec<String> = client
        .rows(&analyst, &grafana_tables)
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = tables(&analyst_tables)
        .iter()
        .map(|t| format!("public.{t}"))
        .collect();
    assert_eq!(listed, expected, "Grafana's table list");
    let grafana_columns = format!(
        "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" \
         FROM information_schema.columns WHERE \
         CASE WHEN array_length(parse_ident('public.readings'),1) = 2 \
         THEN quote_ident(table_schema) = (parse_ident('public.readings'))[1] \
         AND quote_ident(table_name) = (parse_ident('public.readings'))[2] \
         ELSE quote_ident(table_name) = 'public.readings' AND {search_path} END"
    );
    let columns: std::collections::BTreeMap<String, String> = client
        .rows(&analyst, &grafana_columns)
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (column, postgres_type) in [
        ("tenant", "text"),
        ("meter", "text"),
        ("value", "numeric"),
        ("interval_start", "timestamp with time zone"),
        ("local_date", "date"),
        ("resolution_minutes", "integer"),
        ("source_offset", "bigint"),
    ] {
        assert_eq!(
            columns.get(column).map(String::as_str),
            Some(postgres_type),
            "Grafana's columns of readings: {columns:?}"
        );
    }

    // Grafana's data source page asks for the Postgres version and for
    // TimescaleDB; drivers ask for settings the same way. The answers agree
    // with what the server announced at startup, as psycopg read it, and
    // `session_user` is the name the client connected as.
    let asked = client.run(&[
        json!({"token": analyst, "user": "grafana",
               "sql": "SELECT current_setting('server_version_num')::int/100 AS version, \
                       current_setting('datestyle') AS datestyle, session_user AS who"}),
        json!({"token": analyst,
               "sql": "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"}),
        json!({"token": analyst, "sql": "SELECT current_setting('no_such_setting')"}),
    ]);
    let announced = asked[0]["server_version"]
        .as_i64()
        .unwrap_or_else(|| panic!("psycopg read no server version: {}", asked[0]));
    let datestyle = asked[0]["DateStyle"]
        .as_str()
        .unwrap_or_else(|| panic!("psycopg read no DateStyle: {}", asked[0]));
    assert!(announced >= 100_000, "{announced}");
    assert_eq!(
        rows_of(&asked[0]),
        vec![vec![
            json!((announced / 100).to_string()),
            json!(datestyle),
            json!("grafana")
        ]],
        "Grafana's version question"
    );
    assert_eq!(
        rows_of(&asked[1]),
        Vec::<Vec<Value>>::new(),
        "no TimescaleDB"
    );
    assert!(
        asked[2]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unrecognized configuration parameter")),
        "an unknown setting: {}",
        asked[2]
    );

    // The role matrix: rows.
    let distinct_tenants = |token: &Value, table: &str| -> Vec<String> {
        client
            .rows(
                token,
                &format!("SELECT DISTINCT tenant FROM {table} ORDER BY 1"),
            )
            .into_iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(client.count(&op_all, "SELECT count(*) FROM readings"), 336);
    assert_eq!(distinct_tenants(&op_all, "readings"), [ACME, BERGEN, OSLO]);
    assert_eq!(client.count(&op_acme, "SELECT count(*) FROM readings"), 72);
    assert_eq!(client.count(&op_acme, "SELECT count(*) FROM subjects"), 2);
    assert_eq!(
        client.count(&op_acme, "SELECT count(*) FROM consent_ledger"),
        3
    );
    assert_eq!(distinct_tenants(&op_acme, "subjects"), [ACME]);
    assert_eq!(client.count(&analyst, "SELECT count(*) FROM readings"), 72);
    assert_eq!(
        client.count(&analyst, "SELECT count(*) FROM readings_current"),
        72
    );
    for table in per_meter.iter().skip(1) {
        assert_eq!(
            client.count(&analyst, &format!("SELECT count(*) FROM {table}")),
            oracle(format!(
                "SELECT count(*) FROM {table} WHERE tenant = '{ACME}'"
            ))
            .await,
            "acme analyst's {table}"
        );
    }
    for table in area {
        let expected = oracle(format!(
            "SELECT count(*) FROM {table} WHERE tenant = '{OSLO}'"
        ))
        .await;
        assert_eq!(
            client.count(&analyst_pub, &format!("SELECT count(*) FROM {table}")),
            expected,
            "oslo analyst's {table}"
        );
        if table == "area_consumption_hourly" {
            assert!(expected > 0);
        }
    }
    // Subject acct-a: meter A (its subject), and the shared meter from N-40h.
    let a_rows: BTreeSet<(String, DateTime<Utc>)> = client
        .rows(&subject_a, "SELECT meter, interval_start FROM readings")
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                DateTime::parse_from_rfc3339(r[1].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc),
            )
        })
        .collect();
    let expected_a: BTreeSet<(String, DateTime<Utc>)> = (0..24)
        .map(|h| (m_a.clone(), from + hours(h)))
        .chain(
            (0..24)
                .map(|h| (m_shared.clone(), from + hours(h)))
                .filter(|(_, t)| *t >= shared_from),
        )
        .collect();
    assert_eq!(a_rows.len(), 40);
    assert_eq!(a_rows, expected_a, "acct-a's readings");
    assert_eq!(
        client.count(&subject_a, "SELECT count(*) FROM consumption_hourly"),
        16
    );
    assert_eq!(
        client.count(&subject_a, "SELECT count(*) FROM consumption_daily"),
        whole_days_from(&shared_dates, shared_from).len() as i64
    );
    assert_eq!(
        client.count(&subject_a, "SELECT count(*) FROM consumption_monthly"),
        whole_days_from(&shared_months, shared_from)
            .iter()
            .filter(|m| shared_months.contains(m))
            .count() as i64
    );
    assert_eq!(
        client.rows(&subject_a, "SELECT tenant, subject, email FROM subjects"),
        vec![vec![json!(ACME), json!("acct-a"), json!("a@example.no")]]
    );
    // acct-b with meter A shared through an access link.
    assert_eq!(
        client.count(&subject_b_shared, "SELECT count(*) FROM readings"),
        48
    );
    assert_eq!(
        client.count(
            &subject_b_shared,
            &format!("SELECT count(*) FROM consumption_hourly WHERE meter = '{m_a}'")
        ),
        24
    );
    assert_eq!(
        client.count(&subject_b_shared, "SELECT count(*) FROM consumption_hourly"),
        24
    );
    // The twin id in bergen sees bergen's meter only.
    assert_eq!(
        client.rows(&subject_twin, "SELECT DISTINCT tenant, meter FROM readings"),
        vec![vec![json!(BERGEN), json!(m_twin)]]
    );
    // Types: value is numeric (1700), timestamps timestamptz (1184), dates date (1082).
    let typed = client.one(
        &analyst,
        "SELECT value, interval_start, local_date, meter FROM readings LIMIT 1",
    );
    assert_eq!(typed["types"], json!([1700, 1184, 1082, 25]), "{typed}");
    // Extended protocol: a prepared statement with parameters.
    let prepared = client.run(&[json!({
        "token": analyst, "session": true, "prepare": true,
        "sql": "SELECT count(*) FROM readings WHERE meter = %s AND value > %s",
        "params": [m_a, {"decimal": "0.1"}],
    })]);
    assert_eq!(
        rows_of(&prepared[0]),
        vec![vec![json!("24")]],
        "{}",
        prepared[0]
    );

    // The cross-tenant and cross-subject suite.
    // Ids, not values: sums of one meter's values may equal another's.
    let foreign_ids = [BERGEN, OSLO, m_twin.as_str(), "twin@example.no"];
    let suite = crafted_queries(&m_b, &m_twin);
    assert!(suite.len() >= 40, "{} queries", suite.len());
    for (who, token, mut foreign) in [
        ("acme analyst", &analyst, foreign_ids.to_vec()),
        ("subject acct-a", &subject_a, foreign_ids.to_vec()),
    ] {
        if who.starts_with("subject") {
            foreign.extend([m_b.as_str(), "acct-b", "b@example.no"]);
        }
        let requests: Vec<Value> = suite
            .iter()
            .map(|q| json!({"token": token, "sql": q, "session": true}))
            .collect();
        let results = client.run(&requests);
        let mut answered = 0;
        for (q, r) in suite.iter().zip(&results) {
            let text = r.get("rows").map(ToString::to_string).unwrap_or_default();
            for f in &foreign {
                assert!(!text.contains(f), "{who}: `{q}` returned {f}: {text}");
            }
            if r.get("rows").is_some() {
                answered += 1;
            }
        }
        assert!(
            answered >= 25,
            "{who}: only {answered} queries answered: {results:?}"
        );
        // Counts that name the other tenant and subject come back empty or zero.
        for (q, expected) in [
            (format!("SELECT count(*) FROM readings WHERE tenant = '{BERGEN}'"), 0),
            (format!("SELECT count(*) FROM readings WHERE meter = '{m_twin}'"), 0),
            (
                format!("SELECT count(*) FROM (SELECT * FROM readings UNION ALL SELECT * FROM readings_current) u WHERE tenant <> '{ACME}'"),
                0,
            ),
        ] {
            assert_eq!(client.count(token, &q), expected, "{who}: {q}");
        }
    }
    assert_eq!(
        client.count(
            &subject_a,
            &format!("SELECT count(*) FROM readings WHERE meter = '{m_b}'")
        ),
        0
    );
    // The writes and escapes of the suite are refused with their codes.
    for (sql, code) in [
        (
            "COPY (SELECT * FROM readings) TO '/tmp/meterline-leak.csv'",
            "25006",
        ),
        (
            "CREATE EXTERNAL TABLE leak STORED AS PARQUET LOCATION 's3://x/lake/readings'",
            "25006",
        ),
        ("INSERT INTO readings SELECT * FROM readings", "25006"),
        ("DELETE FROM readings", "25006"),
        ("DROP TABLE readings", "25006"),
        ("SET datafusion.catalog.default_catalog = 'x'", "42501"),
    ] {
        let r = client.one(&analyst, sql);
        assert_eq!(r["error"]["sqlstate"], json!(code), "{sql}: {r}");
    }
    assert!(!Path::new("/tmp/meterline-leak.csv").exists());
    // Harmless SETs are accepted.
    for sql in [
        "SET DateStyle = 'ISO, MDY'",
        "SET extra_float_digits = 3",
        "SET application_name = 'x'",
    ] {
        let r = client.one(&analyst, sql);
        assert!(r.get("error").is_none(), "{sql}: {r}");
    }

    // psql: \dt and \d as an acme analyst, over TLS with the CA verified.
    let analyst_token = client.one(&analyst, "SELECT 1")["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let psql = |token: &str, command: &str| {
        let out = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} dbname=meterline user=analyst sslmode=verify-full sslrootcert={}",
                ca.ca.display()
            ))
            .args(["-X", "-At", "-c", command])
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "30")
            .output()
            .expect("psql (scripts/test.sh installs postgresql-client)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, dt, err) = psql(&analyst_token, "\\dt");
    assert!(ok, "{err}");
    let listed: Vec<&str> = dt.lines().filter_map(|l| l.split('|').nth(1)).collect();
    let mut expected_dt = tables(&analyst_tables);
    expected_dt.retain(|t| t != "readings_current");
    assert_eq!(listed, expected_dt, "{dt}");
    let (ok, d, err) = psql(&analyst_token, "\\d readings");
    assert!(ok, "{err}");
    assert!(d.lines().any(|l| l.starts_with("value|numeric")), "{d}");
    assert!(
        d.lines().any(|l| l.starts_with("interval_start|timestamp")),
        "{d}"
    );
    // `meterline token` makes a token psql can use.
    let minted = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(["token", "--config"])
        .arg(&config)
        .args(["--tenant", ACME, "--role", "analyst", "--ttl", "10m"])
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let (ok, count, err) = psql(&minted, "SELECT count(*) FROM readings");
    assert!(ok, "{err}");
    assert_eq!(count.trim(), "72");
    // Plaintext is refused.
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=meterline user=x sslmode=disable"
        ))
        .args(["-X", "-At", "-c", "SELECT 1"])
        .env("PGPASSWORD", &minted)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));

    // Refused tokens.
    let rsa_pem = rsa_private_key(&config);
    let mut missing_role = claims(ACME, "analyst", None, &[]);
    missing_role.as_object_mut().unwrap().remove("role");
    let mut missing_exp = claims(ACME, "analyst", None, &[]);
    missing_exp.as_object_mut().unwrap().remove("exp");
    let mut expired = claims(ACME, "analyst", None, &[]);
    expired["exp"] = json!({"now+": -30}); // within the leeway: accepted
    let mut beyond = claims(ACME, "analyst", None, &[]);
    beyond["exp"] = json!({"now+": -120});
    let mut wrong_aud = claims(ACME, "analyst", None, &[]);
    wrong_aud["aud"] = json!("another-service");
    let mut wrong_iss = claims(ACME, "analyst", None, &[]);
    wrong_iss["iss"] = json!("https://evil.test/");
    let subject_without_sub = claims(ACME, "subject", None, &[]);
    let refused = [
        ("expired", hs(beyond)),
        (
            "unsupported_algorithm",
            json!({"alg": "none", "claims": claims(ACME, "operator", None, &[])}),
        ),
        (
            "unsupported_algorithm",
            json!({"alg": "RS256", "key": rsa_pem, "claims": claims(ACME, "operator", None, &[])}),
        ),
        ("wrong_audience", hs(wrong_aud)),
        ("wrong_issuer", hs(wrong_iss)),
        ("missing_claim", hs(missing_role)),
        ("missing_claim", hs(missing_exp)),
        ("missing_claim", hs(subject_without_sub)),
        (
            "unknown_tenant",
            hs(claims("no-such-tenant", "analyst", None, &[])),
        ),
        ("bad_role", hs(claims("*", "analyst", None, &[]))),
        (
            "bad_signature",
            json!({"alg": "HS256", "key": "another-secret-of-more-than-32-bytes-xyz", "claims": claims(ACME, "operator", None, &[])}),
        ),
        ("malformed", json!({"raw": "not.a-token"})),
    ];
    let from_line = serve.lines_matching(|_| true).len();
    let requests: Vec<Value> = refused
        .iter()
        .map(|(_, t)| json!({"token": t, "sql": "SELECT count(*) FROM readings"}))
        .collect();
    let results = client.run(&requests);
    let mut tokens = Vec::new();
    for ((reason, _), r) in refused.iter().zip(&results) {
        // libpq reports a failed login without a SQLSTATE: the server's words.
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("FATAL:  authentication failed"),
            "{reason}: {r}"
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("authentication failed"),
            "{reason}: {r}"
        );
        tokens.push(r["token"].as_str().unwrap().to_owned());
    }
    let within = client.one(&hs(expired), "SELECT count(*) FROM readings");
    assert_eq!(
        rows_of(&within),
        vec![vec![json!("72")]],
        "within the leeway: {within}"
    );
    serve.wait_line(from_line, Duration::from_secs(10), |l| {
        l.contains("sql authentication failed") && l.contains("malformed")
    });
    let log = serve.lines_matching(|_| true)[from_line..].join("\n");
    for (reason, _) in &refused {
        assert!(
            log.contains(&format!("reason=\"{reason}\""))
                || log.contains(&format!("reason={reason}")),
            "no `{reason}` in the log:\n{log}"
        );
    }
    let full_log = serve.lines_matching(|_| true).join("\n");
    for t in tokens.iter().chain([&analyst_token, &minted]) {
        let signature = t.rsplit('.').next().unwrap();
        assert!(
            signature.len() < 8 || !full_log.contains(signature),
            "a token is in the log"
        );
    }

    // Limits: each fails one query cleanly; the session and the server go on.
    let limits = client.run(&[
        json!({"token": analyst, "session": true, "sql":
            "SELECT count(*) FROM readings a, readings b, readings c, readings d, readings e, \
             readings f WHERE a.source_offset + b.source_offset + c.source_offset \
             + d.source_offset + e.source_offset + f.source_offset < 0"}),
        json!({"token": analyst, "session": true, "sql":
            "SELECT a.value FROM readings a, readings b"}),
        json!({"token": analyst, "session": true, "sql":
            "SELECT a.source_offset, b.source_offset, c.source_offset FROM readings a, readings b, readings c ORDER BY 1, 2, 3"}),
        json!({"token": analyst, "session": true, "sql": "SELECT count(*) FROM readings"}),
        json!({"token": analyst, "session": true, "sql":
            format!("SELECT 1{}", " + 1".repeat(20_000))}),
        json!({"token": analyst, "session": true, "sql":
            format!("SELECT count(*) FROM (SELECT 1{}) t", " UNION ALL SELECT 1".repeat(4_000))}),
        // The slow query of the timeout again, cancelled by the client.
        json!({"token": analyst, "session": true, "cancel": true, "sql":
            "SELECT count(*) FROM readings a, readings b, readings c, readings d, readings e, \
             readings f WHERE a.source_offset + b.source_offset + c.source_offset \
             + d.source_offset + e.source_offset + f.source_offset < 0"}),
        json!({"token": analyst, "session": true, "sql": "SELECT count(*) FROM readings"}),
    ]);
    assert_eq!(
        limits[0]["error"]["sqlstate"],
        json!("57014"),
        "timeout: {}",
        limits[0]
    );
    assert_eq!(
        limits[1]["error"]["sqlstate"],
        json!("54000"),
        "rows: {}",
        limits[1]
    );
    assert_eq!(
        limits[2]["error"]["sqlstate"],
        json!("53200"),
        "memory: {}",
        limits[2]
    );
    assert_eq!(
        rows_of(&limits[3]),
        vec![vec![json!("72")]],
        "{}",
        limits[3]
    );
    assert_eq!(
        limits[4]["error"]["sqlstate"],
        json!("54001"),
        "size: {}",
        limits[4]
    );
    // A deep UNION chain within the size limit plans slowly (the optimizer's
    // passes grow with the depth): it answers, or the statement timeout ends it.
    // Either way the server is still there for the next query.
    assert!(
        limits[5]["rows"] == json!([["4001"]]) || limits[5]["error"]["sqlstate"] == json!("57014"),
        "a deep UNION chain within the limit: {}",
        limits[5]
    );
    assert_eq!(
        limits[6]["error"]["sqlstate"],
        json!("57014"),
        "cancel: {}",
        limits[6]
    );
    assert!(
        limits[6]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("due to user request")),
        "a cancel request, not the timeout, ended it: {}",
        limits[6]
    );
    assert_eq!(
        rows_of(&limits[7]),
        vec![vec![json!("72")]],
        "{}",
        limits[7]
    );
    assert_eq!(
        client.count(&subject_a, "SELECT count(*) FROM readings"),
        40
    );

    let text = scrape(metrics_port).expect("serve metrics");
    for outcome in ["timeout", "too_many_rows", "memory_limit", "cancelled"] {
        assert!(
            metric(
                &text,
                &format!("meterline_sql_queries_total{{outcome=\"{outcome}\",role=\"analyst\"}}")
            ) >= 1.0,
            "{outcome}"
        );
    }
    for reason in [
        "expired",
        "unsupported_algorithm",
        "wrong_audience",
        "unknown_tenant",
        "not_tls",
    ] {
        assert!(
            metric(
                &text,
                &format!("meterline_sql_auth_failures_total{{reason=\"{reason}\"}}")
            ) >= 1.0,
            "{reason}"
        );
    }
    let mut serve = serve;
    assert!(serve
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
}

/// An RSA private key made with openssl, for an RS256 token the HS256 server
/// must refuse.
fn rsa_private_key(config: &Path) -> String {
    let path = config.with_file_name("rsa.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path).unwrap()
}

/// Queries that try to reach other tenants' and subjects' rows: joins, CTEs,
/// recursive CTEs, UNIONs, subqueries, quoted and qualified names, the
/// catalogs, EXPLAIN, table functions, and the writes and settings that
/// would open a way out.
fn crafted_queries(m_b: &str, m_twin: &str) -> Vec<String> {
    let mut q: Vec<String> = [
        "SELECT * FROM readings",
        "SELECT * FROM readings_current",
        "SELECT * FROM \"readings\"",
        "SELECT * FROM public.readings",
        "SELECT * FROM \"public\".\"readings\"",
        "SELECT * FROM meterline.public.readings",
        "SELECT * FROM datafusion.public.readings",
        "SELECT * FROM \"READINGS\"",
        "SELECT r.* FROM readings r JOIN consumption_hourly h ON h.meter = r.meter",
        "SELECT * FROM readings r FULL OUTER JOIN consumption_daily d ON d.meter = r.meter",
        "SELECT * FROM readings r CROSS JOIN area_consumption_daily a LIMIT 500",
        "SELECT * FROM consumption_hourly h LEFT JOIN readings r ON true LIMIT 500",
        "WITH x AS (SELECT * FROM readings) SELECT * FROM x",
        "WITH x AS (SELECT tenant, meter FROM readings), y AS (SELECT * FROM x) SELECT * FROM y",
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT r.* FROM t, readings r",
        "WITH RECURSIVE m(meter) AS (SELECT meter FROM readings UNION SELECT meter FROM consumption_hourly) SELECT * FROM m",
        "SELECT tenant, meter FROM readings UNION SELECT tenant, meter FROM consumption_daily",
        "SELECT tenant FROM readings UNION ALL SELECT tenant FROM area_consumption_hourly UNION ALL SELECT tenant FROM consumption_monthly",
        "SELECT * FROM readings WHERE tenant IN (SELECT tenant FROM consumption_hourly)",
        "SELECT * FROM readings WHERE EXISTS (SELECT 1 FROM readings_current WHERE tenant <> readings.tenant)",
        "SELECT (SELECT max(tenant) FROM readings), (SELECT min(meter) FROM consumption_daily)",
        "SELECT (SELECT string_agg(meter, ',') FROM readings)",
        "SELECT * FROM (SELECT * FROM (SELECT * FROM readings) a) b",
        "SELECT tenant, count(*) FROM readings GROUP BY tenant",
        "SELECT tenant, meter, sum(value) FROM consumption_hourly GROUP BY ROLLUP (tenant, meter)",
        "SELECT tenant, meter, count(*) OVER (PARTITION BY tenant) FROM readings",
        "SELECT DISTINCT subject FROM readings",
        "SELECT * FROM subjects",
        "SELECT * FROM consent_ledger",
        "SELECT * FROM dead_letters",
        "SELECT * FROM access_log",
        "SELECT * FROM erasure_audit",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.columns WHERE table_name = 'subjects'",
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT * FROM pg_catalog.pg_tables",
        "SELECT relname FROM pg_class WHERE relname IN ('subjects', 'consent_ledger', 'dead_letters')",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM readings",
        "EXPLAIN VERBOSE SELECT * FROM readings WHERE tenant <> 'x'",
        "EXPLAIN ANALYZE SELECT count(*) FROM readings",
        "SELECT * FROM read_parquet('s3://lake/readings')",
        "SELECT * FROM parquet_scan('/tmp')",
        "SELECT * FROM generate_series(1, 3) g, readings r",
        "CREATE EXTERNAL TABLE leak STORED AS PARQUET LOCATION '/tmp/lake/readings'",
        "COPY readings TO '/tmp/leak.parquet'",
        "COPY (SELECT * FROM readings) TO '/tmp/leak.csv'",
        "SET datafusion.execution.target_partitions = 1",
        "SET datafusion.catalog.information_schema = false",
        "CREATE VIEW v AS SELECT * FROM readings",
        "PREPARE p AS SELECT * FROM readings",
        "DECLARE c CURSOR FOR SELECT * FROM readings",
        "SELECT * FROM readings AS OF TIMESTAMP '2000-01-01'",
        "SELECT * FROM readings FOR UPDATE",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    q.push(format!(
        "SELECT * FROM readings WHERE meter = '{m_b}' OR meter = '{m_twin}'"
    ));
    q.push(format!(
        "SELECT * FROM consumption_hourly WHERE meter IN ('{m_b}', '{m_twin}')"
    ));
    q.push("SELECT * FROM readings WHERE tenant = 'bergen-bedrift' OR 1 = 1".to_owned());
    q.push(format!(
        "SELECT * FROM readings WHERE subject = 'acct-b' OR meter = '{m_b}'"
    ));
    // Very long and deeply nested (within the size limit).
    q.push(format!(
        "SELECT * FROM readings WHERE {}",
        (0..500)
            .map(|i| format!("value > -{i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    ));
    q.push(format!(
        "SELECT * FROM {}readings{}",
        "(SELECT * FROM ".repeat(20),
        ") t".repeat(20)
    ));
    q
}
