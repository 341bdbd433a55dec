//! Delta commits on S3 are safe with concurrent writers: the log store writes
//! commit files with a conditional PUT (If-None-Match), so a writer holding a
//! stale snapshot can never overwrite another writer's commit.

use std::collections::HashMap;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::DeltaTable;
use meterline::dev::testkit::{unique_name, S3Server, Tools};
use meterline_sinks::{readings_spec, Lake, LakeConfig, OffsetTable};

use crate::rig::serial;

async fn open(lake: &Lake) -> DeltaTable {
    let mut t = DeltaTable::try_from_url_with_storage_options(
        lake.table_url("readings"),
        lake.storage_options().clone(),
    )
    .await
    .unwrap();
    t.load().await.unwrap();
    t
}

async fn commit_offset(table: &DeltaTable, app_id: &str, offset: i64) -> u64 {
    let operation = DeltaOperation::StreamingUpdate {
        output_mode: OutputMode::Append,
        query_id: "storage-test".into(),
        epoch_id: offset,
    };
    CommitBuilder::from(CommitProperties::default())
        .with_actions(vec![Action::Txn(Transaction::new(app_id, offset))])
        .build(
            Some(table.snapshot().unwrap()),
            table.log_store(),
            operation,
        )
        .await
        .expect("commit")
        .version()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_with_a_stale_snapshot_never_overwrites_a_commit_on_s3() {
    let _serial = serial().await;
    let tools = Tools::find().unwrap_or_else(|e| panic!("{e}"));
    let s3 = S3Server::start(&tools);
    let bucket = unique_name("lake");
    s3.create_bucket(&bucket);
    let lake = Lake::new(&LakeConfig {
        uri: format!("s3://{bucket}/lake"),
        storage_options: s3
            .storage_options()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
    })
    .unwrap();
    OffsetTable::open_or_create(&lake, readings_spec(), "t")
        .await
        .unwrap();

    // Both writers load the same version, then commit one after the other.
    let first = open(&lake).await;
    let stale = open(&lake).await;
    let v1 = commit_offset(&first, "writer-a", 10).await;
    let v2 = commit_offset(&stale, "writer-b", 20).await;
    assert_eq!(v2, v1 + 1, "the stale writer's commit went after, not over");

    let fresh = open(&lake).await;
    let snapshot = fresh.snapshot().unwrap();
    let log = fresh.log_store();
    assert_eq!(
        snapshot
            .transaction_version(log.as_ref(), "writer-a")
            .await
            .unwrap(),
        Some(10),
        "the first commit survived"
    );
    assert_eq!(
        snapshot
            .transaction_version(log.as_ref(), "writer-b")
            .await
            .unwrap(),
        Some(20)
    );
}
