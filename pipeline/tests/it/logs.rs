//! `--log-format json` as a contract (README "Logs"): every line of a run is one JSON
//! object with `timestamp`, `level`, `target` and `fields.message`, and the structured
//! fields Loki or Elastic users index keep their names and types. Checked on the
//! demo, whose figures `demo.rs` works out from the generator's specification.

use std::time::Duration;

use crate::demo::{run_demo, BAD, DROPPED, GOOD, NEWER_VERSIONS, PRODUCED};

const ARGS_NOTE: &str = "the demo of demo.rs: --meters 8 --days 2 --from 2026-10-24 --bad 12";

fn int(v: &serde_json::Value, field: &str) -> u64 {
    v["fields"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("fields.{field} is not a whole number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_keep_their_fields_and_name_no_meter() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (code, summary, stderr) = run_demo(
        &lake,
        Duration::from_secs(180),
        &["--log-format", "json"],
        &[("METERLINE_LOG", "warn,meterline=info,meterline_sinks=info")],
    );
    assert_eq!(code, Some(0), "{summary}{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{} lines:\n{stderr}", lines.len());
    for v in &lines {
        let time = v["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("timestamp: {v}"));
        chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
        assert!(time.ends_with('Z'), "not UTC: {time}");
        let level = v["level"].as_str().unwrap_or_default();
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{v}"
        );
        let target = v["target"].as_str().unwrap_or_default();
        assert!(!target.is_empty(), "{v}");
        assert!(v["fields"].is_object(), "{v}");
        // meterline's own lines always say what happened; a library may log fields only.
        if target.starts_with("meterline") {
            assert!(v["fields"]["message"].is_string(), "{v}");
        }
    }
    let find = |target: &str, prefix: &str| {
        lines
            .iter()
            .find(|v| {
                v["target"] == target
                    && v["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no `{prefix}` line of {target} in {ARGS_NOTE}:\n{stderr}"))
    };
    // The conservation ledger, as numbers.
    let ledger = find("meterline::service", "ledger:");
    assert_eq!(int(ledger, "consumed"), PRODUCED);
    assert_eq!(int(ledger, "written"), GOOD + NEWER_VERSIONS);
    assert_eq!(int(ledger, "dead_lettered"), BAD);
    assert_eq!(int(ledger, "dropped"), DROPPED);
    assert_eq!(ledger["fields"]["balanced"], true);
    // The start: topic, group, lake, the memory bound.
    let started = find("meterline::service", "pipeline started");
    for field in ["topic", "group", "lake"] {
        assert!(started["fields"][field].is_string(), "{field}: {started}");
    }
    assert!(int(started, "memory_bound_mib") > 0);
    // Tables by name, partitions as a list.
    let tables: Vec<&str> = lines
        .iter()
        .filter(|v| v["fields"]["message"] == "created delta table")
        .filter_map(|v| v["fields"]["table"].as_str())
        .collect();
    assert!(
        tables.contains(&"readings") && tables.contains(&"dead_letters"),
        "{tables:?}"
    );
    let assigned = find("meterline::kafka::source", "partitions assigned");
    assert!(assigned["fields"]["partitions"].is_string(), "{assigned}");
    // No meter id in any line: the demo's meters all start with Elhub's GS1 prefix.
    assert!(!stderr.contains("707057500"), "a meter id in the logs");
}
