//! Fault scenarios against real infrastructure: a tansu Kafka broker and an S3
//! server (moto) on loopback, `meterline run` as child processes. Each scenario
//! breaks something on purpose and then checks that every produced record is in
//! the lake exactly once (readings or dead letters), with exact values, and that
//! each cleanly stopped process's ledger balances:
//! consumed = written + dead-lettered + dropped.
//!
//! The tools come from `scripts/test.sh` (see `meterline::testkit`).

mod aggregates;
mod dead_letters;
mod erasure;
mod lifecycle;
mod rig;
mod storage;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rig::{assert_ledger, eventually, messages, metric, scrape, serial, Rig};

const GRACE: Duration = Duration::from_secs(20);

fn is_assigned(line: &str) -> bool {
    line.contains("partitions assigned")
}

fn is_uploading(line: &str) -> bool {
    line.contains("uploading data files") && line.contains("table=\"readings\"")
        || line.contains("uploading data files") && line.contains("table=readings")
}

fn is_committing(line: &str) -> bool {
    line.contains("data files uploaded; committing")
}

fn is_committed(line: &str) -> bool {
    line.contains("committed") && line.contains("version=")
}

/// The partitions in an "assigned" log line, e.g. `partitions=[0, 1]`.
fn partitions_of(line: &str) -> Vec<i32> {
    line.split_once("partitions=[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// 1. SIGKILL at five or more moments chosen at random within each phase
///    (batching, uploading data files, between upload and commit, anywhere),
///    restarting each time; then the lake holds exactly the 200,000 readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_five_times_loses_and_duplicates_nothing() {
    let _serial = serial().await;
    let mut rig = Rig::new(4);
    rig.produce(&messages(200_000, 40, 11)).await;
    assert_eq!(rig.produced.good, 200_000);
    let config = rig.config("crash", None, "max_batch_rows = 10000");

    let seed: u64 = rand::random();
    eprintln!("crash scenario seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    #[derive(Debug, Clone, Copy)]
    enum Moment {
        Batching,
        Uploading,
        BeforeCommit,
        Anywhere,
    }
    let plan = [
        Moment::Batching,
        Moment::Uploading,
        Moment::BeforeCommit,
        Moment::Anywhere,
        Moment::Uploading,
        Moment::BeforeCommit,
    ];
    let mut kills = 0;
    for (i, moment) in plan.into_iter().enumerate() {
        let mut p = rig.spawn(&format!("run{i}"), &config);
        let assigned = p.wait_line(0, Duration::from_secs(120), is_assigned);
        match moment {
            Moment::Batching => {
                // Consuming and buffering, before the first flush is due.
                let ms = rng.random_range(0..800);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Moment::Uploading => {
                let nth = rng.random_range(1..=2);
                let mut at = assigned;
                for _ in 0..nth {
                    at = p.wait_line(at + 1, Duration::from_secs(120), is_uploading);
                }
            }
            Moment::BeforeCommit => {
                let nth = rng.random_range(1..=2);
                let mut at = assigned;
                for _ in 0..nth {
                    at = p.wait_line(at + 1, Duration::from_secs(120), is_committing);
                }
            }
            Moment::Anywhere => {
                p.wait_line(assigned, Duration::from_secs(120), is_committed);
                let ms = rng.random_range(0..1500);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        p.kill();
        kills += 1;
        let rows = rig.rows().await;
        eprintln!("killed run{i} ({moment:?}); {rows} rows stored");
        rig.assert_no_duplicates().await;
        assert!(rows < rig.produced.good, "killed after the stream was done");
    }
    assert!(kills >= 5);

    let mut last = rig.spawn("final", &config);
    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    let status = last.terminate(GRACE + Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}"
    );
    assert_ledger(&last);
    rig.assert_exact().await;
}

/// 2. Two processes share the partitions; one of them leaves mid-stream (SIGTERM:
///    it commits and leaves the group); the other is assigned its partitions and
///    resumes them from the offsets stored in the lake.
///
///    (A SIGKILLed member is covered by the crash scenario. tansu 0.6 keeps a
///    member that stopped heartbeating in the member list of the group's next
///    generation, so a survivor would never be offered the dead member's
///    partitions; with Apache Kafka the session timeout removes it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_survivor_takes_over_from_the_lake_offsets() {
    let _serial = serial().await;
    let mut rig = Rig::new(4);
    rig.produce(&messages(120_000, 20, 12)).await;
    let config = rig.config("rebalance", None, "max_batch_rows = 5000");

    let mut a = rig.spawn("a", &config);
    let a_first = a.wait_line(0, Duration::from_secs(120), is_assigned);
    a.wait_line(a_first, Duration::from_secs(120), is_committed);

    let mut b = rig.spawn("b", &config);
    // The group rebalances: b gets a share, a keeps the rest.
    let b_share = b.wait_line(0, Duration::from_secs(120), |l| {
        is_assigned(l) && !partitions_of(l).is_empty()
    });
    let b_line = b.lines_matching(|l| is_assigned(l) && !partitions_of(l).is_empty())[0].clone();
    let b_parts = partitions_of(&b_line);
    assert!(b_parts.len() < 4, "b got a share: {b_line}");
    let a_again = a.wait_line(a_first + 1, Duration::from_secs(120), |l| {
        is_assigned(l) && !partitions_of(l).is_empty()
    });
    let a_parts =
        partitions_of(&a.lines_matching(|l| is_assigned(l) && !partitions_of(l).is_empty())[1]);
    a.wait_line(a_again, Duration::from_secs(120), is_committed);
    b.wait_line(b_share, Duration::from_secs(120), is_committed);
    assert!(
        rig.rows().await < rig.produced.good,
        "both worked mid-stream"
    );

    // a leaves mid-stream; b must end up owning all four partitions and start
    // a's partitions at the offsets a committed.
    let status = a.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "a stops cleanly");
    let a_ledger = assert_ledger(&a);
    let takeover = b.wait_line(b_share + 1, Duration::from_secs(120), |l| {
        is_assigned(l) && partitions_of(l).len() == 4
    });
    let loaded = b.lines_matching(|l| l.contains("stored offsets loaded"));
    let loaded = loaded.last().unwrap();
    for p in &a_parts {
        assert!(
            loaded.contains(&format!("{p}: Some(")),
            "b resumes a's partition {p} from a stored offset: {loaded}"
        );
    }
    assert!(takeover > b_share);
    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    let status = b.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "b stops cleanly");
    let b_ledger = assert_ledger(&b);
    // Nothing was consumed twice: a committed everything before it left.
    assert_eq!(
        a_ledger.consumed + b_ledger.consumed,
        rig.produced.total(),
        "{a_ledger:?} {b_ledger:?}"
    );
    rig.assert_exact().await;
}

/// 3. The S3 server stops answering for 30 seconds mid-stream: meterline counts
///    and logs the errors, retries with backoff, pauses consumption (a bounded
///    buffer), and completes once storage is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_pauses_retries_and_completes() {
    let _serial = serial().await;
    let mut rig = Rig::new(4);
    rig.produce(&messages(100_000, 20, 13)).await;
    let port = meterline::testkit::free_port();
    let config = rig.config("s3-outage", Some(port), "max_batch_rows = 5000");
    let mut p = rig.spawn("run", &config);
    let assigned = p.wait_line(0, Duration::from_secs(120), is_assigned);
    p.wait_line(assigned, Duration::from_secs(120), is_committed);

    rig.s3.server.pause();
    let paused_at = std::time::Instant::now();
    let mut peak_buffered = 0.0_f64;
    // During the outage: errors counted, consumption paused, buffer bounded.
    eventually(
        "storage errors and paused consumption",
        Duration::from_secs(28),
        || {
            let Some(text) = scrape(port) else {
                return false;
            };
            peak_buffered = peak_buffered.max(metric(&text, "meterline_buffered_rows"));
            metric(&text, "meterline_storage_errors_total") > 0.0
                && metric(&text, "meterline_consumer_paused") == 1.0
        },
    )
    .await;
    assert!(
        !p.lines_matching(|l| l.contains("storage error; retrying"))
            .is_empty(),
        "the outage is logged"
    );
    let consumed_in_outage = {
        let a = metric(&scrape(port).unwrap(), "meterline_records_consumed_total");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = metric(&scrape(port).unwrap(), "meterline_records_consumed_total");
        b - a
    };
    assert_eq!(
        consumed_in_outage, 0.0,
        "consumption paused while storage is down"
    );
    assert!(
        peak_buffered <= 5000.0 + 1000.0,
        "buffer bounded: {peak_buffered}"
    );
    let left = Duration::from_secs(30).saturating_sub(paused_at.elapsed());
    tokio::time::sleep(left).await;
    rig.s3.server.resume();

    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    let status = p.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    let ledger = assert_ledger(&p);
    assert_eq!(
        ledger.consumed,
        rig.produced.total(),
        "a transient storage fault loses or repeats nothing"
    );
    rig.assert_exact().await;
}

/// 4. The broker is frozen (SIGSTOP) for 30 seconds mid-stream, then resumed;
///    records produced after the outage arrive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_then_resume_is_exact() {
    let _serial = serial().await;
    let mut rig = Rig::new(4);
    let all = messages(90_000, 20, 14);
    let (first, second) = all.split_at(60_000);
    rig.produce(first).await;
    // The session outlives the freeze, so the member keeps its partitions and
    // resumes fetching and committing when the broker answers again. (With a
    // session shorter than the freeze the member loses them and rejoins under a new
    // member id; tansu 0.6 then keeps the old member as the group's leader forever
    // and answers every SyncGroup with "unknown member", so the group never forms
    // again. Apache Kafka evicts the old member after the rebalance timeout. The
    // revoke-and-rejoin path is covered by the rebalance and crash scenarios.)
    let config = rig.config_with_session("broker-outage", None, "max_batch_rows = 5000", 45_000);
    let mut p = rig.spawn("run", &config);
    let assigned = p.wait_line(0, Duration::from_secs(120), is_assigned);
    p.wait_line(assigned, Duration::from_secs(120), is_committed);

    rig.broker.server.pause();
    tokio::time::sleep(Duration::from_secs(30)).await;
    rig.broker.server.resume();
    rig.produce(second).await;

    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    let status = p.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    assert_ledger(&p);
    rig.assert_exact().await;
}

/// 5. SIGTERM under load: flush, commit, exit 0 within the grace period; a
///    restart consumes exactly the rest (nothing twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_commits_and_restart_continues() {
    let _serial = serial().await;
    let mut rig = Rig::new(4);
    rig.produce(&messages(100_000, 20, 15)).await;
    let config = rig.config("graceful", None, "max_batch_rows = 20000");
    let mut first = rig.spawn("first", &config);
    let assigned = first.wait_line(0, Duration::from_secs(120), is_assigned);
    first.wait_line(assigned, Duration::from_secs(120), is_committed);
    let status = first.terminate(GRACE + Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit 0 within the grace period: {status:?}"
    );
    let one = assert_ledger(&first);
    assert_eq!(one.dropped, 0, "nothing dropped on a graceful stop");
    assert!(
        one.consumed < rig.produced.total(),
        "stopped mid-stream: {one:?}"
    );
    assert_eq!(
        rig.rows().await,
        one.written,
        "everything consumed is stored"
    );
    rig.assert_no_duplicates().await;

    let mut second = rig.spawn("second", &config);
    rig.await_rows(rig.produced.good, Duration::from_secs(300))
        .await;
    let status = second.terminate(GRACE + Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()));
    let two = assert_ledger(&second);
    assert_eq!(
        one.consumed + two.consumed,
        rig.produced.total(),
        "the restart consumed exactly the rest"
    );
    assert_eq!(two.dropped, 0);
    rig.assert_exact().await;
}
