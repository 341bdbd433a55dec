//! ENTSO-E day-ahead price documents (A44, `Publication_MarketDocument`) into price points.
//!
//! ```text
//! Publication_MarketDocument
//!   TimeSeries*            in_Domain.mRID (the area's EIC), currency_Unit.name (EUR),
//!                          price_Measure_Unit.name (MWH), curveType (A01 | A03)
//!     Period*              timeInterval{start, end} (UTC), resolution (PT15M | PT60M)
//!       Point*             position (1-based), price.amount (EUR/MWh)
//! ```
//!
//! Curve type A03 ("variable sized block") leaves out a point whose price is the previous
//! one: the price of position n holds until the next point given, or the period's end. So
//! every position from 1 to the period's length comes out, the left-out ones with the price
//! before them. Under A01 (or no curve type) every position must be present.
//!
//! A period of a DST day has 92 or 100 quarters (23 or 25 hours): positions count UTC
//! instants from the period's start, so no local time is involved.
//!
//! The parser is strict about structure and keeps values as they are: a price outside the
//! plausible range is the validator's business (a dead letter with its reason), not a parse
//! error. An `Acknowledgement_MarketDocument` (ENTSO-E's "no matching data") is an error that
//! carries its reason text.

use chrono::{DateTime, NaiveDateTime, Utc};
use quick_xml::events::Event;
use quick_xml::Reader;
use rust_decimal::Decimal;

use super::PriceArea;

/// One price of one area for one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricePoint {
    pub area: PriceArea,
    pub start: DateTime<Utc>,
    pub resolution_minutes: u32,
    pub eur_per_mwh: Decimal,
}

/// Why a document gives no prices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntsoeError {
    #[error("not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("ENTSO-E answered with an acknowledgement, not prices: {0}")]
    Acknowledgement(String),
    #[error("not an A44 price document (root element `{0}`)")]
    NotPrices(String),
    #[error("time series {series}: `{field}` is missing")]
    Missing { series: usize, field: &'static str },
    #[error("time series {series}: `{field}` is not valid: `{text}`")]
    Invalid {
        series: usize,
        field: &'static str,
        text: String,
    },
    #[error("time series {series}: area `{0}` is not a Norwegian price area", .eic)]
    Area { series: usize, eic: String },
    #[error("time series {series}: prices in {currency} per {unit}; only EUR per MWH is read")]
    Unit {
        series: usize,
        currency: String,
        unit: String,
    },
    #[error("time series {series}: position {position} is outside the period's {length}")]
    Position {
        series: usize,
        position: u32,
        length: u32,
    },
    #[error("time series {series}: position {position} is given twice")]
    Duplicate { series: usize, position: u32 },
    #[error("time series {series}: position {position} is missing under curve type {curve}")]
    Gap {
        series: usize,
        position: u32,
        curve: String,
    },
}

/// The most positions a period may have: a leap year of quarters, with room. A longer
/// period is refused before anything is allocated for it.
const MAX_POSITIONS: u32 = 367 * 96;

/// Text longer than this in an error is cut: documents are untrusted.
const ERROR_TEXT: usize = 64;

fn clip(text: &str) -> String {
    text.chars().take(ERROR_TEXT).collect()
}

#[derive(Debug, Default)]
struct Series {
    eic: Option<String>,
    currency: Option<String>,
    unit: Option<String>,
    curve: Option<String>,
    periods: Vec<Period>,
}

#[derive(Debug, Default)]
struct Period {
    start: Option<String>,
    end: Option<String>,
    resolution: Option<String>,
    points: Vec<(Option<String>, Option<String>)>,
}

/// Every price of every series of an A44 document, each period's positions filled in.
///
/// # Errors
/// See [`EntsoeError`]; the first problem found ends the parse (a document is imported whole
/// or not at all).
pub fn parse_a44(xml: &str) -> Result<Vec<PricePoint>, EntsoeError> {
    let series = read_series(xml)?;
    let mut points = Vec::new();
    for (i, s) in series.iter().enumerate() {
        expand(i + 1, s, &mut points)?;
    }
    Ok(points)
}

/// The document's structure, text by element path.
fn read_series(xml: &str) -> Result<Vec<Series>, EntsoeError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    let mut reason = String::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|e| EntsoeError::Xml {
            position: reader.buffer_position(),
            message: clip(&e.to_string()),
        })?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    root = Some(check_root(&name)?);
                }
                match (path.last().map(String::as_str), name.as_str()) {
                    (Some("Publication_MarketDocument"), "TimeSeries") => {
                        series.push(Series::default());
                    }
                    (Some("TimeSeries"), "Period") => {
                        if let Some(s) = series.last_mut() {
                            s.periods.push(Period::default());
                        }
                    }
                    (Some("Period"), "Point") => {
                        if let Some(p) = series.last_mut().and_then(|s| s.periods.last_mut()) {
                            p.points.push((None, None));
                        }
                    }
                    _ => {}
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| EntsoeError::Xml {
                        position: reader.buffer_position(),
                        message: clip(&e.to_string()),
                    })?
                    .into_owned();
                if path.first().map(String::as_str) == Some("Acknowledgement_MarketDocument") {
                    if path.last().map(String::as_str) == Some("text") {
                        reason = clip(&text);
                    }
                    continue;
                }
                place(&path, text, &mut series);
            }
            Event::Empty(e) if path.is_empty() => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                return Err(EntsoeError::NotPrices(clip(&name)));
            }
            Event::Eof if !path.is_empty() => {
                return Err(EntsoeError::Xml {
                    position: reader.buffer_position(),
                    message: format!("the document ends inside `{}`", clip(&path.join("/"))),
                });
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match root {
        Some(Root::Prices) => Ok(series),
        Some(Root::Acknowledgement) => Err(EntsoeError::Acknowledgement(reason)),
        None => Err(EntsoeError::NotPrices(String::new())),
    }
}

#[derive(Debug, Clone, Copy)]
enum Root {
    Prices,
    Acknowledgement,
}

fn check_root(name: &str) -> Result<Root, EntsoeError> {
    match name {
        "Publication_MarketDocument" => Ok(Root::Prices),
        "Acknowledgement_MarketDocument" => Ok(Root::Acknowledgement),
        other => Err(EntsoeError::NotPrices(clip(other))),
    }
}

/// Put a leaf's text where its path says.
fn place(path: &[String], text: String, series: &mut [Series]) {
    let tail: Vec<&str> = path.iter().rev().take(3).map(String::as_str).collect();
    let Some(s) = series.last_mut() else {
        return;
    };
    match tail.as_slice() {
        ["in_Domain.mRID", "TimeSeries", ..] => s.eic = Some(text),
        ["currency_Unit.name", "TimeSeries", ..] => s.currency = Some(text),
        ["price_Measure_Unit.name", "TimeSeries", ..] => s.unit = Some(text),
        ["curveType", "TimeSeries", ..] => s.curve = Some(text),
        ["start", "timeInterval", "Period"] => {
            if let Some(p) = s.periods.last_mut() {
                p.start = Some(text);
            }
        }
        ["end", "timeInterval", "Period"] => {
            if let Some(p) = s.periods.last_mut() {
                p.end = Some(text);
            }
        }
        ["resolution", "Period", ..] => {
            if let Some(p) = s.periods.last_mut() {
                p.resolution = Some(text);
            }
        }
        ["position", "Point", "Period"] => {
            if let Some(point) = s.periods.last_mut().and_then(|p| p.points.last_mut()) {
                point.0 = Some(text);
            }
        }
        ["price.amount", "Point", "Period"] => {
            if let Some(point) = s.periods.last_mut().and_then(|p| p.points.last_mut()) {
                point.1 = Some(text);
            }
        }
        _ => {}
    }
}

/// ENTSO-E writes `2025-10-25T22:00Z` (no seconds); RFC 3339 is read too.
fn instant(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%MZ")
        .map(|n| n.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

fn resolution_minutes(text: &str) -> Option<u32> {
    match text {
        "PT15M" => Some(15),
        "PT30M" => Some(30),
        "PT60M" | "PT1H" => Some(60),
        _ => None,
    }
}

fn expand(n: usize, s: &Series, out: &mut Vec<PricePoint>) -> Result<(), EntsoeError> {
    let missing = |field| EntsoeError::Missing { series: n, field };
    let invalid = |field, text: &str| EntsoeError::Invalid {
        series: n,
        field,
        text: clip(text),
    };
    let eic = s.eic.as_deref().ok_or(missing("in_Domain.mRID"))?;
    let area = PriceArea::parse(eic).ok_or_else(|| EntsoeError::Area {
        series: n,
        eic: clip(eic),
    })?;
    let currency = s.currency.as_deref().unwrap_or("EUR");
    let unit = s.unit.as_deref().unwrap_or("MWH");
    if currency != "EUR" || !unit.eq_ignore_ascii_case("MWH") {
        return Err(EntsoeError::Unit {
            series: n,
            currency: clip(currency),
            unit: clip(unit),
        });
    }
    let curve = s.curve.as_deref().unwrap_or("A01");
    if curve != "A01" && curve != "A03" {
        return Err(invalid("curveType", curve));
    }
    if s.periods.is_empty() {
        return Err(missing("Period"));
    }
    for p in &s.periods {
        expand_period(n, area, curve, p, out)?;
    }
    Ok(())
}

/// One period's positions, filled in under `curve`.
fn expand_period(
    n: usize,
    area: PriceArea,
    curve: &str,
    p: &Period,
    out: &mut Vec<PricePoint>,
) -> Result<(), EntsoeError> {
    let missing = |field| EntsoeError::Missing { series: n, field };
    let invalid = |field, text: &str| EntsoeError::Invalid {
        series: n,
        field,
        text: clip(text),
    };
    let start_text = p.start.as_deref().ok_or(missing("timeInterval/start"))?;
    let end_text = p.end.as_deref().ok_or(missing("timeInterval/end"))?;
    let start = instant(start_text).ok_or_else(|| invalid("timeInterval/start", start_text))?;
    let end = instant(end_text).ok_or_else(|| invalid("timeInterval/end", end_text))?;
    let res_text = p.resolution.as_deref().ok_or(missing("resolution"))?;
    let minutes = resolution_minutes(res_text).ok_or_else(|| invalid("resolution", res_text))?;
    let span = (end - start).num_minutes();
    if span <= 0 || span % i64::from(minutes) != 0 {
        return Err(invalid("timeInterval", &format!("{start_text}/{end_text}")));
    }
    let length = u32::try_from(span / i64::from(minutes))
        .ok()
        .filter(|&l| l <= MAX_POSITIONS)
        .ok_or_else(|| invalid("timeInterval", &format!("{start_text}/{end_text}")))?;
    let mut given: Vec<Option<Decimal>> = vec![None; length as usize];
    for (position, price) in &p.points {
        let position_text = position.as_deref().ok_or(missing("Point/position"))?;
        let position: u32 = position_text
            .parse()
            .map_err(|_| invalid("Point/position", position_text))?;
        let price_text = price.as_deref().ok_or(missing("Point/price.amount"))?;
        let price = Decimal::from_str_exact(price_text)
            .map_err(|_| invalid("Point/price.amount", price_text))?;
        if position == 0 || position > length {
            return Err(EntsoeError::Position {
                series: n,
                position,
                length,
            });
        }
        let slot = &mut given[(position - 1) as usize];
        if slot.is_some() {
            return Err(EntsoeError::Duplicate {
                series: n,
                position,
            });
        }
        *slot = Some(price);
    }
    let mut current: Option<Decimal> = None;
    for (i, price) in given.iter().enumerate() {
        let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
        match (price, curve) {
            (Some(p), _) => current = Some(*p),
            (None, "A03") if current.is_some() => {}
            (None, _) => {
                return Err(EntsoeError::Gap {
                    series: n,
                    position,
                    curve: curve.to_owned(),
                })
            }
        }
        let Some(eur_per_mwh) = current else { continue };
        out.push(PricePoint {
            area,
            start: start + chrono::Duration::minutes(i64::from(minutes) * i64::from(position - 1)),
            resolution_minutes: minutes,
            eur_per_mwh,
        });
    }
    Ok(())
}
