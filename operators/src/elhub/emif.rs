//! Elhub's EMIF v2 messages, read as a stream: one payload at a time, so a message of 9999
//! series and several hundred MB is never held whole. The metering values messages,
//! `NotifyValidatedDataForBillingEnergy` (document type E66, from Elhub) and
//! `CollectedData` (the same series, as a grid company reports them), are read here, one
//! [`Series`] at a time; `masterdata.rs` reads `NotifyMeteringPointCharacteristics` with
//! the same [`walk`].
//!
//! ```text
//! rsm:NotifyValidatedDataForBillingEnergy        urn:no:elhub:emif:metering:NotifyValidatedDataForBillingEnergy:v2
//!   rsm:Header/abie:Identification, DocumentType (E66)
//!   rsm:ProcessEnergyContext/abie:EnergyBusinessProcess (BRS-NO-313 | 312 | 324)
//!   rsm:PayloadEnergyTimeSeries   1..9999      abie: urn:no:elhub:emif:common:AggregatedBusinessInformationEntities:v2
//!     abie:Identification                      the series' UUID
//!     abie:RegistrationDateTime                its version
//!     abie:ObservationPeriodTimeSeriesPeriod/{ResolutionDuration, Start, End}
//!     abie:ProductIncludedProductCharacteristics/UnitType       kWh | kvarh
//!     abie:MPDetailMeasurementMeteringPointCharacteristic/Direction   In | Out
//!     abie:MeteringPointUsedDomainLocation/Identification       the GSRN
//!     abie:Observation Sequence="n"            one of Metered, Estimated (Quality,
//!                                              ValidationCode, EstimationCode), Temporary,
//!                                              Calculated (ImbalanceSettlement)
//! ```
//!
//! `CollectedData` also carries series that are not interval values (a meter index, a
//! profiled meter read, an estimated yearly consumption: `ProfiledObservation`,
//! `AnnualPeriodEstimatedMetrics`): each is a [`SeriesError::NotInterval`].
//!
//! Observation n covers `Start + (n-1) × resolution` counted in UTC instants, so a DST day
//! holds 23 or 25 hours (92 or 100 quarters); a series of a fixed resolution must hold
//! exactly `(End - Start) / resolution` observations, sequences 1 to n each once.
//!
//! Two kinds of problems: one that makes the message unreadable (not well-formed XML, not
//! this message, the wrong namespace, more than [`MAX_SERIES`] series) is an [`EmifError`]
//! and ends the read; one that makes a single series unusable (a missing element, a value
//! that is not a number, a wrong observation count) is a [`SeriesError`] handed to the
//! caller in that series' place, and the read goes on. Series already handed over before
//! an [`EmifError`] belong to a message that failed: a caller that publishes a message
//! whole discards them. Values are read from the text exactly (decimals, never floats);
//! nothing of a value goes into an error but the element's name and a clipped text.

use std::io::BufRead;

use chrono::{DateTime, Duration, Utc};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use rust_decimal::Decimal;

/// The E66 message's namespace.
pub const NS_MESSAGE: &str = "urn:no:elhub:emif:metering:NotifyValidatedDataForBillingEnergy:v2";
/// `CollectedData`'s namespace.
pub const NS_COLLECTED: &str = "urn:no:elhub:emif:metering:CollectedData:v2";
/// `NotifyMeteringPointCharacteristics`' namespace.
pub const NS_CHARACTERISTICS: &str =
    "urn:no:elhub:emif:masterdata:NotifyMeteringPointCharacteristics:v2";
/// The namespace of the elements inside the header, context and series.
pub const NS_ABIE: &str = "urn:no:elhub:emif:common:AggregatedBusinessInformationEntities:v2";
/// The most series a message may hold (the XSD's `maxOccurs`).
pub const MAX_SERIES: usize = 9999;
/// The most observations a series may hold: a leap year of 5-minute values.
pub const MAX_OBSERVATIONS: usize = 366 * 288;
/// Text of an element kept at most (a UUID, a time, a decimal(15,3), a namespace fit).
const MAX_TEXT: usize = 128;

/// An EMIF message the adapter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `NotifyValidatedDataForBillingEnergy` (E66).
    BillingEnergy,
    /// `CollectedData`.
    CollectedData,
    /// `NotifyMeteringPointCharacteristics`.
    MeteringPointCharacteristics,
}

impl Document {
    /// The root element's local name.
    #[must_use]
    pub fn root(self) -> &'static str {
        match self {
            Self::BillingEnergy => "NotifyValidatedDataForBillingEnergy",
            Self::CollectedData => "CollectedData",
            Self::MeteringPointCharacteristics => "NotifyMeteringPointCharacteristics",
        }
    }

    /// The namespace of the root and its children.
    #[must_use]
    pub fn namespace(self) -> &'static str {
        match self {
            Self::BillingEnergy => NS_MESSAGE,
            Self::CollectedData => NS_COLLECTED,
            Self::MeteringPointCharacteristics => NS_CHARACTERISTICS,
        }
    }

    /// The kind in the adapter's registry (`elhub_messages.kind`).
    #[must_use]
    pub fn kind(self) -> &'static str {
        match self {
            Self::BillingEnergy => "e66",
            Self::CollectedData => "collected_data",
            Self::MeteringPointCharacteristics => "masterdata",
        }
    }

    fn names(accept: &[Self]) -> String {
        accept
            .iter()
            .map(|d| d.root())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// How an observation was arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Metered,
    Estimated,
    Temporary,
    Calculated,
}

impl Kind {
    fn parse(name: &[u8]) -> Option<Self> {
        match name {
            b"Metered" => Some(Self::Metered),
            b"Estimated" => Some(Self::Estimated),
            b"Temporary" => Some(Self::Temporary),
            b"Calculated" => Some(Self::Calculated),
            _ => None,
        }
    }
}

/// One observation of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// 1-based; the interval is `start + (sequence - 1) × resolution`.
    pub sequence: u32,
    pub kind: Kind,
    pub value: Decimal,
    /// The `Quality` attribute of an estimate (56, 81).
    pub quality: Option<String>,
}

/// One `PayloadEnergyTimeSeries`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Its place in the message, from 1.
    pub number: usize,
    pub identification: String,
    /// `RegistrationDateTime`: the version of its values.
    pub registration: DateTime<Utc>,
    /// `ResolutionDuration` as written (`PT1H`, `PT15M`, `P1D`, ...).
    pub resolution: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `kWh` or `kvarh`.
    pub unit: String,
    /// `In` or `Out`.
    pub direction: String,
    /// The metering point's GSRN.
    pub metering_point: String,
    /// In sequence order.
    pub observations: Vec<Observation>,
}

impl Series {
    /// The start of observation `sequence` (fixed resolutions only).
    #[must_use]
    pub fn interval_start(&self, sequence: u32) -> Option<DateTime<Utc>> {
        let step = fixed_resolution(&self.resolution)?;
        Some(self.start + step * (i32::try_from(sequence).ok()? - 1))
    }
}

/// The message's header, as far as it was read when a series is handed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub identification: Option<String>,
    pub document_type: Option<String>,
    /// `Creation`: when the message was made.
    pub creation: Option<String>,
    pub business_process: Option<String>,
}

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmifError {
    #[error("not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("not a {expected} message (root `{root}` in namespace `{namespace}`)")]
    NotExpected {
        root: String,
        namespace: String,
        expected: String,
    },
    #[error("element `{element}` is in namespace `{namespace}`, not `{expected}`")]
    Namespace {
        element: String,
        namespace: String,
        expected: &'static str,
    },
    #[error("more than {MAX_SERIES} series")]
    TooManySeries,
    #[error("the message has no series")]
    NoSeries,
}

/// Why one series cannot be used (the message's other series can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("series {number}: `{field}` is missing")]
    Missing { number: usize, field: &'static str },
    #[error("series {number}: `{field}` is not valid: `{text}`")]
    Invalid {
        number: usize,
        field: &'static str,
        text: String,
    },
    #[error("series {number}: {got} observations where {start}..{end} in steps of {resolution} holds {expected}")]
    Count {
        number: usize,
        got: usize,
        expected: i64,
        resolution: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("series {number}: observation {sequence} is given twice, or out of 1..={count}")]
    Sequence {
        number: usize,
        sequence: u32,
        count: usize,
    },
    #[error("series {number}: more than {MAX_OBSERVATIONS} observations")]
    TooManyObservations { number: usize },
    #[error("series {number}: a meter index, profiled meter read or yearly estimate, not interval values")]
    NotInterval { number: usize },
}

impl SeriesError {
    /// The series' place in the message.
    #[must_use]
    pub fn number(&self) -> usize {
        match self {
            Self::Missing { number, .. }
            | Self::Invalid { number, .. }
            | Self::Count { number, .. }
            | Self::Sequence { number, .. }
            | Self::TooManyObservations { number }
            | Self::NotInterval { number } => *number,
        }
    }
}

/// The duration of a fixed resolution; `None` for calendar ones (`P1D`, `P1M`, `P1Y`)
/// and anything else.
#[must_use]
pub fn fixed_resolution(text: &str) -> Option<Duration> {
    match text {
        "PT5M" => Some(Duration::minutes(5)),
        "PT15M" => Some(Duration::minutes(15)),
        "PT30M" => Some(Duration::minutes(30)),
        "PT1H" | "PT60M" => Some(Duration::hours(1)),
        _ => None,
    }
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// An observation as read: (Sequence attribute, kind, Quality attribute, value text).
type RawObservation = (Option<String>, Option<Kind>, Option<String>, String);

/// A series as read: text by element, checked in [`RawSeries::finish`].
#[derive(Debug, Default)]
struct RawSeries {
    identification: Option<String>,
    registration: Option<String>,
    resolution: Option<String>,
    start: Option<String>,
    end: Option<String>,
    unit: Option<String>,
    direction: Option<String>,
    metering_point: Option<String>,
    observations: Vec<RawObservation>,
    too_many: bool,
    not_interval: bool,
}

impl RawSeries {
    /// The element a text belongs to, by the path inside the series.
    fn place(&mut self, path: &[Vec<u8>], text: &str) {
        let last = |n: usize| path.get(path.len().wrapping_sub(n)).map(Vec::as_slice);
        let slot = match (last(2), last(1)) {
            (Some(b"PayloadEnergyTimeSeries"), Some(b"Identification")) => &mut self.identification,
            (_, Some(b"RegistrationDateTime")) => &mut self.registration,
            (_, Some(b"ResolutionDuration")) => &mut self.resolution,
            (Some(b"ObservationPeriodTimeSeriesPeriod"), Some(b"Start")) => &mut self.start,
            (Some(b"ObservationPeriodTimeSeriesPeriod"), Some(b"End")) => &mut self.end,
            (_, Some(b"UnitType")) => &mut self.unit,
            (Some(b"MPDetailMeasurementMeteringPointCharacteristic"), Some(b"Direction")) => {
                &mut self.direction
            }
            (Some(b"MeteringPointUsedDomainLocation"), Some(b"Identification")) => {
                &mut self.metering_point
            }
            (Some(b"Observation"), Some(kind)) if Kind::parse(kind).is_some() => {
                if let Some(o) = self.observations.last_mut() {
                    o.3.push_str(&clip(text));
                }
                return;
            }
            _ => return,
        };
        slot.get_or_insert_with(String::new).push_str(&clip(text));
    }

    fn finish(self, number: usize) -> Result<Series, SeriesError> {
        let missing = |field| SeriesError::Missing { number, field };
        let invalid = |field, text: &str| SeriesError::Invalid {
            number,
            field,
            text: clip(text),
        };
        if self.not_interval {
            return Err(SeriesError::NotInterval { number });
        }
        if self.too_many {
            return Err(SeriesError::TooManyObservations { number });
        }
        let time = |field, text: Option<String>| {
            let text = text.ok_or(missing(field))?;
            DateTime::parse_from_rfc3339(text.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid(field, &text))
        };
        let identification = self.identification.ok_or(missing("Identification"))?;
        let registration = time("RegistrationDateTime", self.registration)?;
        let start = time("Start", self.start)?;
        let end = time("End", self.end)?;
        if end <= start {
            return Err(invalid("End", &end.to_rfc3339()));
        }
        let resolution = self.resolution.ok_or(missing("ResolutionDuration"))?;
        let unit = self.unit.ok_or(missing("UnitType"))?;
        let direction = self.direction.ok_or(missing("Direction"))?;
        if direction != "In" && direction != "Out" {
            return Err(invalid("Direction", &direction));
        }
        let metering_point = self
            .metering_point
            .ok_or(missing("MeteringPointUsedDomainLocation/Identification"))?;
        let observations = checked_observations(self.observations, number)?;
        let count = observations.len();
        if let Some(step) = fixed_resolution(&resolution) {
            let span = end - start;
            let expected = span.num_seconds() / step.num_seconds().max(1);
            if span.num_seconds() % step.num_seconds().max(1) != 0
                || i64::try_from(count).unwrap_or(i64::MAX) != expected
            {
                return Err(SeriesError::Count {
                    number,
                    got: count,
                    expected,
                    resolution,
                    start,
                    end,
                });
            }
        }
        Ok(Series {
            number,
            identification,
            registration,
            resolution,
            start,
            end,
            unit,
            direction,
            metering_point,
            observations,
        })
    }
}

/// The observations of series `number`, in sequence order: each sequence once, from 1 to
/// their count, with a kind and a decimal value.
fn checked_observations(
    raw: Vec<RawObservation>,
    number: usize,
) -> Result<Vec<Observation>, SeriesError> {
    let missing = |field| SeriesError::Missing { number, field };
    let invalid = |field, text: &str| SeriesError::Invalid {
        number,
        field,
        text: clip(text),
    };
    let count = raw.len();
    let mut observations = Vec::with_capacity(count);
    let mut seen = vec![false; count];
    for (sequence, kind, quality, text) in raw {
        let sequence_text = sequence.ok_or(missing("Observation/@Sequence"))?;
        let sequence: u32 = sequence_text
            .parse()
            .map_err(|_| invalid("Observation/@Sequence", &sequence_text))?;
        let slot = usize::try_from(sequence).unwrap_or(0).wrapping_sub(1);
        match seen.get_mut(slot) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(SeriesError::Sequence {
                    number,
                    sequence,
                    count,
                })
            }
        }
        let kind = kind.ok_or(missing(
            "Observation/Metered|Estimated|Temporary|Calculated",
        ))?;
        let value = Decimal::from_str_exact(text.trim())
            .map_err(|_| invalid("Observation value", &text))?;
        observations.push(Observation {
            sequence,
            kind,
            value,
            quality,
        });
    }
    observations.sort_by_key(|o| o.sequence);
    Ok(observations)
}

fn attribute(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| clip(&v)))
}

/// What a read found, besides the series handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub document: Document,
    pub header: Header,
    /// Series handed over (good or not).
    pub series: usize,
}

/// What a visitor of [`walk`] is told, element by element, below the root.
pub(crate) trait Visit {
    /// An element `name` starts below `path` (the root first; `name` not in it).
    ///
    /// # Errors
    /// The message cannot be read further (too many payloads).
    fn start(&mut self, path: &[Vec<u8>], name: &[u8], e: &BytesStart<'_>)
        -> Result<(), EmifError>;
    /// Text inside the element at the end of `path` (clipped to [`MAX_TEXT`]).
    fn text(&mut self, path: &[Vec<u8>], text: &str);
    /// The element `name` below `path` ended.
    fn end(&mut self, header: &Header, path: &[Vec<u8>], name: &[u8]);
}

/// Where in the document, and its header.
struct Walk {
    path: Vec<Vec<u8>>,
    header: Header,
    accept: &'static [Document],
    document: Option<Document>,
}

impl Walk {
    /// An element starts: the root must be one of `accept`, every element in its
    /// namespace (the root's and its children's the message's, the rest `abie`).
    fn start(
        &mut self,
        namespace: &ResolveResult<'_>,
        e: &BytesStart<'_>,
        v: &mut impl Visit,
    ) -> Result<(), EmifError> {
        let name = e.local_name().as_ref().to_vec();
        let ns = match namespace {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            _ => String::new(),
        };
        let depth = self.path.len();
        if depth == 0 {
            let found = self
                .accept
                .iter()
                .find(|d| d.root().as_bytes() == name && d.namespace() == ns);
            let Some(found) = found else {
                return Err(EmifError::NotExpected {
                    root: clip(&String::from_utf8_lossy(&name)),
                    namespace: clip(&ns),
                    expected: Document::names(self.accept),
                });
            };
            self.document = Some(*found);
        }
        let expected = match self.document {
            Some(d) if depth <= 1 => d.namespace(),
            _ => NS_ABIE,
        };
        if ns != expected {
            return Err(EmifError::Namespace {
                element: clip(&String::from_utf8_lossy(&name)),
                namespace: clip(&ns),
                expected,
            });
        }
        if depth > 0 {
            v.start(&self.path, &name, e)?;
        }
        self.path.push(name);
        Ok(())
    }

    fn text(&mut self, text: &str, v: &mut impl Visit) {
        let slot = match self.path.iter().map(Vec::as_slice).collect::<Vec<_>>()[..] {
            [_, b"Header", b"Identification"] => &mut self.header.identification,
            [_, b"Header", b"DocumentType"] => &mut self.header.document_type,
            [_, b"Header", b"Creation"] => &mut self.header.creation,
            [_, b"ProcessEnergyContext", b"EnergyBusinessProcess"] => {
                &mut self.header.business_process
            }
            _ => {
                v.text(&self.path, &clip(text));
                return;
            }
        };
        slot.get_or_insert_with(String::new).push_str(&clip(text));
    }

    fn end(&mut self, v: &mut impl Visit) {
        if let Some(name) = self.path.pop() {
            if !self.path.is_empty() {
                v.end(&self.header, &self.path, &name);
            }
        }
    }
}

/// Read a message of one of the `accept`ed documents from `input`, telling `v` of each
/// element (see the module documentation). Returns the document and its header.
///
/// # Errors
/// [`EmifError`]: the message cannot be read.
pub(crate) fn walk<R: BufRead>(
    input: R,
    accept: &'static [Document],
    v: &mut impl Visit,
) -> Result<(Document, Header), EmifError> {
    let mut reader = NsReader::from_reader(input);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut walk = Walk {
        path: Vec::new(),
        header: Header::default(),
        accept,
        document: None,
    };
    loop {
        buf.clear();
        let (namespace, event) = match reader.read_resolved_event_into(&mut buf) {
            Ok(read) => read,
            Err(e) => {
                let message = clip(&e.to_string());
                return Err(EmifError::Xml {
                    position: reader.buffer_position(),
                    message,
                });
            }
        };
        match event {
            Event::Start(e) => walk.start(&namespace, &e, v)?,
            Event::Empty(e) => {
                walk.start(&namespace, &e, v)?;
                walk.end(v);
            }
            Event::End(_) => walk.end(v),
            Event::Text(t) => {
                let text = t.decode().map_err(|e| EmifError::Xml {
                    position: reader.buffer_position(),
                    message: clip(&e.to_string()),
                })?;
                walk.text(&text, v);
            }
            Event::Eof if !walk.path.is_empty() => {
                return Err(EmifError::Xml {
                    position: reader.buffer_position(),
                    message: "the document ends inside an element".into(),
                });
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let document = walk.document.ok_or(EmifError::Xml {
        position: 0,
        message: "the document has no root element".into(),
    })?;
    Ok((document, walk.header))
}

/// The root element's local name, read from the first element of `input` (nothing
/// else checked): which reader a file is for.
#[must_use]
pub fn root_name<R: BufRead>(input: R) -> Option<String> {
    let mut reader = NsReader::from_reader(input);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                return Some(clip(&String::from_utf8_lossy(e.local_name().as_ref())))
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The series of a metering values message, handed over one at a time.
struct Billing<F> {
    series: Option<RawSeries>,
    count: usize,
    each: F,
}

impl<F: FnMut(&Header, Result<Series, SeriesError>)> Visit for Billing<F> {
    fn start(
        &mut self,
        path: &[Vec<u8>],
        name: &[u8],
        e: &BytesStart<'_>,
    ) -> Result<(), EmifError> {
        if path.len() == 1 && name == b"PayloadEnergyTimeSeries" {
            self.count += 1;
            if self.count > MAX_SERIES {
                return Err(EmifError::TooManySeries);
            }
            self.series = Some(RawSeries::default());
        }
        let Some(s) = self.series.as_mut() else {
            return Ok(());
        };
        if path.last().map(Vec::as_slice) == Some(b"Observation") {
            if let (Some(o), Some(kind)) = (s.observations.last_mut(), Kind::parse(name)) {
                o.1 = Some(kind);
                o.2 = attribute(e, b"Quality");
            }
        } else if name == b"Observation" {
            if s.observations.len() >= MAX_OBSERVATIONS {
                s.too_many = true;
            } else {
                s.observations
                    .push((attribute(e, b"Sequence"), None, None, String::new()));
            }
        } else if path.len() == 2 && NOT_INTERVAL.contains(&name) {
            s.not_interval = true;
        }
        Ok(())
    }

    fn text(&mut self, path: &[Vec<u8>], text: &str) {
        if let Some(s) = self.series.as_mut() {
            s.place(path, text);
        }
    }

    fn end(&mut self, header: &Header, path: &[Vec<u8>], name: &[u8]) {
        if path.len() == 1 && name == b"PayloadEnergyTimeSeries" {
            if let Some(raw) = self.series.take() {
                (self.each)(header, raw.finish(self.count));
            }
        }
    }
}

/// Elements of a `CollectedData` series that is not interval values: a meter index, a
/// profiled meter read, an estimated yearly consumption.
const NOT_INTERVAL: [&[u8]; 2] = [b"ProfiledObservation", b"AnnualPeriodEstimatedMetrics"];

/// The metering values messages: E66 and `CollectedData`.
pub const METERING_VALUES: &[Document] = &[Document::BillingEnergy, Document::CollectedData];

/// Read a metering values message (E66 or `CollectedData`) from `input`, handing each
/// series to `each` as soon as it ends (see the module documentation). Returns the
/// document, its header and how many series were handed over.
///
/// # Errors
/// [`EmifError`]: the message cannot be read (series handed over before belong to it).
pub fn read_billing_energy<R: BufRead>(
    input: R,
    each: impl FnMut(&Header, Result<Series, SeriesError>),
) -> Result<Summary, EmifError> {
    let mut billing = Billing {
        series: None,
        count: 0,
        each,
    };
    let (document, header) = walk(input, METERING_VALUES, &mut billing)?;
    if billing.count == 0 {
        return Err(EmifError::NoSeries);
    }
    Ok(Summary {
        document,
        header,
        series: billing.count,
    })
}
