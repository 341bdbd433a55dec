//! Exactly-once across a crash: produce readings, run `meterline run`, SIGKILL it
//! once it has committed something (wherever it is then: batching, uploading or
//! committing), produce more while it is down, run it again, and find exactly the
//! produced readings with the right values.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use meterline::dev::generator::GeneratorSpec;
use meterline_operators::decimal::{format_thousandths, parse_thousandths};

use crate::common::{wait_for, Harness, KEY_HEX};

/// True once `readings` has at least `n` rows (false while it cannot be read yet).
async fn rows_at_least(lake: meterline_sinks::LakeConfig, n: u64) -> bool {
    use arrow::array::AsArray;
    meterline::query::sql::query(&lake, "SELECT count(*) FROM readings")
        .await
        .is_ok_and(|b| {
            b[0].column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0) as u64
                >= n
        })
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(["run", "--config"])
        .arg(config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .envs(meterline::dev::testkit::clock_env())
        .env("METERLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start meterline run")
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SIGTERM: graceful stop.
    let pid = child.id() as i32;
    let rc = unsafe_kill(pid, 15);
    assert_eq!(rc, 0, "kill -TERM");
    child.wait().expect("wait")
}

fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    // No libc dependency: use the kill(1) command.
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill command");
    if status.success() {
        0
    } else {
        1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_stores_every_reading_exactly_once() {
    let h = Harness::new(4);
    let spec = GeneratorSpec {
        meters: 60,
        first_day: NaiveDate::from_ymd_opt(2026, 10, 24).unwrap(),
        days: 3,
        timezone: chrono_tz::Europe::Oslo,
        bad: 0,
        seed: 7,
    };
    let messages = spec.generate();
    let n = messages.len() as u64;
    // The exact expected sum, from the payloads' decimal text.
    let expected_sum: i128 = messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            parse_thousandths(&v["value"].to_string()).unwrap()
        })
        .sum();
    let all: Vec<_> = messages
        .iter()
        .map(|m| (m.key.clone(), Some(m.payload.clone())))
        .collect();
    let (before, after) = all.split_at(all.len() * 2 / 3);
    h.produce(before).await;

    let config = h.config_file("crash-group");
    let lake = h.lake_config();
    let mut first = spawn(&config);
    // Kill once some, but not all, readings are committed: an arbitrary point.
    wait_for("a first commit", Duration::from_secs(60), || {
        rows_at_least(lake.clone(), 1)
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let after_kill = h.count("SELECT count(*) FROM readings").await;
    assert!(after_kill > 0 && after_kill <= before.len() as u64);
    // Records keep arriving while the service is down.
    h.produce(after).await;

    let mut second = spawn(&config);
    wait_for("every reading stored", Duration::from_secs(120), || {
        rows_at_least(lake.clone(), n)
    })
    .await;
    let status = terminate(&mut second);
    assert!(status.success(), "graceful stop exits 0, got {status}");

    assert_eq!(h.count("SELECT count(*) FROM readings").await, n);
    assert_eq!(
        h.count(
            "SELECT count(*) FROM (SELECT DISTINCT source_partition, source_offset FROM readings)"
        )
        .await,
        n,
        "no Kafka offset stored twice"
    );
    let sum = crate::common::query(&lake, "SELECT CAST(sum(value) AS VARCHAR) FROM readings").await;
    use arrow::array::AsArray;
    let sum = sum[0].column(0).as_string::<i32>().value(0).to_owned();
    assert_eq!(sum, format_thousandths(expected_sum), "exact decimal sum");
    assert_eq!(h.count("SELECT count(*) FROM dead_letters").await, 0);
}
