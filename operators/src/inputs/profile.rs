//! `meter-profile/v1`: what pricing a private tenant's meter needs to know, from a date on.
//!
//! ```json
//! {"schema": "meter-profile/v1", "tenant": "acme-industri", "meter_id": "707057500000000018",
//!  "valid_from": "2026-01-01", "price_area": "NO1", "grid_company_gln": "7080000000012",
//!  "customer_group": "household", "tax_zone": "standard", "scheme": "stromstotte",
//!  "fuse_amperes": 25, "latitude": 59.91, "longitude": 10.75, "station": "SN18700",
//!  "version": "2026-01-02T08:00:00Z"}
//! ```
//!
//! - `tenant`: a configured private tenant; a public tenant's profile is `tenant_not_private`
//!   (public deployments keep no per-meter facts);
//! - `meter_id`: a GSRN (check digit and the tenant's prefixes);
//! - `valid_from`: the local date it applies from; a meter's profile on a day is the one with
//!   the latest `valid_from` on or before it (newest `version` first for the same date), so a
//!   switch to Norgespris on the 15th prices both halves of the month right;
//! - `price_area` `NO1`..`NO5`; `grid_company_gln` 13 digits with a GS1 check digit;
//!   `customer_group` `household` | `cabin` | `small_business`; `tax_zone` `standard` |
//!   `north` | `finnmark`; `scheme` `stromstotte` | `norgespris` | `none`;
//! - optional `fuse_amperes` (1..10000), `latitude`/`longitude` (both or neither; stored
//!   rounded half to even to 2 decimals, about 1 km: enough to pick a weather station, no
//!   finer), `station` (a weather station id that overrides the nearest one).
//!
//! A profile is personal data: a dead letter keeps no payload.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};

use super::fields::{dead_letter, open, Fields, Refusal};
use super::{provenance_columns, provenance_fields, utc_timestamp, InputContext, InputOutput};
use crate::dead_letter::Reason;
use crate::economics::frinettleie::valid_gln;
use crate::economics::hour::Scheme;
use crate::economics::rates::TaxZone;
use crate::economics::tariff::CustomerGroup;
use crate::economics::PriceArea;
use crate::ids::check_gsrn;
use crate::tenant::Deployment;
use crate::{RawRecord, TenantRegistry};

/// The contract's `schema` value.
pub const SCHEMA: &str = "meter-profile/v1";

/// Decimals kept of a coordinate: 0.01° is about 1 km.
pub const COORDINATE_DECIMALS: u32 = 2;

fn coordinate_type() -> DataType {
    DataType::Decimal128(5, 2)
}

/// The `meter_profiles` table's columns.
pub static METER_PROFILES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        vec![
            Field::new("tenant", DataType::Utf8, false),
            Field::new("meter", DataType::Utf8, false),
            Field::new("valid_from", DataType::Date32, false),
            Field::new("price_area", DataType::Utf8, false),
            Field::new("grid_company_gln", DataType::Utf8, false),
            Field::new("customer_group", DataType::Utf8, false),
            Field::new("tax_zone", DataType::Utf8, false),
            Field::new("scheme", DataType::Utf8, false),
            Field::new("fuse_amperes", DataType::Int32, true),
            Field::new("latitude", coordinate_type(), true),
            Field::new("longitude", coordinate_type(), true),
            Field::new("station", DataType::Utf8, true),
            Field::new("version", utc_timestamp(), false),
        ]
        .into_iter()
        .chain(provenance_fields())
        .collect::<Vec<_>>(),
    ))
});

/// One decoded profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub tenant: String,
    pub meter: String,
    pub valid_from: NaiveDate,
    pub price_area: PriceArea,
    pub grid_company_gln: String,
    pub customer_group: CustomerGroup,
    pub tax_zone: TaxZone,
    pub scheme: Scheme,
    pub fuse_amperes: Option<i32>,
    /// Rounded to [`COORDINATE_DECIMALS`].
    pub coordinates: Option<(Decimal, Decimal)>,
    pub station: Option<String>,
    pub version_micros: i64,
}

fn one_of<T>(
    f: &Fields<'_>,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<T, Refusal> {
    let text = f.text(name)?;
    parse(&text)
        .ok_or_else(|| Refusal::new(Reason::InvalidValue, format!("{name} must be {allowed}")))
}

/// Read one `meter-profile/v1` record (the tenant already checked).
///
/// # Errors
/// The refusal that makes it a dead letter.
pub fn parse(f: &Fields<'_>, tenant: &str, prefixes: &[String]) -> Result<Profile, Refusal> {
    let meter = f.text("meter_id")?;
    check_gsrn(&meter).map_err(|_| Refusal::new(Reason::InvalidGsrn, "meter_id"))?;
    if !prefixes.is_empty() && !prefixes.iter().any(|p| meter.starts_with(p.as_str())) {
        return Err(Refusal::new(Reason::GsrnPrefix, "meter_id"));
    }
    let gln = f.text("grid_company_gln")?;
    if !valid_gln(&gln) {
        return Err(Refusal::new(
            Reason::InvalidValue,
            "grid_company_gln must be 13 digits with a GS1 check digit",
        ));
    }
    let fuse_amperes = match f.opt_decimal("fuse_amperes")? {
        None => None,
        Some(a) => Some(
            i32::try_from(a.mantissa())
                .ok()
                .filter(|v| a.scale() == 0 && (1..=10_000).contains(v))
                .ok_or_else(|| {
                    Refusal::new(
                        Reason::InvalidValue,
                        "fuse_amperes must be a whole number 1..10000",
                    )
                })?,
        ),
    };
    Ok(Profile {
        tenant: tenant.to_owned(),
        meter,
        valid_from: f.date("valid_from")?,
        price_area: one_of(
            f,
            "price_area",
            |t| PriceArea::ALL.into_iter().find(|a| a.code() == t),
            "NO1..NO5",
        )?,
        grid_company_gln: gln,
        customer_group: one_of(
            f,
            "customer_group",
            CustomerGroup::parse,
            "household, cabin or small_business",
        )?,
        tax_zone: one_of(f, "tax_zone", TaxZone::parse, "standard, north or finnmark")?,
        scheme: one_of(
            f,
            "scheme",
            Scheme::parse,
            "stromstotte, norgespris or none",
        )?,
        fuse_amperes,
        coordinates: coordinates(f)?,
        station: f.opt_label("station", 32)?,
        version_micros: f.instant("version")?,
    })
}

fn coordinates(f: &Fields<'_>) -> Result<Option<(Decimal, Decimal)>, Refusal> {
    let round = |d: Decimal| {
        d.round_dp_with_strategy(COORDINATE_DECIMALS, RoundingStrategy::MidpointNearestEven)
    };
    match (f.opt_decimal("latitude")?, f.opt_decimal("longitude")?) {
        (None, None) => Ok(None),
        (Some(lat), Some(lon)) => {
            let (lat, lon) = (round(lat), round(lon));
            if lat.abs() > Decimal::from(90) || lon.abs() > Decimal::from(180) {
                return Err(Refusal::new(
                    Reason::InvalidValue,
                    "latitude must be -90..90 and longitude -180..180",
                ));
            }
            Ok(Some((lat, lon)))
        }
        _ => Err(Refusal::new(
            Reason::MissingField,
            "latitude and longitude come together",
        )),
    }
}

/// Decode `records` into a `meter_profiles` batch and dead letters.
#[must_use]
pub fn decode(
    records: &[RawRecord<'_>],
    ctx: &InputContext,
    tenants: &TenantRegistry,
) -> InputOutput {
    let mut rows = Vec::with_capacity(records.len());
    let mut dead_letters = Vec::new();
    for r in records {
        let mut tenant_id = None;
        let outcome = open(r.payload, ctx.max_message_bytes, SCHEMA).and_then(|f| {
            let id = f.text("tenant")?;
            let tenant = tenants
                .accepting(&id)
                .ok_or_else(|| Refusal::new(Reason::UnknownTenant, "tenant"))?;
            tenant_id = Some(tenant.id.clone());
            if tenant.deployment != Deployment::Private {
                return Err(Refusal::new(
                    Reason::TenantNotPrivate,
                    "profiles are stored for private tenants only",
                ));
            }
            parse(&f, &tenant.id, &tenant.rules.gsrn_prefixes)
        });
        match outcome {
            Ok(p) => rows.push((r.partition, r.offset, p)),
            Err(refusal) => dead_letters.push(dead_letter(r, refusal, tenant_id, false)),
        }
    }
    InputOutput {
        batch: batch(&rows, ctx.ingested_at_micros),
        dead_letters,
    }
}

fn hundredths(d: Decimal) -> i128 {
    let mut d = d;
    d.rescale(COORDINATE_DECIMALS);
    d.mantissa()
}

fn batch(rows: &[(i32, i64, Profile)], ingested_at: i64) -> RecordBatch {
    let n = rows.len();
    let text = || StringBuilder::with_capacity(n, n * 16);
    let stamp = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone(crate::schema::UTC);
    let coordinate = || Decimal128Builder::with_capacity(n).with_data_type(coordinate_type());
    let (mut tenant, mut meter, mut area, mut gln, mut group, mut zone, mut scheme, mut station) = (
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
    );
    let mut valid_from = Date32Builder::with_capacity(n);
    let mut fuse = Int32Builder::with_capacity(n);
    let (mut lat, mut lon) = (coordinate(), coordinate());
    let mut version = stamp();
    for (_, _, row) in rows {
        tenant.append_value(&row.tenant);
        meter.append_value(&row.meter);
        valid_from.append_value(crate::aggregate::days_since_epoch(row.valid_from));
        area.append_value(row.price_area.code());
        gln.append_value(&row.grid_company_gln);
        group.append_value(row.customer_group.name());
        zone.append_value(row.tax_zone.name());
        scheme.append_value(row.scheme.name());
        fuse.append_option(row.fuse_amperes);
        lat.append_option(row.coordinates.map(|c| hundredths(c.0)));
        lon.append_option(row.coordinates.map(|c| hundredths(c.1)));
        station.append_option(row.station.as_deref());
        version.append_value(row.version_micros);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(meter.finish()),
        Arc::new(valid_from.finish()),
        Arc::new(area.finish()),
        Arc::new(gln.finish()),
        Arc::new(group.finish()),
        Arc::new(zone.finish()),
        Arc::new(scheme.finish()),
        Arc::new(fuse.finish()),
        Arc::new(lat.finish()),
        Arc::new(lon.finish()),
        Arc::new(station.finish()),
        Arc::new(version.finish()),
    ];
    columns.extend(provenance_columns(rows, ingested_at));
    RecordBatch::try_new(METER_PROFILES.clone(), columns).expect("columns match METER_PROFILES")
}
