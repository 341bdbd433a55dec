//! One file at a time: read it, map it, publish it whole, register it.
//!
//! An EMIF file is read twice from the same open file (it may be several hundred MB,
//! and is never held whole): the first pass checks every series and reads the
//! message's `Identification`; the second maps the good series and produces them as
//! they are read. Nothing is produced for a file that cannot be read to its end. After
//! the broker acknowledged every record, the message goes into the registry
//! (`elhub_messages`), and is never published again.
//!
//! What a crash (or a Kafka error) in the middle of a message leaves: records of part
//! of the message in the topic, and no registry row. The file stays in the inbox and
//! is published again whole on the next try, so the topic may hold those records twice;
//! they carry the same `version` and value, so meterline counts the second copy as a
//! duplicate (`already_stored`) and the lake holds every observation once.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;

use meterline_operators::economics::hour::Scheme;
use meterline_operators::economics::PriceArea;
use meterline_operators::elhub::emif::{self, read_billing_energy, Document};
use meterline_operators::elhub::masterdata::{GridArea, ProfileRules};
use meterline_operators::elhub::minside;
use meterline_operators::elhub::readings::{self, Record, RejectReason};
use meterline_operators::Clock;
use meterline_sinks::{DerivedTable, ProcessedMessage};

use super::metrics::ElhubMetrics;
pub use super::reading::SeriesRefusal;
use super::reading::{emif_reason, Hashing};
use crate::config::Config;

/// How a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every series (or row) published.
    Published,
    /// Some series published, the refused ones listed in the report.
    Partial,
    /// Nothing published.
    Rejected {
        reason: RejectReason,
        message: String,
    },
    /// The message was processed before: nothing published again.
    Duplicate,
}

impl Outcome {
    /// The metric label.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Partial => "partial",
            Self::Rejected { .. } => "rejected",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What processing one file did.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub file: PathBuf,
    pub outcome: Outcome,
    /// `emif:<Identification>` or `minside:<hash>`, once known.
    pub message_key: Option<String>,
    pub series: usize,
    pub records: usize,
    pub refused: Vec<SeriesRefusal>,
}

impl FileReport {
    /// Whether the file (or part of it) belongs in the rejected folder.
    #[must_use]
    pub fn has_rejects(&self) -> bool {
        matches!(self.outcome, Outcome::Rejected { .. } | Outcome::Partial)
    }
}

impl std::fmt::Display for FileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.file.display();
        match &self.outcome {
            Outcome::Published => write!(
                f,
                "{name}: published {} series, {} records",
                self.series, self.records
            ),
            Outcome::Partial => {
                write!(
                    f,
                    "{name}: published {} series, {} records; refused {} series:",
                    self.series - self.refused.len(),
                    self.records,
                    self.refused.len()
                )?;
                for r in &self.refused {
                    write!(f, "\n  {} ({})", r.message, r.reason.as_str())?;
                }
                Ok(())
            }
            Outcome::Rejected { reason, message } => {
                write!(f, "{name}: rejected ({}): {message}", reason.as_str())
            }
            Outcome::Duplicate => write!(
                f,
                "{name}: already published (message {}), nothing produced",
                self.message_key.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// The adapter: where records go and what was published before.
pub struct Adapter {
    tenant: String,
    timezone: Tz,
    topic: String,
    profiles: Profiles,
    producer: FutureProducer,
    registry: DerivedTable,
    known: HashSet<String>,
    max_file_bytes: u64,
    clock: Clock,
    pub metrics: ElhubMetrics,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("tenant", &self.tenant)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Where master data goes, and what it is mapped with.
#[derive(Debug)]
struct Profiles {
    /// `inputs.profiles_topic`, unless empty.
    topic: Option<String>,
    /// Whether the tenant is private (profiles are kept for those only).
    private: bool,
    grid_areas: BTreeMap<String, GridArea>,
    household_scheme: Scheme,
}

impl Profiles {
    fn from_config(config: &Config, private: bool) -> anyhow::Result<Self> {
        let e = &config.elhub;
        let household_scheme = Scheme::parse(&e.household_scheme).ok_or_else(|| {
            invalid(
                "elhub.household_scheme",
                "must be stromstotte, norgespris or none",
            )
        })?;
        let mut grid_areas = BTreeMap::new();
        for (eic, area) in &e.grid_areas {
            let field = |name: &str| format!("elhub.grid_areas.\"{eic}\".{name}");
            let price_area = PriceArea::ALL
                .into_iter()
                .find(|a| a.code() == area.price_area)
                .ok_or_else(|| invalid(&field("price_area"), "must be NO1..NO5"))?;
            if !meterline_operators::economics::frinettleie::valid_gln(&area.grid_company_gln) {
                let message = "must be 13 digits with a GS1 check digit";
                return Err(invalid(&field("grid_company_gln"), message));
            }
            let grid_company_gln = area.grid_company_gln.clone();
            grid_areas.insert(
                eic.clone(),
                GridArea {
                    price_area,
                    grid_company_gln,
                },
            );
        }
        let topic = Some(config.inputs.profiles_topic.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(Self {
            topic,
            private,
            grid_areas,
            household_scheme,
        })
    }
}

/// A configuration error (exit code 2).
fn invalid(field: &str, message: &str) -> anyhow::Error {
    crate::config::ConfigError::Invalid {
        field: field.to_owned(),
        message: message.to_owned(),
    }
    .into()
}

/// The first pass over an EMIF file.
struct Checked {
    document: Document,
    message_id: String,
    hash: String,
    series: usize,
    refused: Vec<SeriesRefusal>,
}

/// The first pass: every series checked and mapped (the records dropped), the header's
/// `Identification` and the file's hash.
fn check_emif(file: &File, tenant: &str) -> Result<Checked, (RejectReason, String)> {
    let mut input = BufReader::new(Hashing::new(file));
    let mut refused = Vec::new();
    let mut message_id = None;
    let summary = read_billing_energy(&mut input, |header, series| {
        message_id.clone_from(&header.identification);
        let (number, refusal) = match series {
            Ok(s) => (s.number, readings::records(&s, tenant).err()),
            Err(e) => (
                e.number(),
                Some(readings::Refusal {
                    reason: RejectReason::from(&e),
                    message: e.to_string(),
                }),
            ),
        };
        if let Some(r) = refusal {
            refused.push(SeriesRefusal {
                series: number,
                reason: r.reason,
                message: r.message,
            });
        }
    })
    .map_err(|e| (emif_reason(&e), e.to_string()))?;
    let message_id = message_id.or(summary.header.identification).ok_or((
        RejectReason::MissingElement,
        "the message has no Header/Identification".to_owned(),
    ))?;
    let mut rest = Vec::new();
    // The hash covers the whole file, also after the document's end.
    let _ = input.read_to_end(&mut rest);
    Ok(Checked {
        document: summary.document,
        message_id: message_id.trim().to_owned(),
        hash: input.into_inner().finish(),
        series: summary.series,
        refused,
    })
}

fn rejected(file: &Path, reason: RejectReason, message: String) -> FileReport {
    FileReport {
        file: file.to_owned(),
        outcome: Outcome::Rejected { reason, message },
        message_key: None,
        series: 0,
        records: 0,
        refused: Vec::new(),
    }
}

impl Adapter {
    /// The adapter of `tenant` with the configuration's Kafka, topic and lake.
    ///
    /// # Errors
    /// An unknown or retired tenant, a bad configuration, the lake.
    pub async fn open(
        config: &Config,
        tenant: &str,
        metrics: ElhubMetrics,
    ) -> anyhow::Result<Self> {
        let t = config
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .ok_or_else(|| {
                invalid(
                    "--tenant",
                    &format!("`{tenant}` is not a configured tenant"),
                )
            })?;
        if t.retired {
            return Err(invalid("--tenant", &format!("`{tenant}` is retired")));
        }
        let private = t.deployment == crate::config::DeploymentConfig::Private;
        let profiles = Profiles::from_config(config, private)?;
        let timezone: Tz = t
            .timezone
            .parse()
            .map_err(|e| anyhow::anyhow!("tenants.timezone of {tenant}: {e}"))?;
        let kafka = config.clone().kafka_settings()?;
        let producer: FutureProducer = crate::kafka::client::producer(&kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()
            .context("create the Kafka producer")?;
        let lake = meterline_sinks::Lake::new(&config.lake_config())?;
        let registry =
            DerivedTable::open_or_create(&lake, meterline_sinks::elhub_messages_spec()).await?;
        let known = known_messages(&registry).await?;
        Ok(Self {
            tenant: tenant.to_owned(),
            timezone,
            topic: kafka.readings_topic.clone(),
            profiles,
            producer,
            registry,
            known,
            max_file_bytes: config.elhub.max_file_bytes,
            clock: crate::config::clock_from_env()?,
            metrics,
        })
    }

    /// The clock the adapter reads (`METERLINE_FAKE_NOW` in tests).
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Process one file: publish what can be published, say what cannot.
    ///
    /// # Errors
    /// Kafka or the lake failed (the file can be tried again; nothing was registered);
    /// the file cannot be opened.
    pub async fn file(&mut self, path: &Path) -> anyhow::Result<FileReport> {
        let report = self.process(path).await?;
        self.count(&report);
        Ok(report)
    }

    fn count(&self, r: &FileReport) {
        let m = &self.metrics;
        m.files.with_label_values(&[r.outcome.label()]).inc();
        if let Outcome::Rejected { reason, .. } = &r.outcome {
            if r.refused.is_empty() {
                m.rejects.with_label_values(&[reason.as_str()]).inc();
            }
        }
        if r.outcome != Outcome::Duplicate {
            let published = r.series.saturating_sub(r.refused.len());
            m.series
                .with_label_values(&["published"])
                .inc_by(published as u64);
            m.series
                .with_label_values(&["refused"])
                .inc_by(r.refused.len() as u64);
        }
        for s in &r.refused {
            m.rejects.with_label_values(&[s.reason.as_str()]).inc();
        }
        m.records.inc_by(r.records as u64);
    }

    async fn process(&mut self, path: &Path) -> anyhow::Result<FileReport> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata()?.len();
        if size > self.max_file_bytes {
            let message = format!(
                "{size} bytes, more than elhub.max_file_bytes ({})",
                self.max_file_bytes
            );
            return Ok(rejected(path, RejectReason::TooLarge, message));
        }
        if looks_like_xml(&file)? {
            let root = emif::root_name(BufReader::new(&file));
            (&file).rewind()?;
            if root.as_deref() == Some(Document::MeteringPointCharacteristics.root()) {
                return self.masterdata(path, file).await;
            }
            self.emif(path, file).await
        } else {
            self.min_side(path, file).await
        }
    }

    async fn emif(&mut self, path: &Path, file: File) -> anyhow::Result<FileReport> {
        let tenant = self.tenant.clone();
        let (checked, file) = tokio::task::spawn_blocking(move || {
            let checked = check_emif(&file, &tenant);
            (checked, file)
        })
        .await?;
        let checked = match checked {
            Ok(c) => c,
            Err((reason, message)) => return Ok(rejected(path, reason, message)),
        };
        let key = format!("emif:{}", checked.message_id);
        let mut report = FileReport {
            file: path.to_owned(),
            outcome: Outcome::Duplicate,
            message_key: Some(key.clone()),
            series: checked.series,
            records: 0,
            refused: checked.refused,
        };
        if self.known.contains(&key) {
            return Ok(report);
        }
        let mut second = file;
        second.rewind()?;
        let refused: HashSet<usize> = report.refused.iter().map(|r| r.series).collect();
        if let Some(first) = report
            .refused
            .first()
            .filter(|_| refused.len() == report.series)
        {
            // Nothing to publish, and nothing registered: a corrected file of the same
            // message is read again.
            report.outcome = Outcome::Rejected {
                reason: first.reason,
                message: format!("every series was refused, the first: {}", first.message),
            };
            return Ok(report);
        }
        report.records = self.publish_emif(second, refused).await?;
        report.outcome = if report.refused.is_empty() {
            Outcome::Published
        } else {
            Outcome::Partial
        };
        self.register(&report, checked.document.kind(), &checked.hash)
            .await?;
        Ok(report)
    }

    /// The second pass: the records of every series not in `refused`, produced as the
    /// file is read; how many, once the broker acknowledged each.
    async fn publish_emif(&self, file: File, refused: HashSet<usize>) -> anyhow::Result<usize> {
        let (tx, mut rx) = mpsc::channel::<Vec<Record>>(16);
        let tenant = self.tenant.clone();
        let reader = tokio::task::spawn_blocking(move || {
            read_billing_energy(BufReader::new(file), |_, series| {
                let Ok(series) = series else { return };
                if refused.contains(&series.number) {
                    return;
                }
                if let Ok(records) = readings::records(&series, &tenant) {
                    // A closed channel: the producing side failed and says why.
                    let _ = tx.blocking_send(records);
                }
            })
        });
        let mut sender = Sender::new(&self.producer, &self.topic);
        let mut failed = None;
        while let Some(records) = rx.recv().await {
            if failed.is_none() {
                if let Err(e) = sender.send_all(&records).await {
                    failed = Some(e);
                }
            }
        }
        reader
            .await?
            .context("the file changed between its two reads")?;
        if let Some(e) = failed {
            return Err(e);
        }
        sender.finish().await
    }

    async fn masterdata(&mut self, path: &Path, file: File) -> anyhow::Result<FileReport> {
        let p = &self.profiles;
        let topic = match (&p.topic, p.private) {
            (_, false) => {
                let message = "master data is kept for private tenants only".to_owned();
                return Ok(rejected(path, RejectReason::TenantNotPrivate, message));
            }
            (None, true) => {
                let message = "master data needs inputs.profiles_topic".to_owned();
                return Ok(rejected(path, RejectReason::ProfilesOff, message));
            }
            (Some(topic), true) => topic.clone(),
        };
        let (tenant, timezone) = (self.tenant.clone(), self.timezone);
        let (grid_areas, household_scheme) = (p.grid_areas.clone(), p.household_scheme);
        let mapped = tokio::task::spawn_blocking(move || {
            let rules = ProfileRules {
                tenant: &tenant,
                timezone,
                grid_areas: &grid_areas,
                household_scheme,
            };
            super::profiles::read(&file, &rules)
        })
        .await?;
        let mapped = match mapped {
            Ok(m) => m,
            Err((reason, message)) => return Ok(rejected(path, reason, message)),
        };
        let key = format!("emif:{}", mapped.message_id);
        let mut report = FileReport {
            file: path.to_owned(),
            outcome: Outcome::Duplicate,
            message_key: Some(key.clone()),
            series: mapped.payloads,
            records: 0,
            refused: mapped.refused,
        };
        if self.known.contains(&key) {
            return Ok(report);
        }
        if mapped.records.is_empty() {
            let first = report
                .refused
                .first()
                .map_or_else(String::new, |r| r.message.clone());
            report.outcome = Outcome::Rejected {
                reason: report
                    .refused
                    .first()
                    .map_or(RejectReason::SeriesCount, |r| r.reason),
                message: format!("every payload was refused, the first: {first}"),
            };
            return Ok(report);
        }
        let mut sender = Sender::new(&self.producer, &topic);
        sender.send_all(&mapped.records).await?;
        report.records = sender.finish().await?;
        report.outcome = if report.refused.is_empty() {
            Outcome::Published
        } else {
            Outcome::Partial
        };
        let kind = Document::MeteringPointCharacteristics.kind();
        self.register(&report, kind, &mapped.hash).await?;
        Ok(report)
    }

    async fn min_side(&mut self, path: &Path, mut file: File) -> anyhow::Result<FileReport> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let Ok(text) = String::from_utf8(bytes) else {
            let message = "neither XML nor UTF-8 text (a Min side CSV)".to_owned();
            return Ok(rejected(path, RejectReason::MalformedCsv, message));
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let parsed = match minside::read(&text, name.as_deref().unwrap_or(""), self.timezone) {
            Ok(p) => p,
            Err(r) => return Ok(rejected(path, r.reason, r.message)),
        };
        let key = format!("minside:{hash}");
        let mut report = FileReport {
            file: path.to_owned(),
            outcome: Outcome::Duplicate,
            message_key: Some(key.clone()),
            series: 1,
            records: 0,
            refused: Vec::new(),
        };
        if self.known.contains(&key) {
            return Ok(report);
        }
        let records = parsed.records(&self.tenant, self.clock.now());
        let mut sender = Sender::new(&self.producer, &self.topic);
        sender.send_all(&records).await?;
        report.records = sender.finish().await?;
        report.outcome = Outcome::Published;
        self.register(&report, "minside_csv", &hash).await?;
        Ok(report)
    }

    async fn register(
        &mut self,
        report: &FileReport,
        kind: &'static str,
        hash: &str,
    ) -> anyhow::Result<()> {
        let key = report.message_key.clone().unwrap_or_default();
        let row = ProcessedMessage {
            message_key: key.clone(),
            tenant: self.tenant.clone(),
            kind,
            document_hash: hash.to_owned(),
            series: report.series as i64,
            refused_series: report.refused.len() as i64,
            records: report.records as i64,
            done_at_micros: self.clock.now_micros(),
        };
        let batch = meterline_sinks::processed_batch(&row)?;
        self.registry
            .append(&[batch], &[])
            .await
            .context("register the message in elhub_messages")?;
        self.known.insert(key);
        Ok(())
    }
}

/// Whether the file's first character (after a byte order mark and white space) is `<`.
fn looks_like_xml(file: &File) -> std::io::Result<bool> {
    let mut head = [0u8; 512];
    let mut f = file;
    let n = f.read(&mut head)?;
    f.rewind()?;
    let text = head[..n]
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(&head[..n]);
    Ok(text
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<'))
}

/// The message keys in the registry.
async fn known_messages(registry: &DerivedTable) -> anyhow::Result<HashSet<String>> {
    use arrow::array::AsArray;
    let batches = registry
        .scan(&["message_key"], datafusion::prelude::lit(true))
        .await?;
    let mut known = HashSet::new();
    for b in &batches {
        for key in b.column(0).as_string::<i32>().iter().flatten() {
            known.insert(key.to_owned());
        }
    }
    Ok(known)
}

/// Produces records and waits for the broker's acknowledgements, a bounded number in
/// flight.
struct Sender<'a> {
    producer: &'a FutureProducer,
    topic: &'a str,
    inflight: Vec<rdkafka::producer::DeliveryFuture>,
    delivered: usize,
}

/// Records in flight before waiting for their acknowledgements.
const MAX_INFLIGHT: usize = 10_000;

impl<'a> Sender<'a> {
    fn new(producer: &'a FutureProducer, topic: &'a str) -> Self {
        Self {
            producer,
            topic,
            inflight: Vec::new(),
            delivered: 0,
        }
    }

    async fn send_all(&mut self, records: &[Record]) -> anyhow::Result<()> {
        for (key, payload) in records {
            if self.inflight.len() >= MAX_INFLIGHT {
                self.wait().await?;
            }
            let record = FutureRecord::to(self.topic).key(key).payload(payload);
            match self.producer.send_result(record) {
                Ok(f) => self.inflight.push(f),
                Err((e, _)) => anyhow::bail!("produce to {} failed: {e}", self.topic),
            }
        }
        Ok(())
    }

    async fn wait(&mut self) -> anyhow::Result<()> {
        for f in self.inflight.drain(..) {
            f.await
                .context("the producer went away")?
                .map_err(|(e, _)| anyhow::anyhow!("delivery to {} failed: {e}", self.topic))?;
            self.delivered += 1;
        }
        Ok(())
    }

    /// Every record acknowledged: how many.
    async fn finish(mut self) -> anyhow::Result<usize> {
        self.wait().await?;
        self.producer
            .flush(rdkafka::util::Timeout::After(Duration::from_secs(30)))?;
        Ok(self.delivered)
    }
}
