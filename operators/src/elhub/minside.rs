//! The CSV a household downloads from Elhub's "Min side": one file per metering point and
//! month, `;`-separated, decimal comma, from and to as `dd.MM.yyyy HH:mm` in Norwegian
//! local time without an offset, and kWh:
//!
//! ```text
//! Fra;Til;KWH 60 Forbruk
//! 01.10.2026 00:00;01.10.2026 01:00;1,234
//! ```
//!
//! - The columns are found by their headings: one starting with `Fra` (or `From`), one
//!   with `Til` (or `To`), one holding `kWh`; a heading that says `Produksjon` or
//!   `Production` makes the values `export`, otherwise they are `import`. A column
//!   `Målepunkt` / `Metering point`, if present, names the metering point; otherwise the
//!   file's name must hold it (the 18 digits in `...707057500012345678...`).
//! - The local times are resolved in the zone given (Europe/Oslo): on the autumn day the
//!   hour 02:00 appears twice, and its first occurrence is +02:00, the second +01:00; a
//!   time of the spring day's missing hour refuses the file.
//! - The resolution is the length of the rows (PT1H or PT15M; anything else is
//!   `unsupported_resolution`). Every row must be that long.
//! - The file carries no version and no quality: the caller gives the version (the
//!   import's time) and the values are `measured`.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::readings::{Fixed, Record, Refusal, RejectReason};
use crate::ids::check_gsrn;

/// The most rows a Min side file may have: a month of quarter hours, with room.
pub const MAX_ROWS: usize = 32 * 100;

/// A Min side file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinSide {
    pub metering_point: String,
    /// `import` or `export`.
    pub direction: &'static str,
    /// `PT1H` or `PT15M`.
    pub resolution: &'static str,
    /// (interval start, kWh), in the file's order.
    pub rows: Vec<(DateTime<Utc>, Decimal)>,
}

impl MinSide {
    /// The `reading/v1` records of the file for `tenant`, each of `version`.
    #[must_use]
    pub fn records(&self, tenant: &str, version: DateTime<Utc>) -> Vec<Record> {
        let fixed = Fixed {
            tenant,
            meter: &self.metering_point,
            quantity: "electricity",
            direction: self.direction,
            resolution: self.resolution,
            unit: "kWh",
            version,
        };
        self.rows
            .iter()
            .map(|(start, kwh)| fixed.record(*start, &kwh.normalize().to_string(), "measured"))
            .collect()
    }
}

fn refuse(reason: RejectReason, message: String) -> Refusal {
    Refusal { reason, message }
}

fn malformed(message: String) -> Refusal {
    refuse(RejectReason::MalformedCsv, message)
}

/// The columns of the heading.
struct Columns {
    from: usize,
    to: usize,
    value: usize,
    metering_point: Option<usize>,
    direction: &'static str,
}

fn columns(heading: &str) -> Option<Columns> {
    let names: Vec<String> = heading
        .split(';')
        .map(|c| unquote(c).to_lowercase())
        .collect();
    let find = |test: &dyn Fn(&str) -> bool| names.iter().position(|n| test(n));
    let value = find(&|n| n.contains("kwh"))?;
    let production = names[value].contains("produksjon") || names[value].contains("production");
    Some(Columns {
        from: find(&|n| n.starts_with("fra") || n.starts_with("from"))?,
        to: find(&|n| n.starts_with("til") || n == "to" || n.starts_with("to "))?,
        value,
        metering_point: find(&|n| n.starts_with("målepunkt") || n.starts_with("metering")),
        direction: if production { "export" } else { "import" },
    })
}

fn unquote(cell: &str) -> &str {
    let t = cell.trim();
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .trim()
}

/// A row's from or to: the candidates it may be (two in the autumn's repeated hour).
fn local(text: &str, tz: Tz, row: usize) -> Result<Vec<DateTime<Utc>>, Refusal> {
    let naive = NaiveDateTime::parse_from_str(text, "%d.%m.%Y %H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%d.%m.%Y %H:%M:%S"))
        .map_err(|_| malformed(format!("row {row}: a time is not dd.MM.yyyy HH:mm")))?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(vec![t.with_timezone(&Utc)]),
        LocalResult::Ambiguous(a, b) => Ok(vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]),
        LocalResult::None => Err(malformed(format!(
            "row {row}: {text} does not exist in {tz} (the hour skipped when summer time starts)"
        ))),
    }
}

/// One data row as read.
struct Row {
    /// Its line in the file, from 1.
    line: usize,
    /// The instants its from and to may be (two in the autumn's repeated hour).
    from: Vec<DateTime<Utc>>,
    to: Vec<DateTime<Utc>>,
    value: Decimal,
    metering_point: Option<String>,
}

fn row(line: &str, c: &Columns, tz: Tz, n: usize) -> Result<Row, Refusal> {
    let cells: Vec<&str> = line.split(';').map(unquote).collect();
    let cell = |i: usize| {
        cells
            .get(i)
            .copied()
            .ok_or_else(|| malformed(format!("row {n}: {} cells, too few", cells.len())))
    };
    let from = local(cell(c.from)?, tz, n)?;
    let to = local(cell(c.to)?, tz, n)?;
    let text: String = cell(c.value)?
        .chars()
        .filter(|ch| !ch.is_whitespace())
        .map(|ch| if ch == ',' { '.' } else { ch })
        .collect();
    let value = Decimal::from_str_exact(&text).map_err(|_| {
        refuse(
            RejectReason::InvalidValue,
            format!("row {n}: the value is not a number"),
        )
    })?;
    let mp = match c.metering_point {
        Some(i) => Some(cell(i)?.to_owned()),
        None => None,
    };
    Ok(Row {
        line: n,
        from,
        to,
        value,
        metering_point: mp,
    })
}

/// The length of the rows: of the first row whose from and to are both unambiguous.
fn resolution(rows: &[Row]) -> Result<(&'static str, Duration), Refusal> {
    let Some(r) = rows.iter().find(|r| r.from.len() == 1 && r.to.len() == 1) else {
        return Err(malformed("no row of a known length".into()));
    };
    let minutes = (r.to[0] - r.from[0]).num_minutes();
    match minutes {
        60 => Ok(("PT1H", Duration::hours(1))),
        15 => Ok(("PT15M", Duration::minutes(15))),
        _ => Err(refuse(
            RejectReason::UnsupportedResolution,
            format!("rows of {minutes} minutes; a Min side file of hours or quarter hours is read"),
        )),
    }
}

/// The metering point: the column's (one value in every row) or the file name's.
fn metering_point(rows: &[Row], file_name: &str) -> Result<String, Refusal> {
    let mut from_column = rows.iter().filter_map(|r| r.metering_point.as_deref());
    let mp = match from_column.next() {
        Some(first) => {
            if from_column.any(|m| m != first) {
                return Err(malformed(
                    "the file names more than one metering point".into(),
                ));
            }
            first.to_owned()
        }
        None => eighteen_digits(file_name).ok_or_else(|| {
            malformed(
                "no metering point: neither a `Målepunkt` column nor 18 digits in the file name"
                    .into(),
            )
        })?,
    };
    check_gsrn(&mp).map_err(|_| {
        refuse(
            RejectReason::InvalidGsrn,
            "the metering point is not a GSRN (18 digits with a GS1 check digit)".into(),
        )
    })?;
    Ok(mp)
}

fn eighteen_digits(name: &str) -> Option<String> {
    name.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 18)
        .map(str::to_owned)
}

/// Read a Min side file named `file_name` (for its metering point), its local times in `tz`.
///
/// # Errors
/// A [`Refusal`] naming the row; nothing of the file is read then.
pub fn read(text: &str, file_name: &str, tz: Tz) -> Result<MinSide, Refusal> {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, heading) = lines
        .next()
        .ok_or_else(|| malformed("the file is empty".into()))?;
    let c = columns(heading).ok_or_else(|| {
        malformed("the first line is not a heading with Fra, Til and kWh columns".into())
    })?;
    let mut rows = Vec::new();
    for (i, line) in lines {
        if rows.len() >= MAX_ROWS {
            return Err(malformed(format!("more than {MAX_ROWS} rows")));
        }
        rows.push(row(line, &c, tz, i + 1)?);
    }
    let (name, step) = resolution(&rows)?;
    let metering_point = metering_point(&rows, file_name)?;
    let mut out: Vec<(DateTime<Utc>, Decimal)> = Vec::with_capacity(rows.len());
    for r in &rows {
        // The later candidate once the earlier is not after the previous row.
        let start = match (r.from.as_slice(), out.last()) {
            ([first, second], Some((previous, _))) if first <= previous => *second,
            _ => r.from[0],
        };
        // A row in the repeated hour may write its end either way: checked elsewhere only.
        let unambiguous = r.from.len() == 1 && r.to.len() == 1;
        if unambiguous && r.to[0] != start + step {
            return Err(malformed(format!("row {}: not {name} long", r.line)));
        }
        if out.last().is_some_and(|(previous, _)| *previous >= start) {
            return Err(malformed(format!(
                "row {}: not after the row before",
                r.line
            )));
        }
        out.push((start, r.value));
    }
    if out.is_empty() {
        return Err(malformed("no rows".into()));
    }
    Ok(MinSide {
        metering_point,
        direction: c.direction,
        resolution: name,
        rows: out,
    })
}
