//! Files that nothing references: a writer's uploads whose commit did not land
//! (a failure, a fenced writer, a process killed between upload and commit).
//! They may hold rows that are erased since, so they must not outlive a sweep.
//!
//! Three rules keep the lake free of them without ever deleting a file a commit
//! references:
//! - a writer deletes its own uploads when it knows its commit did not land
//!   (conflict, fence, or an ambiguous error after which the log does not hold
//!   them), and keeps them when the log shows they landed ([`discard`],
//!   [`landed`]);
//! - the orphan sweep ([`vacuum_orphans`], a full VACUUM) deletes untracked
//!   files older than the orphan age ([`orphan_age`]);
//! - a writer never commits files it uploaded longer ago than half that age
//!   ([`too_old`]): it uploads them again, so a writer paused between upload
//!   and commit cannot reference a file the sweep deleted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::kernel::Action;
use deltalake::operations::vacuum::{Clock, VacuumMode};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use tracing::debug;

use crate::delta::transient;
use crate::SinkError;

/// Default orphan age: untracked files older than this are deleted by the sweep.
pub const DEFAULT_ORPHAN_AGE: Duration = Duration::from_secs(6 * 3600);

static ORPHAN_AGE_SECS: AtomicU64 = AtomicU64::new(DEFAULT_ORPHAN_AGE.as_secs());

/// Set the orphan age of this process (`privacy.orphan_file_age_secs`): the
/// sweep's threshold, and (halved) the oldest upload a writer will commit. One
/// value per process: every writer and the sweep must agree on it.
pub fn set_orphan_age(age: Duration) {
    ORPHAN_AGE_SECS.store(age.as_secs().max(1), Ordering::Relaxed);
}

/// The orphan age in force.
pub fn orphan_age() -> Duration {
    Duration::from_secs(ORPHAN_AGE_SECS.load(Ordering::Relaxed))
}

/// True when files uploaded at `uploaded_at` are too old to commit (older than
/// half the orphan age): upload them again instead.
pub fn too_old(uploaded_at: Instant) -> bool {
    uploaded_at.elapsed() > orphan_age() / 2
}

/// The object paths of the files `actions` add.
pub(crate) fn added_paths(actions: &[Action]) -> Vec<deltalake::Path> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(add) => deltalake::Path::parse(&add.path).ok(),
            _ => None,
        })
        .collect()
}

/// Delete uploads whose commit is known not to have landed. Failures are only
/// logged: the orphan sweep deletes what is left.
pub(crate) async fn discard(table: &DeltaTable, name: &'static str, paths: &[deltalake::Path]) {
    if paths.is_empty() {
        return;
    }
    let store = table.object_store();
    for path in paths {
        if let Err(err) = store.delete(path).await {
            debug!(table = name, error = %err, "could not delete an uncommitted file; the orphan sweep will");
        }
    }
    debug!(
        table = name,
        files = paths.len(),
        "uncommitted uploads deleted"
    );
}

/// After a commit error that does not say whether the commit landed: whether
/// the latest version of the table references `paths`. `None` when the log
/// cannot be read (then nothing may be deleted).
pub(crate) async fn landed(table: &DeltaTable, paths: &[deltalake::Path]) -> Option<bool> {
    use futures::TryStreamExt;
    let first = paths.first()?;
    let mut fresh = table.clone();
    fresh.update_state().await.ok()?;
    let files: Vec<_> = fresh
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .ok()?;
    Some(files.iter().any(|f| f.object_store_path() == *first))
}

/// A fixed "now" for the vacuum (meterline's clock, so sweeps are testable).
#[derive(Debug)]
struct At(i64);

impl Clock for At {
    fn current_timestamp_millis(&self) -> i64 {
        self.0
    }
}

/// Delete the files under the table's directory that its log does not reference
/// and that were last modified longer than `min_age` before `now_ms` (a full
/// VACUUM; files of removes not yet expired and the log itself are kept).
/// Returns the number of files deleted.
///
/// Never run it on a directory whose files are not Delta data files (the key
/// store keeps its keys outside any log).
///
/// # Errors
/// Storage errors (transient).
pub async fn vacuum_orphans(
    table: &mut DeltaTable,
    name: &'static str,
    min_age: Duration,
    now_ms: i64,
) -> Result<usize, SinkError> {
    table.update_state().await.map_err(transient(name))?;
    if table.version().is_none() {
        return Ok(0);
    }
    let age = chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let (vacuumed, metrics) = table
        .clone()
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(age)
        .with_enforce_retention_duration(false)
        .with_clock(Arc::new(At(now_ms)))
        .await
        .map_err(transient(name))?;
    *table = vacuumed;
    Ok(metrics.files_deleted.len())
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::sync::atomic::AtomicBool;

    use arrow::array::{Int32Array, RecordBatch, StringArray};
    use deltalake::datafusion::prelude::lit;
    use deltalake::kernel::transaction::CommitProperties;
    use deltalake::protocol::{DeltaOperation, SaveMode};
    use futures::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    use super::*;
    use crate::derived::tests::spec;
    use crate::DerivedTable;

    /// A store whose first commit (a `_delta_log/*.json` PUT) fails: after the
    /// object is written (the answer was lost), or before.
    #[derive(Debug)]
    struct LostAnswer {
        inner: Arc<dyn ObjectStore>,
        written: bool,
        tripped: AtomicBool,
    }

    impl fmt::Display for LostAnswer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "LostAnswer({})", self.inner)
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for LostAnswer {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            let commit =
                location.as_ref().contains("_delta_log/") && location.as_ref().ends_with(".json");
            if commit && !self.tripped.swap(true, Ordering::SeqCst) {
                if self.written {
                    self.inner.put_opts(location, payload, opts).await?;
                }
                return Err(object_store::Error::Generic {
                    store: "LostAnswer",
                    source: "connection reset by peer".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn rows(tenant: &str, v: i32) -> RecordBatch {
        RecordBatch::try_new(
            spec().schema,
            vec![
                Arc::new(StringArray::from(vec![tenant])),
                Arc::new(Int32Array::from(vec![v])),
            ],
        )
        .unwrap()
    }

    /// Parquet files under the table directory.
    fn parquet_files(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.push(p.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// The data files the table's log references, read from `_delta_log/*.json`
    /// by hand (adds minus removes, in version order): a reader independent of
    /// delta-rs. Paths are percent-decoded as the protocol writes them.
    fn logged_files(table_dir: &std::path::Path) -> Vec<String> {
        let log = table_dir.join("_delta_log");
        let mut commits: Vec<std::path::PathBuf> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        commits.sort();
        assert!(!commits.is_empty(), "no commit in {}", log.display());
        let mut live = std::collections::BTreeSet::new();
        for c in commits {
            for line in std::fs::read_to_string(&c).unwrap().lines() {
                let action: serde_json::Value = serde_json::from_str(line).unwrap();
                let path = |kind: &str| action[kind]["path"].as_str().map(percent_decode);
                if let Some(p) = path("add") {
                    live.insert(p);
                }
                if let Some(p) = path("remove") {
                    live.remove(&p);
                }
            }
        }
        live.into_iter().collect()
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Commit one more file through a store that fails the commit's PUT.
    async fn commit_through(lake: &crate::Lake, written: bool) -> Result<(), SinkError> {
        let url = lake.table_url("agg");
        let store = Arc::new(LostAnswer {
            inner: Arc::new(object_store::local::LocalFileSystem::new()),
            written,
            tripped: AtomicBool::new(false),
        });
        let table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .unwrap()
            .with_storage_backend(store, url)
            .load()
            .await
            .unwrap();
        let adds = crate::write::write_files(
            &table,
            &crate::delta::writer_properties(),
            &["tenant"],
            &[rows("b", 2)],
        )
        .await
        .unwrap();
        crate::derived::commit_or_discard(
            &table,
            "agg",
            adds.into_iter().map(Action::Add).collect(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
            CommitProperties::default(),
            Instant::now(),
        )
        .await
        .map(|_| ())
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_keeps_its_files_and_one_that_failed_deletes_them() {
        for written in [true, false] {
            let (dir, lake) = crate::lake::temporary_lake();
            let mut t = DerivedTable::open_or_create(&lake, spec()).await.unwrap();
            t.append(&[rows("a", 1)], &[]).await.unwrap();
            let err = commit_through(&lake, written).await.unwrap_err();
            assert!(matches!(err, SinkError::Transient { .. }), "{err}");
            // An independent reader: the table as the log says, every file read.
            let fresh = DerivedTable::open_or_create(&lake, spec()).await.unwrap();
            let read: usize = fresh
                .scan(&["tenant", "v"], lit(true))
                .await
                .unwrap_or_else(|e| panic!("written={written}: a referenced file is missing: {e}"))
                .iter()
                .map(RecordBatch::num_rows)
                .sum();
            assert_eq!(read, if written { 2 } else { 1 }, "written={written}");
            // Read by hand, the log references exactly the files in storage: none
            // missing (a dangling reference), none extra (an orphan).
            assert_eq!(
                parquet_files(&dir.path().join("agg")),
                logged_files(&dir.path().join("agg")),
                "written={written}"
            );
        }
    }

    #[test]
    fn uploads_older_than_half_the_orphan_age_are_not_committed() {
        set_orphan_age(Duration::from_secs(3600));
        assert!(!too_old(Instant::now()));
        let earlier = Instant::now().checked_sub(Duration::from_secs(1801));
        if let Some(earlier) = earlier {
            assert!(too_old(earlier));
        }
        set_orphan_age(DEFAULT_ORPHAN_AGE);
    }
}
