//! `meterline demo` as a user runs it: the built binary into a temporary lake. It
//! must exit 0, print counts that add up, and leave a lake that holds them. The
//! expected figures are worked out below from the generator's specification, not
//! by running the generator.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meterline_sinks::LakeConfig;

use crate::common::count;

/// `meterline demo --meters 8 --days 2 --from 2026-10-24 --bad 12`:
/// - meters 0..8, even ones public, odd ones private; every fourth (3 and 7,
///   private) reports quarter hours, the other six hours;
/// - 2026-10-24 has 24 local hours, 2026-10-25 (end of DST in Oslo) 25: 49 hours;
/// - good readings: 6 x 49 + 2 x 49 x 4 = 686 (public: 4 x 49 = 196);
/// - 12 bad records, two of each of the six kinds;
/// - corrections of meter 1: three newer versions (stored), one of them again (a
///   duplicate, dropped) and one original again (superseded, dropped).
const ARGS: [&str; 8] = [
    "--meters",
    "8",
    "--days",
    "2",
    "--from",
    "2026-10-24",
    "--bad",
    "12",
];
pub(crate) const GOOD: u64 = 686;
const PUBLIC_GOOD: u64 = 196;
pub(crate) const BAD: u64 = 12;
pub(crate) const NEWER_VERSIONS: u64 = 3;
pub(crate) const DROPPED: u64 = 2;
pub(crate) const PRODUCED: u64 = GOOD + BAD + NEWER_VERSIONS + DROPPED;
const REASONS: [&str; 6] = [
    "invalid_timestamp",
    "malformed_json",
    "missing_field",
    "negative_value",
    "unknown_tenant",
    "wrong_type",
];

/// The number at the end of the summary line that starts with `label`.
fn figure(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in the summary:\n{summary}"));
    line.split_whitespace()
        .nth(label.split_whitespace().count())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count on the `{label}` line: {line}"))
}

/// Run `meterline demo` (killed after `timeout`); (exit code, stdout, stderr).
fn demo(lake: &std::path::Path, timeout: Duration) -> (Option<i32>, String, String) {
    run_demo(lake, timeout, &[], &[])
}

/// [`demo`] with global options before `demo` (`--log-format json`) and environment.
pub(crate) fn run_demo(
    lake: &std::path::Path,
    timeout: Duration,
    options: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let dir = lake.parent().expect("the lake has a parent directory");
    let (out, err) = (dir.join("demo.out"), dir.join("demo.err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(options)
        .envs(env.iter().copied())
        .arg("demo")
        .arg("--lake")
        .arg(lake)
        .args(ARGS)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start meterline demo");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meterline demo did not finish within {timeout:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status.code(),
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exits_zero_with_counts_that_add_up_and_a_lake_that_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (code, summary, stderr) = demo(&lake, Duration::from_secs(180));
    assert_eq!(code, Some(0), "{summary}{stderr}");

    assert_eq!(figure(&summary, "records produced"), PRODUCED, "{summary}");
    assert_eq!(
        figure(&summary, "readings stored"),
        GOOD + NEWER_VERSIONS,
        "{summary}"
    );
    assert_eq!(figure(&summary, "dead-lettered"), BAD, "{summary}");
    for reason in REASONS {
        assert_eq!(figure(&summary, reason), BAD / 6, "{reason}: {summary}");
    }
    assert_eq!(
        figure(&summary, "intentionally dropped"),
        DROPPED,
        "{summary}"
    );
    assert_eq!(figure(&summary, "readings_current"), GOOD, "{summary}");
    assert!(
        summary.contains(&format!(
            "check: {PRODUCED} = {} + {BAD} + {DROPPED}  -> OK",
            GOOD + NEWER_VERSIONS
        )),
        "{summary}"
    );
    assert!(
        summary.contains("(25 hours on this local day)"),
        "the showcased day is the 25-hour DST day: {summary}"
    );

    // The lake holds what the summary says.
    let lake = LakeConfig {
        uri: lake.to_string_lossy().into_owned(),
        storage_options: Default::default(),
    };
    assert_eq!(
        count(&lake, "SELECT count(*) FROM readings").await,
        GOOD + NEWER_VERSIONS
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM readings_current").await,
        GOOD
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM readings_current WHERE tenant = 'oslo-utility'"
        )
        .await,
        PUBLIC_GOOD
    );
    assert_eq!(count(&lake, "SELECT count(*) FROM dead_letters").await, BAD);
    // One row per meter and local day after the demo's aggregation round.
    assert_eq!(
        count(&lake, "SELECT count(*) FROM consumption_daily").await,
        8 * 2
    );
    // Every hour of the private customer's meters is priced once, as the aggregates count
    // them, and one customer's month is printed.
    let private_hours = count(
        &lake,
        "SELECT count(*) FROM consumption_hourly WHERE tenant = 'acme-industri'",
    )
    .await;
    assert!(private_hours > 0);
    assert_eq!(
        count(&lake, "SELECT count(*) FROM cost_hourly").await,
        private_hours
    );
    assert!(
        summary.contains("one customer's month, from cost_monthly"),
        "{summary}"
    );
    assert!(summary.contains("capacity charge (fastledd)"), "{summary}");
}
