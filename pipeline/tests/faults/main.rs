//! Fault scenarios against real infrastructure: a tansu Kafka broker and an S3
//! server (moto) on loopback, `meterline run` as child processes. Each scenario
//! breaks something on purpose and then checks that every produced record is in
//! the lake exactly once (readings or dead letters), with exact values, and that
//! each cleanly stopped process's ledger balances:
//! consumed = written + dead-lettered + dropped.
//!
//! The tools come from `scripts/test.sh` (see `meterline::dev::testkit`).

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

mod aggregates;
mod compaction;
mod dead_letter_keys;
mod dead_letters;
mod elhub;
mod erasure;
mod inputs;
mod lifecycle;
mod orphans;
mod privacy;
mod prometheus;
mod rig;
mod security;
mod serve;
mod storage;
mod traffic;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rig::{assert_ledger, eventually, messages, metric, scrape, serial, serial_capped, Rig};

const GRACE: Duration = Duration::from_secs(20);

/// The crash scenario's overall cap: seven runs over 200,000 readings.
const CRASH_CAP: Duration = Duration::from_secs(10 * 60);

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

/// The seed of a randomized scenario: `METERLINE_FAULT_SEED` when set (to replay
/// a failure), else a random one.
fn fault_seed() -> u64 {
    match std::env::var("METERLINE_FAULT_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("METERLINE_FAULT_SEED={v:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// Prints how to replay a randomized scenario when it fails (it is dropped while
/// the failure unwinds).
struct ReplayOnFailure {
    scenario: &'static str,
    seed: u64,
}

impl Drop for ReplayOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}; replay it with METERLINE_FAULT_SEED={} \
                 cargo test --release --workspace --test faults -- {}",
                self.scenario, self.seed, self.seed, self.scenario
            );
        }
    }
}

/// 1. `meterline run` is SIGKILLed six times, restarted after each kill. The
///    phases of the kills come in a fixed order (batching, uploading data files,
///    between upload and commit, anywhere after a commit, uploading, between upload
///    and commit); the moment within each phase (which upload or commit, how many
///    milliseconds) is random from a seed, `METERLINE_FAULT_SEED` to replay one
///    (printed when the scenario fails). After each kill nothing is stored twice;
///    in the end the lake holds exactly the 200,000 readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_six_sigkills_at_random_moments_of_fixed_phases_lose_and_duplicate_nothing() {
    let _serial = serial_capped(CRASH_CAP).await;
    let seed = fault_seed();
    eprintln!("crash scenario seed {seed}");
    let _replay = ReplayOnFailure {
        scenario: "crash_six_sigkills",
        seed,
    };
    let mut rig = Rig::new(4);
    rig.produce(&messages(200_000, 40, 11)).await;
    assert_eq!(rig.produced.good, 200_000);
    let config = rig.config("crash", None, "max_batch_rows = 10000");

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
        let restart_at = rig::restart_after_kill();
        let rows = rig.rows().await;
        eprintln!("killed run{i} ({moment:?}); {rows} rows stored");
        rig.assert_no_duplicates().await;
        assert!(rows < rig.produced.good, "killed after the stream was done");
        tokio::time::sleep_until(restart_at).await;
    }

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

/// The offsets the lake stores for `partitions` of the rig's topic (the Delta `txn`
/// of each partition in `readings`) at `version` of `readings`.
async fn lake_offsets(rig: &Rig, partitions: &[i32], version: u64) -> Vec<Option<i64>> {
    let lake = meterline_sinks::Lake::new(&rig.lake()).expect("lake");
    let mut table = meterline_sinks::open_existing(&lake, "readings")
        .await
        .expect("readings readable")
        .expect("readings exists");
    table
        .load_version(version)
        .await
        .expect("that version of readings");
    let snapshot = table.snapshot().expect("snapshot");
    let mut out = Vec::new();
    for p in partitions {
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

/// 2. Two processes share the partitions; one of them leaves mid-stream (SIGTERM:
///    it commits and leaves the group); the other is assigned its partitions and
///    resumes them from the offsets stored in the lake.
///
///    (Not SIGKILL: tansu 0.6 does evict a member whose session timed out, on the
///    survivor's next heartbeat, but keeps the group formed at the same generation
///    with the old assignment. The survivor's rejoin gets that generation back
///    and its SyncGroup its old partitions (tansu ignores the new assignment of a
///    formed group; when the dead member was the leader, the survivor is even told
///    to follow it), so the dead member's partitions are never consumed again.
///    Apache Kafka starts a new generation. A SIGKILLed process whose partitions
///    are taken over after a restart is the crash scenario.)
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
    // b starts each of a's partitions where the lake says a left it. (A partition
    // a owned but never read from, the consumer fetching one partition at a time,
    // has no offset stored: b starts it from the beginning.)
    // The lake as a left it: b has been committing these partitions since.
    let a_version = a
        .lines_matching(|l| l.contains("committed table=\"readings\""))
        .last()
        .and_then(|l| l.rsplit("version=").next()?.trim().parse::<u64>().ok())
        .expect("a logged its last commit to readings");
    let stored = lake_offsets(&rig, &a_parts, a_version).await;
    assert!(
        stored.iter().any(Option::is_some),
        "a stored offsets for its share: {stored:?}"
    );
    for (p, offset) in a_parts.iter().zip(&stored) {
        assert!(
            loaded.contains(&format!("{p}: {offset:?}")),
            "b resumes a's partition {p} from the lake's offset {offset:?}: {loaded}"
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
    let port = meterline::dev::testkit::free_port();
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
    // The outage is logged: the counter rises just before the log line is
    // written, and this test reads the lines through a pipe, so wait for it.
    p.wait_line(0, Duration::from_secs(10), |l| {
        l.contains("storage error; retrying")
    });
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

/// 4. The broker is frozen (SIGSTOP) for 30 seconds mid-stream. While it is
///    frozen, the consumer's requests (heartbeats, fetches, commits) time out, its
///    reconnect attempts time out too, and it reports all brokers down: counted in
///    `meterline_kafka_errors_total` and logged as a Kafka client error, seen
///    before the broker is resumed. Once it is resumed, consumption continues, and
///    records produced after the outage arrive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_fails_and_retries_requests_then_resumes_exactly() {
    let _serial = serial().await;
    let mut rig = Rig::new(4);
    let all = messages(90_000, 20, 14);
    let (first, second) = all.split_at(60_000);
    rig.produce(first).await;
    let port = meterline::dev::testkit::free_port();
    // The session outlives the freeze, so the member keeps its partitions and
    // resumes fetching and committing when the broker answers again. (With a
    // session shorter than the freeze the member loses them and rejoins under a new
    // member id; tansu 0.6 then keeps the old member as the group's leader forever
    // and answers every SyncGroup with "unknown member", so the group never forms
    // again. Apache Kafka evicts the old member after the rebalance timeout. The
    // revoke-and-rejoin path is covered by the rebalance and crash scenarios.)
    // Requests and connection attempts time out after 5 s, so the freeze shows as
    // failed requests and failed reconnects within it; with librdkafka's defaults
    // (60 s, 30 s) the freeze would only delay the answers.
    let config = rig.config_with(
        "broker-outage",
        Some(port),
        "max_batch_rows = 5000",
        &[
            ("session.timeout.ms", "45000"),
            ("socket.timeout.ms", "5000"),
            ("socket.connection.setup.timeout.ms", "5000"),
        ],
    );
    let mut p = rig.spawn("run", &config);
    let assigned = p.wait_line(0, Duration::from_secs(120), is_assigned);
    p.wait_line(assigned, Duration::from_secs(120), is_committed);

    let errors = |text: &str| metric(text, "meterline_kafka_errors_total");
    let before = errors(&scrape(port).expect("metrics endpoint"));
    let lines_before = p.lines_matching(|_| true).len();
    rig.broker.server.pause();
    let paused_at = Instant::now();
    // While the broker is frozen: requests time out (5 s), the reconnects time
    // out (5 s), and the client reports that it has no broker left.
    eventually(
        "Kafka errors while the broker is frozen",
        Duration::from_secs(25),
        || scrape(port).is_some_and(|m| errors(&m) > before),
    )
    .await;
    // The line: the consumer's report that its broker is gone. The counter may
    // have risen first for another client of the process (the erasure and
    // subjects consumers count their errors too), and the consumer reports only
    // once its reconnect attempt has timed out as well (5 + 5 s): give the line
    // the same 25 s from the freeze.
    p.wait_line(
        lines_before,
        Duration::from_secs(25).saturating_sub(paused_at.elapsed()) + Duration::from_secs(5),
        |l| l.contains("kafka client error"),
    );
    eprintln!(
        "{} Kafka errors within {:?} of the freeze",
        errors(&scrape(port).expect("metrics endpoint")) - before,
        paused_at.elapsed()
    );
    let left = Duration::from_secs(30).saturating_sub(paused_at.elapsed());
    tokio::time::sleep(left).await;
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
