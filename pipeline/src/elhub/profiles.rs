//! Master data files: `NotifyMeteringPointCharacteristics` read in one pass and mapped
//! to `meter-profile/v1` records (`meterline_operators::elhub::masterdata`), held until
//! the message is known to be readable to its end. A message of 9999 payloads maps to a
//! few MB of records; the personal data in it is never copied.

use std::fs::File;
use std::io::{BufReader, Read};

use chrono::{DateTime, Utc};

use meterline_operators::elhub::masterdata::{profile, read_characteristics, ProfileRules};
use meterline_operators::elhub::readings::{Record, RejectReason};

use super::reading::{emif_reason, Hashing, SeriesRefusal};

/// A master data message, read and mapped.
pub(crate) struct Mapped {
    pub message_id: String,
    pub hash: String,
    pub payloads: usize,
    pub records: Vec<Record>,
    pub refused: Vec<SeriesRefusal>,
}

/// Read `file` whole and map each payload, versioned by the message's `Creation`.
pub(crate) fn read(
    file: &File,
    rules: &ProfileRules<'_>,
) -> Result<Mapped, (RejectReason, String)> {
    let mut input = BufReader::new(Hashing::new(file));
    let mut payloads = Vec::new();
    let summary = read_characteristics(&mut input, |_, p| payloads.push(p))
        .map_err(|e| (emif_reason(&e), e.to_string()))?;
    let missing = |what: &str| {
        (
            RejectReason::MissingElement,
            format!("the message has no {what}"),
        )
    };
    let message_id = summary
        .header
        .identification
        .ok_or_else(|| missing("Header/Identification"))?;
    let creation = summary
        .header
        .creation
        .ok_or_else(|| missing("Header/Creation"))?;
    let version = DateTime::parse_from_rfc3339(creation.trim())
        .map_err(|_| {
            (
                RejectReason::InvalidValue,
                "Header/Creation is not a time with an offset".to_owned(),
            )
        })?
        .with_timezone(&Utc);
    let mut records = Vec::new();
    let mut refused = Vec::new();
    for p in &payloads {
        match profile(p, version, rules) {
            Ok(r) => records.push(r),
            Err(r) => refused.push(SeriesRefusal {
                series: p.number,
                reason: r.reason,
                message: r.message,
            }),
        }
    }
    let mut rest = Vec::new();
    // The hash covers the whole file, also after the document's end.
    let _ = input.read_to_end(&mut rest);
    Ok(Mapped {
        message_id: message_id.trim().to_owned(),
        hash: input.into_inner().finish(),
        payloads: summary.payloads,
        records,
        refused,
    })
}
