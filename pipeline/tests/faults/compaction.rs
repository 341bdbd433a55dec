//! Compaction on the real broker and S3. `meterline run` with 25-row flushes
//! leaves each day of `readings` in many small files; a run with compaction on
//! (its clock at 00:30 on 1 November, Oslo) rewrites every day before yesterday
//! as one file sorted by meter, leaves yesterday (31 October) alone, and changes
//! no row: the produced records are in the lake exactly once with their exact
//! sum, the Kafka offsets stored in the table are those before, the daily
//! aggregates still agree with the readings. An append that commits between a
//! compaction's read and its commit survives it.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use meterline_sinks::Partition;

use crate::rig::{assert_ledger, messages, serial, Rig};
use crate::traffic::hourly;
use crate::GRACE;

/// 1 November 2026, 00:30 in Oslo: yesterday is 31 October, and every earlier
/// day of the test data (20 to 31 October) is cold.
const NOW: &str = "2026-11-01T00:30:00+01:00";
const YESTERDAY: &str = "2026-10-31";

/// A flush happens between chunks: 25-record chunks make 25-row flushes.
fn small_flushes(config: std::path::PathBuf) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("chunk_max_records = 1000"), "{text}");
    std::fs::write(
        &config,
        text.replace("chunk_max_records = 1000", "chunk_max_records = 25"),
    )
    .unwrap();
    config
}

async fn readings(rig: &Rig) -> DeltaTable {
    let lake = meterline_sinks::Lake::new(&rig.lake()).expect("lake");
    meterline_sinks::open_existing(&lake, "readings")
        .await
        .expect("readings readable")
        .expect("readings exists")
}

/// The data files of each `[tenant, local_date]` partition, read from the Delta
/// log with deltalake (not with meterline's listing).
async fn files(table: &DeltaTable) -> BTreeMap<Partition, Vec<String>> {
    let adds: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .expect("files listed");
    let mut out: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
    for f in &adds {
        let values = f.partition_values_map();
        let value = |c: &str| values.get(c).cloned().flatten().expect("partition value");
        out.entry(vec![value("tenant"), value("local_date")])
            .or_default()
            .push(f.path().into_owned());
    }
    out
}

/// Every row of `readings` as text, sorted: what a reader sees.
async fn rows(rig: &Rig) -> Vec<String> {
    let batches = rig
        .query(
            "SELECT tenant, CAST(local_date AS VARCHAR), source_partition, source_offset, meter, \
             CAST(interval_start AS VARCHAR), CAST(value AS VARCHAR), quality FROM readings",
        )
        .await
        .expect("readings readable");
    let mut out = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, i).expect("a cell"))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}

/// The `meter` column of a data file, in file order (read with the parquet crate
/// from the bucket).
async fn meters_in(table: &DeltaTable, path: &str) -> Vec<String> {
    use object_store::ObjectStoreExt;
    let store = table.object_store();
    let bytes = store
        .get(&deltalake::Path::from(path))
        .await
        .expect("data file readable")
        .bytes()
        .await
        .expect("data file bytes");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("parquet reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("a batch");
        let meters = batch.column_by_name("meter").expect("meter column");
        let meters = arrow::compute::cast(meters, &arrow::datatypes::DataType::Utf8).unwrap();
        let meters = meters.as_string::<i32>();
        out.extend((0..meters.len()).map(|i| meters.value(i).to_owned()));
    }
    out
}

async fn stored_offsets(rig: &Rig, table: &DeltaTable) -> Vec<Option<i64>> {
    let snapshot = table.snapshot().expect("snapshot");
    let mut out = Vec::new();
    for p in 0..2 {
        let app_id = format!("meterline:{}:{p}", rig.topic);
        out.push(
            snapshot
                .transaction_version(table.log_store().as_ref(), app_id)
                .await
                .expect("txn readable"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_rewrites_cold_days_sorted_and_loses_no_row_nor_a_racing_append() {
    let _serial = serial().await;
    let mut rig = Rig::new(2);
    rig.produce(&messages(6_000, 0, 31)).await;
    let env = [("METERLINE_FAKE_NOW", NOW)];
    let off = small_flushes(rig.config(
        "compaction-off",
        None,
        "max_batch_rows = 25\n\n[compaction]\nenabled = false\n",
    ));

    // 1. Many small files per day.
    let mut a = rig.spawn_with_env("a", &off, &env);
    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    assert!(a
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert_ledger(&a);
    let before = readings(&rig).await;
    let files_before = files(&before).await;
    let rows_before = rows(&rig).await;
    let busiest = files_before.values().map(Vec::len).max().unwrap_or(0);
    assert!(
        busiest >= 8,
        "small flushes made many files per day: {files_before:?}"
    );

    // 2. A race: the compaction reads version `before`, an append lands, then
    // the compaction commits. The appended rows must survive.
    let (raced, raced_files) = files_before
        .iter()
        .find(|(p, f)| p[0] == "acme-industri" && p[1] != YESTERDAY && f.len() >= 4)
        .map(|(p, f)| (p.clone(), f.len()))
        .expect("a cold day with several files");
    // Two new meters' first twelve hours of that day (local midnight in Oslo).
    let day = chrono::NaiveDate::parse_from_str(&raced[1], "%Y-%m-%d").unwrap();
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(chrono_tz::Europe::Oslo)
        .earliest()
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut late = Vec::new();
    for n in [90_001, 90_002] {
        let meter = meterline::dev::generator::gsrn(n);
        late.extend(hourly("acme-industri", &meter, None, midnight, 12, 1.25));
    }
    rig.produce(&late).await;
    let mut b = rig.spawn_with_env("b", &off, &env);
    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    assert!(b
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert_ledger(&b);
    let appended = files(&readings(&rig).await).await;
    let late_files = appended[&raced].len() - raced_files;
    assert!(late_files > 0, "the late records added files to {raced:?}");
    let (after_race, done) = meterline_sinks::compact::compact_partition(
        &before,
        "readings",
        &["tenant", "local_date"],
        &raced,
    )
    .await
    .expect("compaction ran")
    .expect("an append does not conflict with a compaction");
    assert_eq!(done.files_removed as usize, raced_files, "{done:?}");
    let raced_now = &files(&after_race).await[&raced];
    assert_eq!(
        raced_now.len(),
        1 + late_files,
        "compacted + appended: {raced_now:?}"
    );
    rig.assert_exact().await;

    // 3. `meterline run` compacts the other cold days, not yesterday.
    let offsets_before = stored_offsets(&rig, &readings(&rig).await).await;
    let on = small_flushes(rig.config(
        "compaction-on",
        None,
        "max_batch_rows = 25\n\n[compaction]\nevery_secs = 1\nmin_files = 4\n",
    ));
    let mut c = rig.spawn_with_env("c", &on, &env);
    c.wait_line(0, Duration::from_secs(180), |l| {
        l.contains("compaction: round done") && !l.contains("partitions=0")
    });
    assert!(c
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let after = readings(&rig).await;
    let files_after = files(&after).await;
    for (partition, was) in &files(&after_race).await {
        let now = &files_after[partition];
        if partition[1] == YESTERDAY || was.len() < 4 {
            assert_eq!(now, was, "{partition:?} is not compacted");
            continue;
        }
        assert_eq!(
            now.len(),
            1,
            "{partition:?}: {} files became {now:?}",
            was.len()
        );
        let meters = meters_in(&after, &now[0]).await;
        assert!(!meters.is_empty());
        assert!(
            meters.windows(2).all(|w| w[0] <= w[1]),
            "{partition:?}: rows sorted by meter"
        );
    }
    let total_before: usize = files_before.values().map(Vec::len).sum();
    let total_after: usize = files_after.values().map(Vec::len).sum();
    let counts = |f: &BTreeMap<Partition, Vec<String>>| {
        f.iter()
            .map(|(p, files)| format!("{}/{}: {}", p[0], p[1], files.len()))
            .collect::<Vec<_>>()
    };
    eprintln!(
        "compaction: {total_before} files became {total_after}; before {:?}; after {:?}",
        counts(&files_before),
        counts(&files_after)
    );
    assert!(
        total_after * 3 < total_before,
        "{total_before} files became {total_after}"
    );

    // No row lost, duplicated or changed; offsets and aggregates as they were.
    rig.assert_exact().await;
    let rows_after = rows(&rig).await;
    assert_eq!(rows_after.len() as u64, rig.produced.good);
    let unchanged = rows_before
        .iter()
        .filter(|r| rows_after.binary_search(r).is_ok())
        .count();
    assert_eq!(
        unchanged,
        rows_before.len(),
        "every row of before, unchanged"
    );
    assert_eq!(
        stored_offsets(&rig, &after).await,
        offsets_before,
        "offsets untouched"
    );
    assert!(
        c.lines_matching(|l| l.contains("recomputing every day"))
            .is_empty(),
        "the compaction made the aggregates start over"
    );
    assert_eq!(
        rig.daily_differences().await,
        0,
        "aggregates agree with readings"
    );
}
