//! The `meterline` command line. See `meterline --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use meterline::query::sql::Format;
use meterline_sinks::LakeConfig;

/// meterline: metering telemetry from Kafka into a Delta lake, exactly once, with
/// privacy by construction.
///
/// Start with `meterline demo`: it runs the whole pipeline on this machine with an
/// embedded Kafka broker and prints what landed in the lake.
#[derive(Debug, Parser)]
#[command(name = "meterline", version, propagate_version = true)]
struct Cli {
    /// Log format: `text` for people, `json` for log shippers. Level via METERLINE_LOG
    /// (e.g. `info`, `meterline=debug`).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: consume the readings topic, write the lake, serve metrics.
    ///
    /// Several processes with the same kafka.group_id share the topic's partitions.
    /// SIGTERM or Ctrl-C flushes, commits and exits 0. Exit codes: 0 clean stop,
    /// 1 error, 2 bad configuration, 75 another process took over our partitions
    /// (restart to resume).
    ///
    /// Example:
    ///   METERLINE_PSEUDONYM_KEY=$(cat /etc/meterline/key) meterline run --config deploy/meterline.toml
    #[command(verbatim_doc_comment)]
    Run {
        /// The TOML configuration file (see deploy/meterline.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run everything embedded: an in-process Kafka broker, a generator, the
    /// pipeline and a local lake; then print a summary from the lake.
    ///
    /// The default range includes the 25-hour day 2026-10-25 (Europe/Oslo). The lake
    /// directory is replaced on each run (only if an earlier demo created it).
    ///
    /// Example:
    ///   meterline demo --meters 200 --days 3
    #[command(verbatim_doc_comment)]
    Demo {
        /// Where to write the lake.
        #[arg(long, default_value = "meterline-demo/lake")]
        lake: PathBuf,
        /// Meters to simulate (half public, half private; every 4th is PT15M).
        #[arg(long, default_value_t = 100, value_parser = meters_range())]
        meters: usize,
        /// Days to simulate.
        #[arg(long, default_value_t = 3, value_parser = days_range())]
        days: u32,
        /// First local day (YYYY-MM-DD).
        #[arg(long, default_value = "2026-10-24")]
        from: NaiveDate,
        /// Bad records to mix in (each kind lands in dead_letters with its reason).
        #[arg(long, default_value_t = 12)]
        bad: usize,
    },
    /// Query the lake with SQL (DataFusion).
    ///
    /// Tables: readings (every accepted version), readings_current (one row per meter
    /// and interval: the newest version), dead_letters, consumption_hourly/daily/monthly,
    /// area_consumption_hourly/daily/monthly, consent_ledger, subjects, access_log,
    /// erasure_audit, spot_prices, weather_observations, meter_profiles, grid_tariffs,
    /// tax_rates, exchange_rates, weather_stations, cost_hourly/daily/monthly,
    /// capacity_peaks, duration_curve, temperature_daily, temperature_sensitivity.
    ///
    /// Examples:
    ///   meterline sql --lake meterline-demo/lake "SELECT tenant, count(*) FROM readings GROUP BY tenant"
    ///   meterline sql --lake s3://lake/meterline --storage-option endpoint=http://127.0.0.1:9000 \
    ///       --storage-option allow_http=true --format csv "SELECT * FROM dead_letters"
    #[command(verbatim_doc_comment)]
    Sql {
        /// Lake root: a local path, file:///path or s3://bucket/prefix.
        #[arg(long)]
        lake: String,
        /// Object store option key=value (repeatable), as in [lake.storage_options].
        #[arg(long = "storage-option", value_name = "KEY=VALUE")]
        storage_options: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The SQL statement.
        query: String,
    },
    /// Serve the lake over the Postgres wire protocol: read-only SQL for analysts,
    /// dashboards (Grafana) and apps, each session seeing only the rows its JWT
    /// allows (row-level security in the query plan).
    ///
    /// Clients send a JWT as the password (psql: PGPASSWORD). Claims: tenant
    /// (or `*`), role (operator, analyst, subject), sub (the subject), optional
    /// meters. Settings in [serve] and [serve.jwt]; a listen address off
    /// loopback requires TLS. Exit codes: 0 after SIGTERM/Ctrl-C, 2 bad
    /// configuration, 1 other errors.
    ///
    /// Example:
    ///   meterline serve --config deploy/meterline.toml
    ///   PGPASSWORD=$(meterline token --config deploy/meterline.toml --tenant acme-industri --role analyst) \
    ///     psql "host=127.0.0.1 port=5433 dbname=meterline user=analyst sslmode=require"
    #[command(verbatim_doc_comment)]
    Serve {
        /// The TOML configuration file (lake, tenants, [serve]).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a signed JWT for `meterline serve`, for development and tests: signed
    /// with [serve.jwt] hs256_secret_file, with its issuer and audience.
    ///
    /// Examples:
    ///   meterline token --config deploy/meterline.toml --tenant acme-industri --role analyst
    ///   meterline token --config deploy/meterline.toml --tenant acme-industri --role subject \
    ///       --subject acct-17 --ttl 15m
    #[command(verbatim_doc_comment)]
    Token {
        /// The configuration whose [serve.jwt] signs the token.
        #[arg(long, short)]
        config: PathBuf,
        /// A configured tenant id, or `*` for a service operator.
        #[arg(long)]
        tenant: String,
        /// What the session may see (see the README's role matrix).
        #[arg(long, value_parser = ["operator", "analyst", "subject"])]
        role: String,
        /// The subject id (`sub`), required for --role subject.
        #[arg(long)]
        subject: Option<String>,
        /// A meter shared with the subject through an access link (repeatable).
        #[arg(long = "meter")]
        meters: Vec<String>,
        /// Lifetime: seconds, or with a unit (90s, 15m, 8h, 1d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: i64,
    },
    /// Import a file of spot prices or weather observations: its records are
    /// produced to the input's topic ([inputs] prices_topic / weather_topic),
    /// which `meterline run` consumes into spot_prices / weather_observations
    /// exactly once. Before producing, the records are decoded as the pipeline
    /// will decode them, and those it will refuse are counted by reason (they
    /// are produced all the same and become dead letters with that reason).
    ///
    /// Examples:
    ///   meterline import prices --config deploy/meterline.toml entsoe-a44.xml
    ///   meterline import prices --config deploy/meterline.toml --area NO1 prices-2026-01-15.json
    ///   meterline import weather --config deploy/meterline.toml frost-observations.json
    ///   meterline import tariffs --config deploy/meterline.toml fri-nettleie/*.yml
    ///   meterline import exchange-rates --config deploy/meterline.toml eurnok-2026.csv
    ///   meterline import stations --config deploy/meterline.toml frost-sources.json
    #[command(verbatim_doc_comment)]
    Import {
        #[command(subcommand)]
        what: ImportCommand,
    },
    /// The Elhub adapter: EMIF metering values (E66 NotifyValidatedDataForBillingEnergy,
    /// CollectedData) and Elhub "Min side" CSVs into reading/v1 records on the readings
    /// topic; master data (NotifyMeteringPointCharacteristics) into meter-profile/v1.
    ///
    /// Examples:
    ///   meterline elhub ingest --config deploy/meterline.toml --tenant acme-industri e66-*.xml
    ///   meterline elhub ingest --config deploy/meterline.toml --tenant acme-industri --watch /srv/edi/inbox
    #[command(verbatim_doc_comment)]
    Elhub {
        #[command(subcommand)]
        action: ElhubCommand,
    },
    /// Price a meter's consumption over a period as it is, and under another
    /// support scheme and/or grid tariff, side by side (nothing is written).
    /// Uses the lake's readings, spot prices, profiles and tariffs and the
    /// configuration's rates, like the cost tables.
    ///
    /// Examples:
    ///   meterline simulate-cost --config deploy/meterline.toml --tenant acme-industri \
    ///     --meter 707057500000000018 --from 2026-10-01 --to 2026-10-31 --scheme norgespris
    ///   meterline simulate-cost --config deploy/meterline.toml --tenant acme-industri \
    ///     --meter 707057500000000018 --from 2026-01-01 --to 2026-03-31 --tariff other-nett.yml
    #[command(verbatim_doc_comment)]
    SimulateCost {
        #[arg(long, short)]
        config: PathBuf,
        /// A private tenant.
        #[arg(long)]
        tenant: String,
        /// The meter (its GSRN, as the tenant's readings hold it).
        #[arg(long)]
        meter: String,
        /// First local day (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Last local day, included (at most 367 days after --from).
        #[arg(long)]
        to: NaiveDate,
        /// The support scheme to compare with: stromstotte, norgespris or none.
        #[arg(long, value_parser = parse_scheme)]
        scheme: Option<meterline_operators::economics::hour::Scheme>,
        /// A Fri nettleie tariff file (YAML) to compare with.
        #[arg(long)]
        tariff: Option<PathBuf>,
    },
    /// Produce realistic reading/v1 traffic to any Kafka broker, or write it as
    /// Elhub EMIF files.
    ///
    /// Uses the tenants `oslo-utility` (public) and `acme-industri` (private).
    ///
    /// Examples:
    ///   meterline simulate --brokers 127.0.0.1:9092 --meters 1000 --days 2 --rate 5000 --bad 20
    ///   meterline simulate --config deploy/meterline.toml --meters 1000
    ///   meterline simulate --format emif --out elhub-inbox --meters 20 --days 3
    ///
    /// With --config, the brokers, topic and client settings ([kafka.properties]:
    /// TLS, SASL; [kafka.secret_files]) are the pipeline's. Plaintext to a broker
    /// off loopback is refused unless kafka.allow_plaintext is set there.
    /// With --format emif, one E66 message per local day (one series per meter)
    /// and masterdata.xml (the meters' NotifyMeteringPointCharacteristics)
    /// are written into --out, for `meterline elhub ingest`; nothing is produced.
    #[command(verbatim_doc_comment)]
    Simulate {
        /// kafka: produce reading/v1 records; emif: write E66 XML files into --out.
        #[arg(long, value_parser = ["kafka", "emif"], default_value = "kafka")]
        format: String,
        /// With --format emif: the directory to write the files into.
        #[arg(long, required_if_eq("format", "emif"))]
        out: Option<PathBuf>,
        /// Bootstrap servers (plaintext; for TLS or SASL use --config).
        #[arg(long, required_unless_present_any = ["config", "out"], conflicts_with = "config")]
        brokers: Option<String>,
        /// Take the brokers, topic and client settings from this configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Topic to produce to (default: the configuration's readings topic, else
        /// meter.readings).
        #[arg(long)]
        topic: Option<String>,
        /// Meters to simulate (half public, half private; every 4th is PT15M).
        #[arg(long, default_value_t = 100, value_parser = meters_range())]
        meters: usize,
        /// Days to simulate.
        #[arg(long, default_value_t = 1, value_parser = days_range())]
        days: u32,
        /// First local day (YYYY-MM-DD).
        #[arg(long, default_value = "2026-10-24")]
        from: NaiveDate,
        /// Messages per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Bad records to mix in.
        #[arg(long, default_value_t = 0)]
        bad: usize,
    },
    /// Inspect and replay dead letters (records that could not become readings).
    ///
    /// Examples:
    ///   meterline dlq list --config deploy/meterline.toml --reason unknown_tenant --since 24h
    ///   meterline dlq replay --config deploy/meterline.toml --reason unknown_tenant
    #[command(verbatim_doc_comment)]
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Apply every retention period now.
    ///
    /// As `meterline run` does on its schedule: readings older than each tenant's
    /// `telemetry_retention_days` (by local date), dead letters older than `dead_letters.retention_days`; aggregates are
    /// recomputed, the removed files deleted from storage, and each deletion
    /// recorded in the `erasure_audit` table.
    ///
    /// Example:
    ///   meterline retention run --config deploy/meterline.toml
    #[command(verbatim_doc_comment)]
    Retention {
        #[command(subcommand)]
        action: RetentionCommand,
    },
    /// Report what is stored and whether a privacy promise is broken.
    ///
    /// Per tenant and category: deployment type, retention, rows, oldest record;
    /// then erasures done and pending, key epochs destroyed. A promise is broken by
    /// data older than its retention (plus the sweep interval), an erasure completed
    /// after its deadline or still pending past it, or an epoch key kept past its
    /// grace period. Exit codes: 0 clean, 3 a promise is broken, 1 error,
    /// 2 configuration.
    ///
    /// Example:
    ///   meterline audit --config deploy/meterline.toml --tenant oslo-utility
    #[command(verbatim_doc_comment)]
    Audit {
        /// The configuration of the pipeline (lake, retention, erasure topic).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this tenant's data.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Subject rights: export everything stored about a subject.
    Subject {
        #[command(subcommand)]
        action: SubjectCommand,
    },
    /// Print a new random pseudonym key (64 hex characters) for [privacy] key_file.
    /// The file must be readable by its owner only: a key file that group or
    /// others may read is refused at start.
    ///
    /// Example:
    ///   (umask 077; meterline keygen > /etc/meterline/pseudonym.key)
    #[command(verbatim_doc_comment)]
    Keygen,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first: when, tenant, reason, source position,
    /// size, whether a payload is stored (replayable), and what rule failed.
    /// Reasons: see the README ("Dead letters"); `--reason nope` lists them.
    List {
        /// The configuration of the pipeline (its lake is read).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        filter: DlqFilter,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Re-publish dead letters to the readings topic (to the partition each came
    /// from) after a fix, e.g. once a missing tenant is configured. Safe to repeat:
    /// records already stored come back as duplicates and are dropped. Needs the
    /// pseudonym key (as `meterline run`) to tag redacted payloads.
    Replay {
        /// The configuration of the pipeline (lake, brokers, readings topic, key).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        filter: DlqFilter,
        /// Count what would be replayed without publishing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ElhubCommand {
    /// Publish Elhub files to the readings topic (kafka.readings_topic), keyed by
    /// metering point, all records of a tenant: each message once.
    ///
    /// Reads EMIF XML messages (E66 and CollectedData: PT1H and PT15M series) and
    /// Min side CSVs (one metering point and month; the import time is the
    /// version). Master data (NotifyMeteringPointCharacteristics, private tenants
    /// only) goes to inputs.profiles_topic as meter-profile/v1, priced with
    /// elhub.grid_areas (EIC -> price area, grid company) and
    /// elhub.household_scheme; the personal data in it is never read. A message
    /// whose Identification (a Min side file: whose content) was published before
    /// publishes nothing (the registry is the lake's elhub_messages table).
    /// A file that cannot be read, and each series that cannot be mapped, goes to
    /// the rejected folder with a .reason.json (deleted after
    /// dead_letters.retention_days); the other series and files go on.
    ///
    /// Exit codes: 0 everything published, 3 something was rejected (see the
    /// rejected folder), 1 Kafka or the lake failed, 2 configuration.
    ///
    /// Examples:
    ///   meterline elhub ingest --config deploy/meterline.toml --tenant acme-industri e66-2026-10-25.xml
    ///   meterline elhub ingest --config deploy/meterline.toml --tenant acme-industri \
    ///       meteringvalues-mp-707057500000000018-202610.csv
    ///   meterline elhub ingest --config deploy/meterline.toml --tenant acme-industri --watch /srv/edi/inbox
    #[command(verbatim_doc_comment)]
    Ingest {
        /// The TOML configuration file (kafka, lake, tenants, [elhub]).
        #[arg(long, short)]
        config: PathBuf,
        /// The tenant every record is assigned to.
        #[arg(long)]
        tenant: String,
        /// Watch this directory: process each file dropped into it (write as
        /// NAME.part and rename when complete), then remove it. Runs until
        /// SIGTERM/Ctrl-C.
        #[arg(long)]
        watch: Option<PathBuf>,
        /// With --watch: stop once the directory is empty.
        #[arg(long, requires = "watch")]
        once: bool,
        /// Where refused files go (default: elhub.rejected_dir, else rejected/ in
        /// the --watch directory, else ./elhub-rejected).
        #[arg(long)]
        rejected: Option<PathBuf>,
        /// Files to publish once (they are left where they are).
        #[arg(required_unless_present = "watch")]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Spot prices: an ENTSO-E A44 document (Publication_MarketDocument,
    /// EUR/MWh; curve type A03 gaps are filled with the price before them;
    /// PT15M or PT60M; DST days have 92/100 quarters), or a JSON price feed
    /// ([{NOK_per_kWh, EUR_per_kWh, EXR, time_start, time_end}], NOK/kWh with
    /// the feed's exchange rate; the feed names no area: give --area). Every
    /// price gets --version (default: now): importing the same hours again with a
    /// later version replaces them.
    Prices {
        /// The configuration of the pipeline (brokers, [inputs] prices_topic).
        #[arg(long, short)]
        config: PathBuf,
        /// The A44 XML or JSON feed file.
        file: PathBuf,
        /// The price area of a JSON feed: NO1, NO2, NO3, NO4 or NO5.
        #[arg(long, value_parser = parse_area)]
        area: Option<meterline_operators::economics::PriceArea>,
        /// The prices' version (RFC 3339; default: now).
        #[arg(long)]
        version: Option<chrono::DateTime<chrono::Utc>>,
        /// The `source` label (default: entsoe for A44, feed for JSON).
        #[arg(long)]
        source: Option<String>,
        /// Decode and report; produce nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Grid tariffs: Fri nettleie YAML files (one per grid company: netteier,
    /// gln, tariffer[{kundegrupper, gyldig_fra, gyldig_til, energiledd,
    /// fastledd}]). They have no topic: each file is checked whole (a file with
    /// an error imports nothing, and nothing is written unless every file is
    /// valid), then appended to grid_tariffs as a new version of the company's
    /// tariffs; the same file again is skipped.
    Tariffs {
        /// The configuration of the pipeline (its lake).
        #[arg(long, short)]
        config: PathBuf,
        /// The YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check the files; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exchange rates: Norges Bank's daily rates as CSV (its data warehouse,
    /// e.g. https://data.norges-bank.no/api/data/EXR/B.EUR.NOK.SP?format=csv;
    /// columns BASE_CUR, QUOTE_CUR, TIME_PERIOD, OBS_VALUE, optional UNIT_MULT,
    /// either locale). They have no topic: each file is checked whole (nothing is
    /// written unless every file is valid), then appended to exchange_rates; the
    /// same file again is skipped. An EUR price without its own rate is converted
    /// with the latest rate published before its delivery day (at most 7 days
    /// old); the cost tables recompute the days a new rate reaches.
    ExchangeRates {
        /// The configuration of the pipeline (its lake).
        #[arg(long, short)]
        config: PathBuf,
        /// The CSV files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The `source` label of the rates.
        #[arg(long, default_value = "norges-bank")]
        source: String,
        /// Check the files; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Weather stations: a MET Norway Frost sources document (/sources/v0.jsonld
    /// ?types=SensorSystem&elements=air_temperature: data[]{id, name,
    /// geometry{coordinates: [longitude, latitude]}, validTo}). They have no
    /// topic: each file is checked whole, then appended to weather_stations; the
    /// same file again is skipped. A meter whose profile has coordinates but names
    /// no station takes the nearest open station of the newest import.
    Stations {
        /// The configuration of the pipeline (its lake).
        #[arg(long, short)]
        config: PathBuf,
        /// The Frost sources JSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The `source` label of the stations.
        #[arg(long, default_value = "frost")]
        source: String,
        /// Check the files; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Weather observations: a MET Norway Frost observations document
    /// (data[]{sourceId, referenceTime, observations[{elementId, value, unit,
    /// timeResolution, qualityCode}]}); of several series of one station,
    /// element and time, the best quality code is kept.
    Weather {
        /// The configuration of the pipeline (brokers, [inputs] weather_topic).
        #[arg(long, short)]
        config: PathBuf,
        /// The Frost JSON file.
        file: PathBuf,
        /// The `source` label (default: frost).
        #[arg(long)]
        source: Option<String>,
        /// Decode and report; produce nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_area(text: &str) -> Result<meterline_operators::economics::PriceArea, String> {
    meterline_operators::economics::PriceArea::ALL
        .into_iter()
        .find(|a| a.code().eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("`{text}` is not a price area: NO1, NO2, NO3, NO4 or NO5"))
}

async fn import(what: ImportCommand) -> anyhow::Result<()> {
    use meterline::inputs::import::{
        import, import_exchange_rates, import_stations, import_tariffs, ImportRequest,
    };
    use meterline::inputs::Input;
    let (config, request) = match &what {
        ImportCommand::Tariffs {
            config,
            files,
            dry_run,
        } => {
            for line in import_tariffs(config, files, *dry_run).await? {
                println!("{line}");
            }
            return Ok(());
        }
        ImportCommand::Stations {
            config,
            files,
            source,
            dry_run,
        } => {
            for line in import_stations(config, files, source, *dry_run).await? {
                println!("{line}");
            }
            return Ok(());
        }
        ImportCommand::ExchangeRates {
            config,
            files,
            source,
            dry_run,
        } => {
            for line in import_exchange_rates(config, files, source, *dry_run).await? {
                println!("{line}");
            }
            return Ok(());
        }
        ImportCommand::Prices {
            config,
            file,
            area,
            version,
            source,
            dry_run,
        } => (
            config,
            ImportRequest {
                input: Input::Prices,
                file,
                area: *area,
                version: *version,
                source: source.clone(),
                dry_run: *dry_run,
            },
        ),
        ImportCommand::Weather {
            config,
            file,
            source,
            dry_run,
        } => (
            config,
            ImportRequest {
                input: Input::Weather,
                file,
                area: None,
                version: None,
                source: source.clone(),
                dry_run: *dry_run,
            },
        ),
    };
    let report = import(config, &request).await?;
    println!("{report}");
    Ok(())
}

#[derive(Debug, Subcommand)]
enum SubjectCommand {
    /// Everything stored about one subject (rights of access and portability):
    /// profile, consent history, access log, every stored reading version, and
    /// the consumption aggregates of their meters on their days. JSON is one
    /// document (to stdout, or DIR/subject.json); CSV and Parquet write one file
    /// per section into --out. Sections and columns: README, "Subject export".
    /// Needs the pseudonym key (the consent history is stored under a keyed hash).
    ///
    /// Examples:
    ///   meterline subject export --config deploy/meterline.toml --tenant acme-industri --subject acct-1 > acct-1.json
    ///   meterline subject export --config deploy/meterline.toml --tenant acme-industri --subject acct-1 --format parquet --out export/
    #[command(verbatim_doc_comment)]
    Export {
        /// The configuration of the pipeline (lake, tenants, key).
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
        #[arg(long, value_enum, default_value_t = meterline::query::export::ExportFormat::Json)]
        format: meterline::query::export::ExportFormat,
        /// Output directory (required for csv and parquet).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// One sweep now; prints the audit rows it wrote.
    Run {
        /// The configuration of the pipeline (lake, tenants' retention).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct DlqFilter {
    /// Only this reason code (e.g. unknown_tenant).
    #[arg(long, value_parser = meterline::query::dlq::parse_reason)]
    reason: Option<meterline_operators::Reason>,
    /// Only dead letters from this time on: RFC 3339, a date, or an age (90m, 24h, 7d).
    #[arg(long, value_parser = meterline::query::dlq::parse_since)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<DlqFilter> for meterline::query::dlq::Filter {
    fn from(f: DlqFilter) -> Self {
        Self {
            reason: f.reason,
            since: f.since,
        }
    }
}

async fn simulate_any(command: Command) -> ExitCode {
    match command {
        Command::Simulate {
            format,
            out: Some(out),
            meters,
            days,
            from,
            bad,
            ..
        } if format == "emif" => report(simulate_emif(&out, meters, days, from, bad)),
        Command::Simulate {
            format: _,
            out: _,
            brokers,
            config,
            topic,
            meters,
            days,
            from,
            rate,
            bad,
        } => simulate_command(brokers, config, topic, (meters, days, from, rate, bad)).await,
        _ => unreachable!("simulate_any is given Command::Simulate"),
    }
}

async fn simulate_command(
    brokers: Option<String>,
    config: Option<PathBuf>,
    topic: Option<String>,
    (meters, days, from, rate, bad): (usize, u32, NaiveDate, u64, usize),
) -> ExitCode {
    let kafka = match config {
        Some(path) => meterline::config::Config::load(&path)
            .and_then(meterline::config::Config::kafka_settings),
        None => meterline::config::plain_kafka(&brokers.unwrap_or_default()),
    };
    let kafka = match kafka {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let topic = topic.unwrap_or_else(|| kafka.readings_topic.clone());
    report(simulate(&kafka, topic, meters, days, from, rate, bad).await)
}

fn simulate_emif(
    out: &std::path::Path,
    meters: usize,
    days: u32,
    from: NaiveDate,
    bad: usize,
) -> anyhow::Result<()> {
    if bad > 0 {
        eprintln!("note: --bad applies to --format kafka only; the EMIF files hold good values");
    }
    let spec = meterline::dev::generator::GeneratorSpec {
        meters,
        first_day: from,
        days,
        timezone: chrono_tz::Europe::Oslo,
        bad: 0,
        seed: rand::random(),
    };
    let written = meterline::dev::emif::write(&spec, out)?;
    println!(
        "wrote {} E66 messages ({} series, {} observations) into {}",
        written.files.len(),
        written.series,
        written.observations,
        out.display()
    );
    println!(
        "publish them: meterline elhub ingest --config CONFIG --tenant TENANT {}/e66-*.xml",
        out.display()
    );
    if let Some(path) = &written.masterdata {
        println!(
            "and the meters' master data (a private tenant, with inputs.profiles_topic and elhub.grid_areas.\"{}\" set): {}",
            meterline::dev::emif::SIMULATED_GRID_AREA,
            path.display()
        );
    }
    Ok(())
}

fn parse_ttl(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 3600, 90s, 15m, 8h or 1d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    match n.checked_mul(factor) {
        Some(secs) if secs > 0 && secs <= 366 * 86_400 => Ok(secs),
        _ => Err(format!("`{text}`: between 1 second and 366 days")),
    }
}

fn token(
    config: &std::path::Path,
    tenant: String,
    role: &str,
    subject: Option<String>,
    meters: Vec<String>,
    ttl_secs: i64,
) -> ExitCode {
    let Some(role) = meterline::serve::jwt::Role::parse(role) else {
        eprintln!("error: unknown role {role}");
        return ExitCode::from(2);
    };
    let minted = meterline::config::Config::load(config).and_then(|c| {
        let now = meterline::config::clock_from_env()?.now().timestamp();
        let request = meterline::serve::token::Request {
            tenant,
            role,
            subject,
            meters,
            ttl_secs,
        };
        meterline::serve::token::mint(&c.serve, &request, now)
    });
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn meters_range() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=1_000_000)
}

fn days_range() -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::new().range(1..=3660)
}

/// Targets capped at `info` (see `init_logs`). Target names match by prefix:
/// `datafusion` covers `datafusion_optimizer`, `datafusion_sql`, ...
const QUIET_LIBRARIES: [&str; 7] = [
    "datafusion=info",
    "buoyant_kernel=info",
    "delta_kernel=info",
    "deltalake=info",
    "sqlparser=info",
    "object_store=info",
    "parquet=info",
];

fn init_logs(format: &str, quiet: bool) {
    use std::io::IsTerminal;
    // The demo and sql print results; progress logs would only clutter them.
    let default = if quiet {
        "warn,buoyant_kernel=off"
    } else {
        "warn,meterline=info,meterline_sinks=info,buoyant_kernel=off"
    };
    let filter = match tracing_subscriber::EnvFilter::try_from_env("METERLINE_LOG") {
        Ok(mut filter) => {
            // Libraries whose debug logs print query plans and predicates, with
            // their literals (a subject's id in a WHERE clause): capped at info
            // whatever METERLINE_LOG says, so logs never carry identifiers. (The
            // default filter keeps libraries at warn.)
            for directive in QUIET_LIBRARIES {
                if let Ok(d) = directive.parse() {
                    filter = filter.add_directive(d);
                }
            }
            filter
        }
        Err(_) => tracing_subscriber::EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Sql { .. }
            | Command::Dlq { .. }
            | Command::Audit { .. }
            | Command::Token { .. }
            | Command::Import { .. }
            | Command::SimulateCost { .. }
            | Command::Elhub {
                action: ElhubCommand::Ingest { watch: None, .. }
            }
    );
    init_logs(&cli.log_format, quiet);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Serve { .. }) {
        // Planning recurses over a statement's tree. The token limit bounds the
        // depth (serve::guard::MAX_QUERY_TOKENS); this stack holds the deepest
        // tree it allows with room to spare. Address space, not memory: pages are
        // touched only as deep as a query goes.
        builder.thread_stack_size(meterline::serve::THREAD_STACK_BYTES);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run { config } => meterline::service::run_from_file(&config).await,
        Command::Demo {
            lake,
            meters,
            days,
            from,
            bad,
        } => {
            let opts = meterline::dev::demo::DemoOptions {
                lake,
                meters,
                days,
                first_day: from,
                partitions: 4,
                bad,
            };
            report(meterline::dev::demo::run(opts).await.map(|_| ()))
        }
        Command::Sql {
            lake,
            storage_options,
            format,
            query,
        } => report(sql(lake, storage_options, format, query).await),
        command @ Command::Simulate { .. } => simulate_any(command).await,
        Command::Dlq { action } => report(dlq(action).await),
        Command::Import { what } => report(import(what).await),
        Command::Elhub { action } => elhub(action).await,
        command @ Command::SimulateCost { .. } => report(simulate_cost(command).await),
        Command::Serve { config } => meterline::serve::run_from_file(&config).await,
        Command::Token {
            config,
            tenant,
            role,
            subject,
            meters,
            ttl,
        } => token(&config, tenant, &role, subject, meters, ttl),
        Command::Retention {
            action: RetentionCommand::Run { config },
        } => report(retention(&config).await),
        Command::Subject {
            action:
                SubjectCommand::Export {
                    config,
                    tenant,
                    subject,
                    format,
                    out,
                },
        } => report(export(&config, &tenant, &subject, format, out.as_deref()).await),
        Command::Audit { config, tenant } => match audit(&config, tenant.as_deref()).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(meterline::query::audit::VIOLATION_EXIT),
            Err(e) => {
                eprintln!("error: {}", chain(&e));
                failure(&e)
            }
        },
        Command::Keygen => {
            let key = meterline_operators::MasterKey::from_bytes(rand::random());
            println!("{}", key.to_hex().as_str());
            ExitCode::SUCCESS
        }
    }
}

/// `meterline simulate-cost`.
async fn simulate_cost(command: Command) -> anyhow::Result<()> {
    let Command::SimulateCost {
        config,
        tenant,
        meter,
        from,
        to,
        scheme,
        tariff,
    } = command
    else {
        anyhow::bail!("not a simulate-cost command");
    };
    let simulation = meterline::query::simulate::Simulation {
        tenant,
        meter,
        from,
        to,
        scheme,
        tariff_file: tariff,
    };
    meterline::query::simulate::run(&config, &simulation).await
}

/// `--scheme`: a support scheme by name.
fn parse_scheme(text: &str) -> Result<meterline_operators::economics::hour::Scheme, String> {
    meterline_operators::economics::hour::Scheme::parse(text)
        .ok_or_else(|| format!("`{text}`: one of stromstotte, norgespris, none"))
}

async fn elhub(action: ElhubCommand) -> ExitCode {
    let ElhubCommand::Ingest {
        config,
        tenant,
        watch,
        once,
        rejected,
        paths,
    } = action;
    let opts = meterline::elhub::IngestOptions {
        config,
        tenant,
        paths,
        watch,
        rejected,
        once,
    };
    match meterline::elhub::ingest(&opts).await {
        Ok(summary) if summary.has_rejects() => ExitCode::from(3),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            failure(&e)
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            failure(&e)
        }
    }
}

/// 2 for a configuration error (as `meterline run` exits), 1 for any other.
fn failure(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<meterline::config::ConfigError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// An error and its causes, skipping causes whose text the message already shows.
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

async fn sql(
    lake: String,
    options: Vec<String>,
    format: Format,
    query: String,
) -> anyhow::Result<()> {
    let lake = LakeConfig {
        uri: lake,
        storage_options: meterline::query::sql::parse_options(&options)?,
    };
    let batches = meterline::query::sql::query(&lake, &query).await?;
    print!("{}", meterline::query::sql::render(&batches, format)?);
    if format == Format::Table {
        println!();
    }
    Ok(())
}

async fn retention(config: &std::path::Path) -> anyhow::Result<()> {
    let settings = meterline::config::Config::load(config)?.build()?;
    let lake = meterline_sinks::Lake::new(&settings.lake)?;
    let mut lifecycle = meterline::privacy::lifecycle::Lifecycle::open(
        &lake,
        settings.tenants.clone(),
        settings.key.clone(),
        settings.lifecycle.clone(),
        settings.aggregate.clone(),
        meterline::metrics::Metrics::new(),
    )
    .await?
    .with_rates(settings.economics.rates.clone());
    let entries = lifecycle.sweep(settings.clock.now()).await?;
    for (tenant, tables) in meterline::privacy::lifecycle::unconfigured_tenants(
        &lake,
        &settings.tenants,
        settings.key.as_ref(),
    )
    .await?
    {
        eprintln!(
            "error: tenant {tenant} has data in the lake ({}) but is not configured: nothing deletes it; list it under [[tenants]] with retired = true and its retention, or erase it",
            tables.join(", ")
        );
    }
    if entries.is_empty() {
        println!("nothing past its retention");
    }
    for e in entries {
        println!(
            "{} {}: {} rows removed, {} files rewritten, {} files deleted from storage ({})",
            e.category,
            e.tenant.as_deref().unwrap_or("all tenants"),
            e.rows_removed,
            e.files_rewritten,
            e.files_vacuumed,
            e.detail.unwrap_or_default()
        );
    }
    Ok(())
}

async fn export(
    config: &std::path::Path,
    tenant: &str,
    subject: &str,
    format: meterline::query::export::ExportFormat,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let settings = meterline::config::Config::load(config)?.build()?;
    let sections = meterline::query::export::collect(&settings, tenant, subject).await?;
    let written = meterline::query::export::write(
        tenant,
        subject,
        &sections,
        format,
        out,
        settings.clock.now(),
    )?;
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// True when no promise is broken.
async fn audit(config: &std::path::Path, tenant: Option<&str>) -> anyhow::Result<bool> {
    let settings = meterline::config::Config::load(config)?.build()?;
    if let Some(t) = tenant {
        if settings.tenants.by_id(t).is_none() {
            anyhow::bail!("tenant `{t}` is not in the configuration");
        }
    }
    let report = meterline::query::audit::report(&settings, tenant, settings.clock.now()).await?;
    print!("{}", meterline::query::audit::render(&report));
    Ok(report.clean())
}

async fn dlq(action: DlqCommand) -> anyhow::Result<()> {
    use meterline::config::Config;
    match action {
        DlqCommand::List {
            config,
            filter,
            limit,
            format,
        } => {
            let config = Config::load(&config)?;
            let out = meterline::query::dlq::list(&config, &filter.into(), limit, format).await?;
            print!("{out}");
            if format == Format::Table {
                println!();
            }
        }
        DlqCommand::Replay {
            config,
            filter,
            dry_run,
        } => {
            let settings = Config::load(&config)?.build()?;
            let r = meterline::query::dlq::replay(&settings, &filter.into(), dry_run).await?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            println!(
                "{verb} {} dead letters to {}; {} without a stored payload (not replayable)",
                r.replayed, settings.kafka.readings_topic, r.not_replayable
            );
        }
    }
    Ok(())
}

async fn simulate(
    kafka: &meterline::config::KafkaConfig,
    topic: String,
    meters: usize,
    days: u32,
    from: NaiveDate,
    rate: u64,
    bad: usize,
) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let spec = meterline::dev::generator::GeneratorSpec {
        meters,
        first_day: from,
        days,
        timezone: chrono_tz::Europe::Oslo,
        bad,
        seed: rand::random(),
    };
    let producer: FutureProducer = meterline::kafka::client::producer(kafka)
        .set("linger.ms", "20")
        .create()
        .context("create producer")?;
    let messages = spec.generate();
    let started = std::time::Instant::now();
    let mut inflight = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let record = FutureRecord::to(&topic).key(&m.key).payload(&m.payload);
        match producer.send_result(record) {
            Ok(f) => inflight.push(f),
            Err((e, _)) => anyhow::bail!("produce failed: {e}"),
        }
        if inflight.len() >= 10_000 {
            for f in inflight.drain(..) {
                f.await?
                    .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
            }
        }
    }
    for f in inflight {
        f.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
    }
    producer.flush(rdkafka::util::Timeout::After(Duration::from_secs(30)))?;
    println!(
        "produced {} messages ({} readings, {} bad) to {topic} in {:.1}s",
        messages.len(),
        spec.good_count(),
        bad,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
