//! The Elhub adapter on real infrastructure (tansu + S3): the EMIF and Min side
//! fixtures (tests/fixtures/elhub, written by hand from the XSD's shapes) go through
//! `meterline elhub ingest` and `meterline run` into the lake, whose
//! `readings_current` must equal an oracle read here from the same files by plain
//! text search (not by the adapter's reader); each bad file is rejected with its
//! reason and the rest goes on; a re-delivered message publishes nothing; master data
//! becomes `meter_profiles` rows without the personal data beside it; and a SIGKILL in
//! the middle of a large message leaves every observation in the lake once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use meterline::dev::testkit::{clock_env, Process};

use crate::rig::{eventually, eventually_async, serial, Rig};
use crate::GRACE;

const TENANT: &str = "acme-industri";
/// The "now" the adapter starts at (its clock moves on from there): the version of
/// the Min side file's values is the import's time.
const IMPORT_NOW: &str = "2026-11-02T12:00:00Z";
/// The oracle's version of a Min side value: the import's time, which the test does not
/// know to the microsecond (checked apart: one instant, within minutes after IMPORT_NOW).
const IMPORT_TIME: i64 = -1;

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/elhub")
        .join(kind)
}

fn files(kind: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(fixtures(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

/// The key of a reading: (meter, quantity, direction, interval start in µs).
type Key = (String, String, String, i64);
/// What the lake must hold for a key: (value in thousandths, quality, version in µs).
type Want = (i128, String, i64);

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].trim())
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Decimal text in thousandths; `None` if it is not a plain decimal.
fn thousandths(text: &str) -> Option<i128> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 3
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<3}");
    Some(whole.parse::<i128>().ok()? * 1000 + frac.parse::<i128>().ok()?)
}

/// The readings of an E66 file, by the mapping table of the README: a series with a
/// value that is not a decimal, an unknown resolution or a wrong observation count is
/// left out whole.
fn oracle_emif(xml: &str, into: &mut BTreeMap<Key, Want>) {
    for chunk in xml.split("<rsm:PayloadEnergyTimeSeries>").skip(1) {
        let step_minutes = match between(chunk, "<abie:ResolutionDuration>", "<").unwrap() {
            "PT1H" | "PT60M" => 60,
            "PT15M" => 15,
            _ => continue,
        };
        let start = instant(between(chunk, "<abie:Start>", "<").unwrap());
        let end = instant(between(chunk, "<abie:End>", "<").unwrap());
        let version = instant(between(chunk, "<abie:RegistrationDateTime>", "<").unwrap());
        let location = chunk
            .split("<abie:MeteringPointUsedDomainLocation>")
            .nth(1)
            .unwrap();
        let meter = between(location, ">", "</abie:Identification>")
            .unwrap()
            .to_owned();
        let quantity = match between(chunk, "<abie:UnitType>", "<").unwrap() {
            "kWh" => "electricity",
            "kvarh" => "reactive_energy",
            _ => continue,
        };
        let direction = match between(chunk, "<abie:Direction>", "<").unwrap() {
            "Out" => "import",
            _ => "export",
        };
        let mut rows = Vec::new();
        for obs in chunk.split("<abie:Observation Sequence=\"").skip(1) {
            let sequence: i64 = obs[..obs.find('"').unwrap()].parse().unwrap();
            let element = &obs[obs.find("<abie:").unwrap() + 6..];
            let kind = &element[..element.find([' ', '>']).unwrap()];
            let quality = match (kind, between(element, "Quality=\"", "\"")) {
                ("Metered", _) => "measured",
                ("Estimated", Some("56")) => "estimated",
                ("Estimated", Some("81")) => "final_estimate",
                ("Temporary", _) => "temporary",
                ("Calculated", _) => "calculated",
                other => panic!("fixture observation {other:?}"),
            };
            let value = between(element, ">", "</abie:").unwrap();
            rows.push((sequence, quality, thousandths(value)));
        }
        let expected = (end - start).num_minutes() / step_minutes;
        if rows.len() as i64 != expected || rows.iter().any(|r| r.2.is_none()) {
            continue;
        }
        for (sequence, quality, value) in rows {
            let at = start + chrono::Duration::minutes(step_minutes * (sequence - 1));
            let key = (
                meter.clone(),
                quantity.to_owned(),
                direction.to_owned(),
                at.timestamp_micros(),
            );
            let want = (
                value.unwrap(),
                quality.to_owned(),
                version.timestamp_micros(),
            );
            newest(into, key, want);
        }
    }
}

/// The newest version of a key wins.
fn newest(into: &mut BTreeMap<Key, Want>, key: Key, want: Want) {
    match into.get(&key) {
        Some(have) if have.2 >= want.2 => {}
        _ => {
            into.insert(key, want);
        }
    }
}

/// The readings of a Min side file of consecutive hours from a local midnight: row i
/// starts i hours after the first, and its local wall time must be what the row says
/// (so 02:00 twice on the autumn day).
fn oracle_min_side(path: &Path, csv: &str, into: &mut BTreeMap<Key, Want>) {
    let name = path.file_name().unwrap().to_string_lossy();
    let meter = name.split('-').find(|p| p.len() == 18).unwrap().to_owned();
    let oslo = chrono_tz::Europe::Oslo;
    let mut first = None;
    for (i, line) in csv.lines().skip(1).enumerate() {
        let cells: Vec<&str> = line.split(';').collect();
        let from = NaiveDateTime::parse_from_str(cells[0], "%d.%m.%Y %H:%M").unwrap();
        let first = *first.get_or_insert_with(|| oslo.from_local_datetime(&from).single().unwrap());
        let at = first + chrono::Duration::hours(i as i64);
        assert_eq!(
            at.naive_local(),
            from,
            "row {i} of {name} is not the next hour"
        );
        let value = thousandths(&cells[2].replace(',', ".")).unwrap();
        let key = (
            meter.clone(),
            "electricity".into(),
            "import".into(),
            at.with_timezone(&Utc).timestamp_micros(),
        );
        newest(into, key, (value, "measured".into(), IMPORT_TIME));
    }
}

fn oracle(paths: &[PathBuf]) -> BTreeMap<Key, Want> {
    let mut want = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap();
        if text.starts_with("<?xml") {
            oracle_emif(&text, &mut want);
        } else {
            oracle_min_side(path, &text, &mut want);
        }
    }
    want
}

/// What `readings_current` holds for the tenant.
async fn lake_readings(rig: &Rig) -> BTreeMap<Key, Want> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};
    let batches = rig
        .query(&format!(
            "SELECT meter, quantity, direction, interval_start, value, quality, version \
             FROM readings_current WHERE tenant = '{TENANT}'"
        ))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for b in &batches {
        let text = |i: usize| b.column(i).as_string::<i32>().clone();
        let (meter, quantity, direction, quality) = (text(0), text(1), text(2), text(5));
        let start = b.column(3).as_primitive::<TimestampMicrosecondType>();
        let value = b.column(4).as_primitive::<Decimal128Type>();
        let version = b.column(6).as_primitive::<TimestampMicrosecondType>();
        for r in 0..b.num_rows() {
            let key = (
                meter.value(r).to_owned(),
                quantity.value(r).to_owned(),
                direction.value(r).to_owned(),
                start.value(r),
            );
            out.insert(
                key,
                (
                    value.value(r),
                    quality.value(r).to_owned(),
                    version.value(r),
                ),
            );
        }
    }
    out
}

/// Records in the readings topic (sum of the partitions' high watermarks).
fn topic_records(rig: &Rig) -> i64 {
    records_in(rig, &rig.topic, 2)
}

/// Records in `topic` of `partitions` partitions.
fn records_in(rig: &Rig, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of partition {p}: {e}"))
                .1
        })
        .sum()
}

/// `meterline elhub ingest` to its end: (exit code, stdout, stderr).
fn ingest(config: &Path, args: &[&str], paths: &[PathBuf]) -> (i32, String, String) {
    ingest_as(TENANT, config, args, paths)
}

/// [`ingest`] for `tenant`.
fn ingest_as(
    tenant: &str,
    config: &Path,
    args: &[&str],
    paths: &[PathBuf],
) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meterline"));
    command
        .args(["elhub", "ingest", "--config"])
        .arg(config)
        .args(["--tenant", tenant])
        .args(args)
        .args(paths)
        .env("METERLINE_FAKE_NOW", IMPORT_NOW);
    let out = command.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("[elhub ingest] {stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn reason_of(rejected: &Path, fixture: &str) -> serde_json::Value {
    let entry = std::fs::read_dir(rejected)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(&format!("-{fixture}.reason.json"))
        })
        .unwrap_or_else(|| panic!("no reason file for {fixture} in {}", rejected.display()));
    serde_json::from_str(&std::fs::read_to_string(entry).unwrap()).unwrap()
}

/// Start `meterline run`, wait until `readings_current` holds the oracle's keys (and
/// each of `also`'s counts reaches its number), stop it.
async fn store(
    rig: &Rig,
    config: &Path,
    want: &BTreeMap<Key, Want>,
    also: &[(&str, u64)],
) -> Process {
    let mut run = rig.spawn("run", config);
    let n = want.len() as u64;
    let sql = format!("SELECT count(*) FROM readings_current WHERE tenant = '{TENANT}'");
    eventually_async(
        "readings_current to hold every reading",
        Duration::from_secs(240),
        || async { rig.try_count(&sql).await.is_ok_and(|c| c >= n) },
    )
    .await;
    for (sql, n) in also {
        eventually_async(sql, Duration::from_secs(120), || async {
            rig.try_count(sql).await.is_ok_and(|c| c >= *n)
        })
        .await;
    }
    run.terminate(GRACE).expect("meterline run stops");
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn elhub_messages_reach_the_lake_exactly_and_bad_files_are_rejected_with_reasons() {
    let _serial = serial().await;
    let rig = Rig::new(2);
    let config = rig.config("elhub", None, "max_batch_rows = 5000");
    let profiles_topic = meterline::dev::testkit::unique_name("profiles");
    rig.broker.create_topic(&profiles_topic, 1);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[inputs]\nprofiles_topic = \"{profiles_topic}\"\n{GRID_AREAS}"
    ));
    std::fs::write(&config, text).unwrap();
    let good = files("good");
    let rejected = rig.dir.path().join("rejected");
    let rejected_arg = rejected.to_str().unwrap();

    // Every good file, once: published.
    let (code, stdout, _) = ingest(&config, &["--rejected", rejected_arg], &good);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout.matches(": published").count(),
        good.len(),
        "{stdout}"
    );
    let after_first = topic_records(&rig);

    // The same files again: nothing new in the topic.
    let (code, stdout, _) = ingest(&config, &["--rejected", rejected_arg], &good);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout.matches("already published").count(),
        good.len(),
        "{stdout}"
    );
    assert_eq!(
        topic_records(&rig),
        after_first,
        "a re-delivery published records"
    );
    assert_eq!(
        records_in(&rig, &profiles_topic, 1),
        3,
        "master data is published once, a profile per payload"
    );
    // What leaves the adapter holds nothing personal of the message, and coordinates
    // only to about a kilometre.
    for payload in payloads_in(&rig, &profiles_topic, 3) {
        for personal in [
            "Nordmann",
            "01018035871",
            "Kirkegata",
            "0087345763",
            "example.no",
            "59.91273",
        ] {
            assert!(!payload.contains(personal), "{personal} in {payload}");
        }
    }

    // Master data for a public tenant: refused whole, nothing published.
    let master = fixtures("good").join("masterdata.xml");
    let (code, stdout, _) = ingest_as(
        "oslo-utility",
        &config,
        &["--rejected", rejected_arg],
        &[master],
    );
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("rejected (tenant_not_private)"), "{stdout}");
    assert_eq!(records_in(&rig, &profiles_topic, 1), 3);
    std::fs::remove_dir_all(&rejected).unwrap();

    // The bad files: each rejected with its reason, the good series beside a bad one
    // published, exit code 3.
    let rejects = files("rejects");
    let (code, stdout, _) = ingest(&config, &["--rejected", rejected_arg], &rejects);
    assert_eq!(code, 3, "{stdout}");
    for (fixture, reason) in [
        ("malformed.xml", "malformed_xml"),
        ("not_emif.xml", "not_emif"),
        ("wrong_namespace.xml", "wrong_namespace"),
        ("wrong_count.xml", "observation_count"),
        ("bad_gsrn.xml", "invalid_gsrn"),
        ("daily.xml", "unsupported_resolution"),
        ("collected_meter_index.xml", "not_interval_data"),
        ("masterdata_unknown_area.xml", "unknown_grid_area"),
    ] {
        assert_eq!(reason_of(&rejected, fixture)["reason"], reason, "{fixture}");
        assert!(
            stdout.contains(&format!("{fixture}: rejected ({reason})")),
            "{fixture}: {stdout}"
        );
    }
    let partial = reason_of(&rejected, "non_numeric.xml");
    assert_eq!(partial["reason"], "partial");
    assert_eq!(partial["refused_series"][0]["series"], 2);
    assert_eq!(partial["refused_series"][0]["reason"], "invalid_value");
    assert!(
        stdout.contains("non_numeric.xml: published 1 series, 2 records"),
        "{stdout}"
    );
    // Nine files, each beside its reason.
    assert_eq!(std::fs::read_dir(&rejected).unwrap().count(), 18);

    // A file above elhub.max_file_bytes is rejected unread.
    let small = rig.dir.path().join("small.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("[elhub]\n", "[elhub]\nmax_file_bytes = 4096\n");
    std::fs::write(&small, text).unwrap();
    let big = fixtures("good").join("dst_autumn_pt15m.xml");
    assert!(std::fs::metadata(&big).unwrap().len() > 4096);
    let (code, stdout, _) = ingest(&small, &["--rejected", rejected_arg], &[big]);
    assert_eq!(code, 3);
    assert!(stdout.contains("rejected (too_large)"), "{stdout}");

    // A watched directory: the file is processed (a duplicate here) and leaves it.
    let inbox = rig.dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::copy(fixtures("good").join("pt1h.xml"), inbox.join("pt1h.xml")).unwrap();
    let watch = [
        "--watch",
        inbox.to_str().unwrap(),
        "--once",
        "--rejected",
        rejected_arg,
    ];
    let (code, stdout, _) = ingest(&small, &watch, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("already published"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        0,
        "the inbox is not empty"
    );

    // Into the lake: exactly the oracle's readings, newest versions, nothing else.
    let mut sources = good.clone();
    sources.push(fixtures("rejects").join("non_numeric.xml"));
    let want = oracle(&sources);
    let profiles = format!("SELECT count(*) FROM meter_profiles WHERE tenant = '{TENANT}'");
    let run = store(&rig, &config, &want, &[(profiles.as_str(), 3)]).await;
    crate::rig::assert_ledger(&run);
    let mut got = lake_readings(&rig).await;
    let import_times: std::collections::BTreeSet<i64> = want
        .iter()
        .filter(|(_, v)| v.2 == IMPORT_TIME)
        .filter_map(|(k, _)| got.get(k).map(|g| g.2))
        .collect();
    let from = instant(IMPORT_NOW).timestamp_micros();
    assert_eq!(
        import_times.len(),
        1,
        "a Min side file's values have one version: {import_times:?}"
    );
    let at = *import_times.first().unwrap();
    assert!(
        at >= from && at < from + 300_000_000,
        "the version is not the import's time: {at}"
    );
    for (k, v) in &want {
        if v.2 == IMPORT_TIME {
            if let Some(g) = got.get_mut(k) {
                g.2 = IMPORT_TIME;
            }
        }
    }
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone(), got.get(k).cloned()))
        .take(10)
        .collect();
    assert!(
        differ.is_empty(),
        "lake differs from the oracle (key, want, got): {differ:?}"
    );
    assert_eq!(
        got.len(),
        want.len(),
        "the lake holds readings the files do not"
    );
    // The DST days: 23 and 25 hours, 92 and 100 quarters.
    let day_count = |meter: &str, from: &str, to: &str| {
        let (from, to) = (
            instant(from).timestamp_micros(),
            instant(to).timestamp_micros(),
        );
        got.keys()
            .filter(|k| k.0 == meter && k.3 >= from && k.3 < to)
            .count()
    };
    let (a, b) = ("707057500000000186", "707057500000000278");
    assert_eq!(
        day_count(a, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
        23
    );
    assert_eq!(
        day_count(a, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
        25
    );
    assert_eq!(
        day_count(b, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
        92
    );
    assert_eq!(
        day_count(b, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
        100
    );
    assert_eq!(rig.count("SELECT count(*) FROM dead_letters").await, 0);
    check_profiles(&rig).await;
}

/// The grid areas the master data fixtures name (one of them unknown).
const GRID_AREAS: &str = r#"
[elhub]
household_scheme = "norgespris"
grid_areas = { "50Y0000000000123" = { price_area = "NO1", grid_company_gln = "7080000000012" }, "50Y0000000000456" = { price_area = "NO4", grid_company_gln = "7080000000029" } }
"#;

/// A profile: (meter, valid_from, price area, GLN, customer group, tax zone, scheme,
/// latitude, longitude, version in µs).
type ProfileRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
);

/// The profiles of the master data fixture, by the README's mapping, read by plain text
/// search: the date of a local-midnight `StartOfOccurrence` is its first ten
/// characters, coordinates round to two decimals.
fn oracle_profiles() -> Vec<ProfileRow> {
    let xml = std::fs::read_to_string(fixtures("good").join("masterdata.xml")).unwrap();
    let version = instant(between(&xml, "<abie:Creation>", "<").unwrap()).timestamp_micros();
    let areas = BTreeMap::from([
        ("50Y0000000000123", ("NO1", "7080000000012")),
        ("50Y0000000000456", ("NO4", "7080000000029")),
    ]);
    let mut out = Vec::new();
    for chunk in xml.split("<rsm:PayloadMasterdataMPEvent>").skip(1) {
        let field = |open: &str| between(chunk, open, "<").map(str::to_owned);
        let meter = between(
            chunk,
            "<abie:MeteringPointUsedDomainLocation>",
            "</abie:MeteringPointUsedDomainLocation>",
        )
        .and_then(|t| between(t, ">", "</abie:Identification>"))
        .unwrap()
        .to_owned();
        let area = between(
            chunk,
            "<abie:MeteringGridAreaUsedDomainLocation>",
            "</abie:MeteringGridAreaUsedDomainLocation>",
        )
        .and_then(|t| between(t, ">", "</abie:Identification>"))
        .unwrap();
        let (price_area, gln) = areas[area];
        let group = match field("<abie:ConsumptionCode>").unwrap().as_str() {
            "35" => "household",
            "36" => "cabin",
            other => panic!("fixture code {other}"),
        };
        let zone = match (
            field("<abie:VATCode>").unwrap().as_str(),
            field("<abie:ElFee>").as_deref(),
        ) {
            ("S", _) => "standard",
            ("E", Some("0")) => "finnmark",
            ("E", _) => "north",
            other => panic!("fixture taxation {other:?}"),
        };
        let scheme = if group == "household" {
            "norgespris"
        } else {
            "none"
        };
        let round = |t: Option<String>| {
            t.map(|t| format!("{:.2}", (t.parse::<f64>().unwrap() * 100.0).round() / 100.0))
                .unwrap_or_default()
        };
        out.push((
            meter,
            field("<abie:StartOfOccurrence>").unwrap()[..10].to_owned(),
            price_area.to_owned(),
            gln.to_owned(),
            group.to_owned(),
            zone.to_owned(),
            scheme.to_owned(),
            round(field("<abie:Latitude>")),
            round(field("<abie:Longitude>")),
            version,
        ));
    }
    out.sort();
    out
}

/// `meter_profiles` equals the oracle, and nothing personal of the fixture is anywhere
/// in the lake.
async fn check_profiles(rig: &Rig) {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampMicrosecondType;
    let want = oracle_profiles();
    let batches = rig
        .query(&format!(
            "SELECT meter, CAST(valid_from AS VARCHAR) AS valid, price_area, grid_company_gln, \
             customer_group, tax_zone, scheme, COALESCE(CAST(latitude AS VARCHAR), '') AS lat, \
             COALESCE(CAST(longitude AS VARCHAR), '') AS lon, version \
             FROM meter_profiles WHERE tenant = '{TENANT}'"
        ))
        .await
        .unwrap();
    let mut got = Vec::new();
    for b in &batches {
        let text = |i: usize, r: usize| {
            let column =
                arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
            column.as_string::<i32>().value(r).to_owned()
        };
        let version = b.column(9).as_primitive::<TimestampMicrosecondType>();
        for r in 0..b.num_rows() {
            got.push((
                text(0, r),
                text(1, r),
                text(2, r),
                text(3, r),
                text(4, r),
                text(5, r),
                text(6, r),
                text(7, r),
                text(8, r),
                version.value(r),
            ));
        }
    }
    got.sort();
    assert_eq!(got, want, "meter_profiles differs from the master data");
}

/// The payloads of the first `n` records of partition 0 of `topic`.
fn payloads_in(rig: &Rig, topic: &str, n: usize) -> Vec<String> {
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .set("group.id", meterline::dev::testkit::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} records of {topic}",
            out.len()
        );
        if let Some(m) = consumer.poll(Duration::from_secs(1)) {
            let m = m.unwrap();
            out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    out
}

/// An E66 message of `series` PT15M series of one day (the test's own writer).
fn large_message(series: usize) -> (String, usize) {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rsm:NotifyValidatedDataForBillingEnergy xmlns:rsm="urn:no:elhub:emif:metering:NotifyValidatedDataForBillingEnergy:v2" xmlns:abie="urn:no:elhub:emif:common:AggregatedBusinessInformationEntities:v2">
  <rsm:Header><abie:Identification>9e0d4c1b-0000-4000-8000-00000000beef</abie:Identification><abie:DocumentType>E66</abie:DocumentType></rsm:Header>
"#,
    );
    let mut observations = 0;
    for s in 0..series {
        let meter = meterline::dev::generator::gsrn(1000 + s as u32);
        xml.push_str(&format!(
            "<rsm:PayloadEnergyTimeSeries><abie:Identification>s-{s}</abie:Identification>\
             <abie:RegistrationDateTime>2026-10-21T06:00:00+02:00</abie:RegistrationDateTime>\
             <abie:ObservationPeriodTimeSeriesPeriod><abie:ResolutionDuration>PT15M</abie:ResolutionDuration>\
             <abie:Start>2026-10-20T00:00:00+02:00</abie:Start><abie:End>2026-10-21T00:00:00+02:00</abie:End>\
             </abie:ObservationPeriodTimeSeriesPeriod>\
             <abie:ProductIncludedProductCharacteristics><abie:UnitType>kWh</abie:UnitType></abie:ProductIncludedProductCharacteristics>\
             <abie:MPDetailMeasurementMeteringPointCharacteristic><abie:Direction>Out</abie:Direction></abie:MPDetailMeasurementMeteringPointCharacteristic>\
             <abie:MeteringPointUsedDomainLocation><abie:Identification>{meter}</abie:Identification></abie:MeteringPointUsedDomainLocation>\n"
        ));
        for q in 0..96 {
            xml.push_str(&format!(
                "<abie:Observation Sequence=\"{}\"><abie:Metered>{}.{:03}</abie:Metered></abie:Observation>\n",
                q + 1,
                q % 3,
                (s * 7 + q) % 1000
            ));
            observations += 1;
        }
        xml.push_str("</rsm:PayloadEnergyTimeSeries>\n");
    }
    xml.push_str("</rsm:NotifyValidatedDataForBillingEnergy>\n");
    (xml, observations)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_in_the_middle_of_a_message_leaves_each_observation_in_the_lake_once() {
    let _serial = serial().await;
    let rig = Rig::new(2);
    let config = rig.config("elhub-kill", None, "max_batch_rows = 50000");
    let inbox = rig.dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let (xml, total) = large_message(2500);
    let file = inbox.join("e66-large.xml");
    std::fs::write(&file, &xml).unwrap();
    let spawn = |name: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_meterline"));
        command
            .args(["elhub", "ingest", "--config"])
            .arg(&config)
            .args(["--tenant", TENANT, "--watch"])
            .arg(&inbox)
            .env("METERLINE_LOG", "info")
            .envs(clock_env());
        Process::spawn(name, command)
    };

    // The adapter dies while the message is half published.
    let mut first = spawn("ingest-1");
    eventually(
        "part of the message in the topic",
        Duration::from_secs(120),
        || topic_records(&rig) > 10_000,
    )
    .await;
    first.kill();
    let at_kill = topic_records(&rig);
    assert!(
        at_kill < total as i64,
        "the whole message was published before the kill ({at_kill}): make it larger"
    );
    assert!(file.exists(), "the half-published file left the inbox");

    // A restart publishes the message again, whole, then removes it.
    let mut second = spawn("ingest-2");
    eventually(
        "the file to leave the inbox",
        Duration::from_secs(240),
        || !file.exists(),
    )
    .await;
    second
        .terminate(GRACE)
        .expect("the adapter stops on SIGTERM");
    let in_topic = topic_records(&rig);
    // The records sent before the kill are in the topic twice.
    assert!(
        in_topic >= total as i64 + at_kill,
        "{in_topic} records for {total}"
    );

    // Every observation in the lake once, with its value.
    let mut want = BTreeMap::new();
    oracle_emif(&xml, &mut want);
    assert_eq!(want.len(), total);
    let run = store(&rig, &config, &want, &[]).await;
    crate::rig::assert_ledger(&run);
    let got = lake_readings(&rig).await;
    assert_eq!(got.len(), total);
    assert!(
        want.iter().all(|(k, v)| got.get(k) == Some(v)),
        "values differ from the message"
    );
    assert_eq!(
        rig.count(&format!(
            "SELECT count(*) FROM readings WHERE tenant = '{TENANT}'"
        ))
        .await,
        total as u64,
        "a re-published observation was stored twice"
    );
    assert_eq!(
        rig.count("SELECT count(*) FROM elhub_messages").await,
        1,
        "the message is registered once"
    );
}
