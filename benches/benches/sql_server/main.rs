//! `meterline serve` against DuckDB on the same Parquet files.
//!
//! 1. A lake: one private tenant, `METERS` hourly meters for a year, written
//!    through the real operator chain and Delta writer, a commit per day (so a
//!    day's partition holds one file, as after OPTIMIZE).
//! 2. `meterline serve` over it (this binary re-executed with
//!    `--meterline-serve`), an analyst token of the tenant.
//! 3. `compare.py` (psycopg and DuckDB, from the test tools' virtualenv) times,
//!    as a client sees it (send, fetch every row):
//!    - one meter's daily consumption for a month, through the server and
//!      through DuckDB;
//!    - the same query written so that neither partition nor page pruning can
//!      apply (the date and the meter tested inside one text expression): the
//!      cost of scanning the whole tenant, in the same run;
//!    - tenant-wide monthly rollups of the readings (kWh and meters; kWh and
//!      readings), through the server and through DuckDB;
//!    - the monthly kWh from meterline's `consumption_monthly`, through both.
//!
//! Goals (issue 18): the month of one meter no slower through the server than
//! in DuckDB and at least 10 times faster than the forced whole-tenant scan;
//! the rollups of the readings no slower than in DuckDB. Under `cargo bench` the figures are
//! measured and a missed goal fails the run; under `cargo test` a small lake
//! checks the same steps: every query answers, and the server's rows equal
//! DuckDB's (an engine written independently of DataFusion and of meterline).
//!
//! Run: `cargo bench -p meterline-benches --bench sql_server` (about five
//! minutes: most of it is writing the lake). Needs `METERLINE_PYTHON` with
//! psycopg and duckdb (scripts/test.sh installs them).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDate};
use meterline::dev::generator::{gsrn, local_midnight, PRIVATE_TENANT};
use meterline::dev::testkit::{free_port, Process};
use serde_json::{json, Value};

#[path = "../support/mod.rs"]
mod support;

use support::{date, selected, Scale};

const TEST: &str = "server_answers_as_duckdb_on_the_same_files";
const BENCH: &str = "serve_vs_duckdb";
const KEY_HEX: &str = "5f2a9c0e4b7d1836a0c9e2f4b6d8a1c3e5f7091b2d4f6a8c0e1b3d5f7a9c2e4d";
const SECRET: &str = "a-bench-secret-of-more-than-32-bytes-0123456789";

/// The meter the point query reads (one of the middle ones).
fn target_meter(meters: usize) -> String {
    gsrn(1_000_000 + (meters / 2) as u32)
}

/// Meter `i`'s value in an hour: deterministic, three decimals, never zero.
fn value(i: usize, hour: usize) -> String {
    let thousandths = 100 + (i * 7919 + hour * 104_729) % 2900;
    format!("{}.{:03}", thousandths / 1000, thousandths % 1000)
}

/// A day's readings of every meter, time-major (as live traffic arrives).
fn day_payloads(meters: usize, day: NaiveDate, day_index: usize) -> Vec<Vec<u8>> {
    let tz = chrono_tz::Europe::Oslo;
    let start = local_midnight(tz, day);
    let hours = (local_midnight(tz, day + Days::days(1)) - start).num_hours();
    let mut out = Vec::with_capacity(meters * 25);
    for h in 0..hours {
        let at = (start + Days::hours(h))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        for i in 0..meters {
            out.push(
                format!(
                    r#"{{"schema":"reading/v1","tenant":"{PRIVATE_TENANT}","device_id":"dev-{i:06}","meter_id":"{meter}","quantity":"electricity","direction":"import","start":"{at}","resolution":"PT1H","value":{v},"unit":"kWh","quality":"measured","version":"2026-11-01T00:00:00Z","area":"NO1","subject":"acct-{i}"}}"#,
                    meter = gsrn(1_000_000 + i as u32),
                    v = value(i, day_index * 25 + h as usize),
                )
                .into_bytes(),
            );
        }
    }
    out
}

/// Column `column` of `compare.py`'s rows as integers; -1 for a cell that is
/// not one (no check expects -1, so it fails the check instead of reading as 0).
fn integers(rows: &Value, column: usize) -> Vec<i64> {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r[column]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--meterline-serve") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("METERLINE_LOG"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_stack_size(meterline::serve::THREAD_STACK_BYTES)
            .build()
            .expect("runtime");
        return runtime.block_on(meterline::serve::run_from_file(&PathBuf::from(&args[2])));
    }
    if args.iter().any(|a| a == "--list") {
        println!("{TEST}: test");
        return ExitCode::SUCCESS;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let name = if bench { BENCH } else { TEST };
    if !bench {
        println!("running {} test", usize::from(selected(name, &args[1..])));
    }
    if !selected(name, &args[1..]) {
        return ExitCode::SUCCESS;
    }
    let python = match std::env::var_os("METERLINE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            eprintln!(
                "sql_server: METERLINE_PYTHON is not set: scripts/test.sh installs psycopg and \
                 duckdb into a virtualenv and points it there"
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&python))
}

#[allow(clippy::too_many_lines)] // the bench reads best as one sequence of steps
async fn run(python: &std::path::Path) -> ExitCode {
    let scale = Scale::pick(
        Scale {
            meters: 1000,
            first_day: date(2025, 11, 1),
            days: 365,
            measured: true,
        },
        Scale {
            meters: 12,
            first_day: date(2026, 2, 20),
            days: 45,
            measured: false,
        },
    );
    // SQL_SERVER_BENCH_LAKE=<dir> keeps the lake there and reuses it in later
    // runs of the same scale (for profiling the queries without writing it again).
    let kept = std::env::var_os("SQL_SERVER_BENCH_LAKE").map(PathBuf::from);
    let reuse = kept
        .as_ref()
        .is_some_and(|p| p.join("readings/_delta_log").exists());
    let mut lake = match &kept {
        Some(path) => support::BenchLake::at(path).await,
        None => support::BenchLake::new().await,
    };
    let started = Instant::now();
    let mut readings = 0;
    for d in 0..scale.days {
        if reuse {
            readings +=
                day_payloads(scale.meters, scale.first_day + Days::days(i64::from(d)), 0).len();
            continue;
        }
        let day = scale.first_day + Days::days(i64::from(d));
        let payloads = day_payloads(scale.meters, day, d as usize);
        lake.append(&payloads, readings as i64, payloads.len())
            .await;
        readings += payloads.len();
    }
    println!(
        "lake: {readings} readings of {} meters, {} days from {}, written in {:.1}s",
        scale.meters,
        scale.days,
        scale.first_day,
        started.elapsed().as_secs_f64()
    );
    if !reuse {
        // The aggregates, as `meterline run` keeps them; then the files their
        // rounds replaced are deleted, so that DuckDB's glob over the table's
        // directory reads the live files only (DuckDB does not read the Delta log).
        let started = Instant::now();
        let mut materializer = meterline::aggregate::Materializer::open(
            &lake.lake,
            meterline::dev::generator::tenants(),
            meterline::config::AggregateSettings::default(),
            meterline::metrics::Metrics::new(),
        )
        .await
        .expect("materializer");
        let round = materializer.round().await.expect("aggregate round");
        for name in [
            "consumption_hourly",
            "consumption_daily",
            "consumption_monthly",
        ] {
            let mut table = meterline_sinks::open_existing(&lake.lake, name)
                .await
                .expect("open")
                .expect("aggregate table exists");
            meterline_sinks::purge(&mut table, name)
                .await
                .expect("purge");
        }
        println!(
            "aggregates: {} readings folded in {:.1}s",
            round.readings,
            started.elapsed().as_secs_f64()
        );
    }

    // The server, with the tools the clients need.
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).expect("secret");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let port = free_port();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "127.0.0.1:9"
group_id = "bench"

[lake]
uri = "{lake}"

[[tenants]]
id = "{PRIVATE_TENANT}"
deployment = "private"

[serve]
listen = "127.0.0.1:{port}"
metrics_listen = ""
statement_timeout_secs = 120
max_result_rows = 100000

[serve.jwt]
hs256_secret_file = "{secret}"
issuer = "bench"
audience = "meterline"
"#,
            lake = lake.config.uri,
            secret = secret.display(),
        ),
    )
    .expect("config");
    let mut serve = Command::new(std::env::current_exe().expect("own path"));
    serve
        .arg("--meterline-serve")
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .env("METERLINE_LOG", "warn,meterline=info");
    if let Some((name, value)) = meterline::dev::testkit::clock_env() {
        serve.env(name, value);
    }
    let server = Process::spawn("serve", serve);
    server.wait_line(0, Duration::from_secs(60), |l| {
        l.contains("serving the lake over the Postgres protocol")
    });
    let serve_config = meterline::config::Config::load(&config).expect("config loads");
    let token = meterline::serve::token::mint(
        &serve_config.serve,
        &meterline::serve::token::Request {
            tenant: PRIVATE_TENANT.to_owned(),
            role: meterline::serve::jwt::Role::Analyst,
            subject: None,
            meters: Vec::new(),
            ttl_secs: 3600,
        },
        // The clock the server checks expiry with (METERLINE_FAKE_NOW when set).
        meterline::dev::testkit::clock().now().timestamp(),
    )
    .expect("token");

    let meter = target_meter(scale.meters);
    let month = "2026-03";
    let point = format!(
        "SELECT local_date, sum(value) AS kwh, count(*) AS hours FROM readings \
         WHERE tenant = '{PRIVATE_TENANT}' AND meter = '{meter}' \
         AND local_date >= DATE '{month}-01' AND local_date < DATE '2026-04-01' \
         GROUP BY local_date ORDER BY local_date"
    );
    let forced = format!(
        "SELECT local_date, sum(value) AS kwh, count(*) AS hours FROM readings \
         WHERE tenant = '{PRIVATE_TENANT}' \
         AND concat(CAST(local_date AS VARCHAR), ' ', meter) LIKE '{month}-__ {meter}' \
         GROUP BY local_date ORDER BY local_date"
    );
    // Tenant-wide monthly rollups of the raw readings (the goal), and the same
    // from meterline's own aggregate table (a small table: what it shows is the
    // fixed cost of a query, the wire and the Delta log against an in-process
    // engine that reads files only).
    let month_of = "CAST(date_trunc('month', local_date) AS DATE) AS month";
    let rollup_meters = format!(
        "SELECT {month_of}, sum(value) AS kwh, count(DISTINCT meter) AS meters FROM readings \
         WHERE tenant = '{PRIVATE_TENANT}' GROUP BY 1 ORDER BY 1"
    );
    let rollup_readings = format!(
        "SELECT {month_of}, sum(value) AS kwh, count(*) AS readings FROM readings \
         WHERE tenant = '{PRIVATE_TENANT}' GROUP BY 1 ORDER BY 1"
    );
    let aggregate = format!(
        "SELECT month, sum(value) AS kwh, count(*) AS meters FROM consumption_monthly \
         WHERE tenant = '{PRIVATE_TENANT}' GROUP BY month ORDER BY month"
    );
    let queries = [
        ("point", "server", &point),
        ("point", "duckdb", &point),
        ("forced", "server", &forced),
        ("rollup_meters", "server", &rollup_meters),
        ("rollup_meters", "duckdb", &rollup_meters),
        ("rollup_readings", "server", &rollup_readings),
        ("rollup_readings", "duckdb", &rollup_readings),
        ("aggregate", "server", &aggregate),
        ("aggregate", "duckdb", &aggregate),
    ];
    let (warmup, runs) = if scale.measured { (3, 15) } else { (1, 2) };
    let doc = json!({
        "host": "127.0.0.1", "port": port, "token": token,
        "lake": lake.config.uri, "warmup": warmup, "runs": runs,
        "queries": queries.iter().map(|(name, engine, sql)| {
            json!({"name": name, "engine": engine, "sql": sql})
        }).collect::<Vec<_>>(),
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/sql_server/compare.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(doc.to_string().as_bytes())
            .expect("request written");
    }
    let out = child.wait_with_output().expect("compare.py runs");
    drop(server);
    if !out.status.success() {
        eprintln!(
            "FAILED: compare.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return ExitCode::FAILURE;
    }
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("compare.py's JSON");
    let mut failures = Vec::new();
    let get = |name: &str, engine: &str| -> &Value {
        results
            .iter()
            .find(|r| r["name"] == name && r["engine"] == engine)
            .expect("a result per query")
    };
    for r in &results {
        if let Some(e) = r.get("error") {
            failures.push(format!("{} on {}: {e}", r["name"], r["engine"]));
        }
    }
    if !failures.is_empty() {
        eprintln!("FAILED:\n  {}", failures.join("\n  "));
        return ExitCode::FAILURE;
    }

    // Same answers: the server as DuckDB, the forced scan as the pruned query.
    let rows = |r: &Value| r["rows"].clone();
    if rows(get("point", "server")) != rows(get("point", "duckdb")) {
        failures.push(format!(
            "one meter's month: the server answered {} but DuckDB {}",
            rows(get("point", "server")),
            rows(get("point", "duckdb"))
        ));
    }
    if rows(get("forced", "server")) != rows(get("point", "server")) {
        failures.push("the forced scan answered other rows than the pruned query".to_owned());
    }
    for name in ["rollup_meters", "rollup_readings", "aggregate"] {
        if rows(get(name, "server")) != rows(get(name, "duckdb")) {
            failures.push(format!(
                "{name}: the server answered {} but DuckDB {}",
                rows(get(name, "server")),
                rows(get(name, "duckdb"))
            ));
        }
    }
    // meterline's monthly table against DuckDB's sums of the raw readings.
    if rows(get("aggregate", "server")) != rows(get("rollup_meters", "duckdb")) {
        failures.push(format!(
            "consumption_monthly {} differs from DuckDB's rollup of the readings {}",
            rows(get("aggregate", "server")),
            rows(get("rollup_meters", "duckdb"))
        ));
    }
    // March has 31 days, one of 23 hours (DST starts on the 29th).
    let days = rows(get("point", "server"));
    let hours: i64 = integers(&days, 2).iter().sum();
    if days.as_array().map(Vec::len) != Some(31) || hours != 31 * 24 - 1 {
        failures.push(format!(
            "one meter's March: expected 31 days and 743 hours, got {days}"
        ));
    }
    let months = rows(get("aggregate", "server"));
    let meters_per_month = integers(&months, 2);
    let expected_months = if scale.measured { 12 } else { 3 };
    if meters_per_month.len() != expected_months
        || meters_per_month.iter().any(|&m| m != scale.meters as i64)
    {
        failures.push(format!(
            "the rollup: expected {expected_months} months of {} meters, got {months}",
            scale.meters
        ));
    }
    let median = |r: &Value| -> f64 {
        let mut ms: Vec<f64> = r["ms"]
            .as_array()
            .expect("times")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    };
    let lines = [
        ("one meter, a month of daily sums", "point", true),
        ("the same, forced whole-tenant scan", "forced", false),
        ("monthly kWh and meters (readings)", "rollup_meters", true),
        (
            "monthly kWh and readings (readings)",
            "rollup_readings",
            true,
        ),
        ("monthly kWh from consumption_monthly", "aggregate", false),
    ];
    println!("median of {runs} runs after {warmup} warm-up, as a client sees it (ms):");
    for (label, name, goal) in lines {
        let server = median(get(name, "server"));
        match results
            .iter()
            .find(|r| r["name"] == name && r["engine"] == "duckdb")
        {
            Some(duck) => {
                let duck = median(duck);
                println!(
                    "  {label:<38} server {server:8.1}   duckdb {duck:8.1}   server/duckdb {:.2}",
                    server / duck
                );
                if scale.measured && goal && server > duck {
                    failures.push(format!("goal missed: {label} is slower than DuckDB"));
                }
            }
            None => println!("  {label:<38} server {server:8.1}"),
        }
    }
    let (p_server, forced_ms) = (
        median(get("point", "server")),
        median(get("forced", "server")),
    );
    println!(
        "  one meter's month, pruned vs the forced scan: {:.1}x faster",
        forced_ms / p_server
    );
    if scale.measured && forced_ms < 10.0 * p_server {
        failures.push(
            "goal missed: one meter's month is not 10x faster than the whole-tenant scan"
                .to_owned(),
        );
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED:\n  {}", failures.join("\n  "));
        ExitCode::FAILURE
    }
}
