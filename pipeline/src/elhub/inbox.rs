//! Where files come from and where the refused ones go.
//!
//! - The inbox (`--watch DIR`): the regular files directly in DIR, oldest first (by
//!   modification time, then name), skipping names that start with `.` or end with
//!   `.tmp` or `.part` (a file being written: an EDI gateway should write it under
//!   such a name and rename it when complete). A file leaves the inbox once processed:
//!   deleted when published or a duplicate, moved to the rejected folder otherwise.
//! - The rejected folder: each file that was refused whole or in part, renamed
//!   `<UTC time>-<name>`, beside `<that>.reason.json` (the reason of the file or of
//!   each refused series). Rejected files hold personal data: they are deleted once
//!   older than `dead_letters.retention_days`, by the time in their name.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::ingest::{FileReport, Outcome};

/// The time format of a rejected file's name prefix.
const STAMP: &str = "%Y%m%dT%H%M%S%.6fZ";

/// The files waiting in `dir`, oldest first.
///
/// # Errors
/// The directory cannot be read.
pub fn waiting(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.push((meta.modified().ok(), name, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, _, p)| p).collect())
}

/// Copy `report`'s file into `dir` with its reason file; the path of the copy.
///
/// # Errors
/// The folder cannot be written.
pub fn reject(dir: &Path, report: &FileReport, now: DateTime<Utc>) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = report
        .file
        .file_name()
        .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
    let target = dir.join(format!("{}-{name}", now.format(STAMP)));
    std::fs::copy(&report.file, &target).with_context(|| {
        format!(
            "cannot copy {} to {}",
            report.file.display(),
            target.display()
        )
    })?;
    let series: Vec<serde_json::Value> = report
        .refused
        .iter()
        .map(|r| {
            serde_json::json!({"series": r.series, "reason": r.reason.as_str(), "message": r.message})
        })
        .collect();
    let (reason, message) = match &report.outcome {
        Outcome::Rejected { reason, message } => (reason.as_str(), message.as_str()),
        _ => (
            "partial",
            "some series were refused; the others were published",
        ),
    };
    let body = serde_json::json!({
        "file": report.file.display().to_string(),
        "message_key": report.message_key,
        "reason": reason,
        "message": message,
        "refused_series": series,
        "rejected_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let mut reason_file = target.clone().into_os_string();
    reason_file.push(".reason.json");
    std::fs::write(&reason_file, format!("{body:#}\n"))
        .with_context(|| format!("cannot write {}", PathBuf::from(&reason_file).display()))?;
    Ok(target)
}

/// Delete the rejected files (and their reason files) older than `retention_days`;
/// how many files were deleted.
///
/// # Errors
/// The folder cannot be read, or a file not deleted.
pub fn expire(dir: &Path, now: DateTime<Utc>, retention_days: u64) -> anyhow::Result<usize> {
    if !dir.exists() {
        return Ok(0);
    }
    // At most a thousand years: a larger setting keeps everything.
    let days = i64::try_from(retention_days.min(365_000)).unwrap_or(365_000);
    let limit = now - chrono::Duration::days(days);
    let mut deleted = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(stamp) = name.split('-').next() else {
            continue;
        };
        let Ok(at) = NaiveDateTime::parse_from_str(stamp, STAMP) else {
            continue;
        };
        if at.and_utc() < limit {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot delete {}", path.display()))?;
            if !name.ends_with(".reason.json") {
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elhub::ingest::SeriesRefusal;
    use meterline_operators::elhub::readings::RejectReason;

    fn report(file: PathBuf) -> FileReport {
        FileReport {
            file,
            outcome: Outcome::Partial,
            message_key: Some("emif:m-1".into()),
            series: 2,
            records: 24,
            refused: vec![SeriesRefusal {
                series: 2,
                reason: RejectReason::InvalidGsrn,
                message: "series 2 (s-2): the metering point's check digit is wrong".into(),
            }],
        }
    }

    #[test]
    fn a_rejected_file_is_kept_with_its_reasons_until_its_retention_ends() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir(&inbox).unwrap();
        let file = inbox.join("e66-1.xml");
        std::fs::write(&file, "<x/>").unwrap();
        std::fs::write(inbox.join("e66-2.xml.part"), "<x").unwrap();
        assert_eq!(waiting(&inbox).unwrap(), std::slice::from_ref(&file));
        let rejected = dir.path().join("rejected");
        let at: DateTime<Utc> = "2026-12-01T00:30:00Z".parse().unwrap();
        let copy = reject(&rejected, &report(file), at).unwrap();
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "<x/>");
        let reasons: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{}.reason.json", copy.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(reasons["reason"], "partial");
        assert_eq!(reasons["refused_series"][0]["reason"], "invalid_gsrn");
        assert_eq!(reasons["refused_series"][0]["series"], 2);
        // 14 days later it is still there; a moment after that it is gone.
        let day = chrono::Duration::days(1);
        assert_eq!(expire(&rejected, at + day * 14, 14).unwrap(), 0);
        assert_eq!(std::fs::read_dir(&rejected).unwrap().count(), 2);
        assert_eq!(
            expire(&rejected, at + day * 14 + chrono::Duration::seconds(1), 14).unwrap(),
            1
        );
        assert_eq!(std::fs::read_dir(&rejected).unwrap().count(), 0);
    }
}
