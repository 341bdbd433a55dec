//! Elhub's master data message, `NotifyMeteringPointCharacteristics` (EMIF v2), read one
//! `PayloadMasterdataMPEvent` at a time and mapped to `meter-profile/v1` records: what
//! pricing a private tenant's meter needs (README "Elhub adapter").
//!
//! ```text
//! rsm:NotifyMeteringPointCharacteristics   urn:no:elhub:emif:masterdata:NotifyMeteringPointCharacteristics:v2
//!   rsm:Header/abie:{Identification, DocumentType, Creation}
//!   rsm:PayloadMasterdataMPEvent   1..9999
//!     abie:StartOfOccurrence                                  from when the payload holds
//!     abie:MeteringPointUsedDomainLocation/Identification     the GSRN
//!     abie:MPPositionMeteringPointGeographicalCoordinate/{Latitude, Longitude}
//!     abie:MeteringGridAreaUsedDomainLocation/Identification  the grid area's EIC code
//!     abie:AnnualPeriodEstimatedMetrics/Total                 kWh a year
//!     abie:MPTaxationProfile/{VATCode, ElFee, ConsumptionCode}
//!     (addresses, the consumer party, the meter: never read)
//! ```
//!
//! Only the elements above are kept as the message is read; the consumer's name, national
//! identity number, contact details, the address and the cadastral unit pass by without
//! being copied anywhere, and coordinates are rounded to 0.01° (about 1 km) before they
//! leave this module.

use std::collections::BTreeMap;
use std::io::BufRead;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use quick_xml::events::BytesStart;
use rust_decimal::{Decimal, RoundingStrategy};

use super::emif::{walk, Document, EmifError, Header, Visit, MAX_SERIES};
use super::readings::{Record, Refusal, RejectReason};
use crate::economics::hour::Scheme;
use crate::economics::rates::TaxZone;
use crate::economics::tariff::CustomerGroup;
use crate::economics::PriceArea;
use crate::ids::{check_gsrn, GsrnError};
use crate::inputs::profile::{COORDINATE_DECIMALS, SCHEMA as PROFILE_SCHEMA};

/// One `PayloadMasterdataMPEvent`, as read (texts clipped, nothing checked yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Characteristics {
    /// Its place in the message, from 1.
    pub number: usize,
    pub start: Option<String>,
    pub metering_point: Option<String>,
    pub latitude: Option<String>,
    pub longitude: Option<String>,
    pub grid_area: Option<String>,
    pub annual_kwh: Option<String>,
    pub vat_code: Option<String>,
    pub el_fee: Option<String>,
    pub consumption_code: Option<String>,
}

impl Characteristics {
    /// The text slot of the element at the end of `path` (`path[1]` the payload).
    fn slot(&mut self, path: &[Vec<u8>]) -> Option<&mut Option<String>> {
        let last = |n: usize| path.get(path.len().wrapping_sub(n)).map(Vec::as_slice);
        Some(match (last(2), last(1)) {
            (Some(b"PayloadMasterdataMPEvent"), Some(b"StartOfOccurrence")) => &mut self.start,
            (Some(b"MeteringPointUsedDomainLocation"), Some(b"Identification")) => {
                &mut self.metering_point
            }
            (Some(b"MPPositionMeteringPointGeographicalCoordinate"), Some(b"Latitude")) => {
                &mut self.latitude
            }
            (Some(b"MPPositionMeteringPointGeographicalCoordinate"), Some(b"Longitude")) => {
                &mut self.longitude
            }
            (Some(b"MeteringGridAreaUsedDomainLocation"), Some(b"Identification")) => {
                &mut self.grid_area
            }
            (Some(b"AnnualPeriodEstimatedMetrics"), Some(b"Total")) => &mut self.annual_kwh,
            (Some(b"MPTaxationProfile"), Some(b"VATCode")) => &mut self.vat_code,
            (Some(b"MPTaxationProfile"), Some(b"ElFee")) => &mut self.el_fee,
            (Some(b"MPTaxationProfile"), Some(b"ConsumptionCode")) => &mut self.consumption_code,
            _ => return None,
        })
    }
}

/// The payloads of a master data message, handed over one at a time.
struct Payloads<F> {
    payload: Option<Characteristics>,
    count: usize,
    each: F,
}

impl<F: FnMut(&Header, Characteristics)> Visit for Payloads<F> {
    fn start(
        &mut self,
        path: &[Vec<u8>],
        name: &[u8],
        _: &BytesStart<'_>,
    ) -> Result<(), EmifError> {
        if path.len() == 1 && name == b"PayloadMasterdataMPEvent" {
            self.count += 1;
            if self.count > MAX_SERIES {
                return Err(EmifError::TooManySeries);
            }
            self.payload = Some(Characteristics {
                number: self.count,
                ..Characteristics::default()
            });
        }
        Ok(())
    }

    fn text(&mut self, path: &[Vec<u8>], text: &str) {
        if let Some(slot) = self.payload.as_mut().and_then(|p| p.slot(path)) {
            slot.get_or_insert_with(String::new).push_str(text);
        }
    }

    fn end(&mut self, header: &Header, path: &[Vec<u8>], name: &[u8]) {
        if path.len() == 1 && name == b"PayloadMasterdataMPEvent" {
            if let Some(p) = self.payload.take() {
                (self.each)(header, p);
            }
        }
    }
}

/// What a read of a master data message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterdataSummary {
    pub header: Header,
    /// Payloads handed over.
    pub payloads: usize,
}

/// Read a `NotifyMeteringPointCharacteristics` message from `input`, handing each payload
/// to `each` as soon as it ends.
///
/// # Errors
/// [`EmifError`]: the message cannot be read (payloads handed over before belong to it).
pub fn read_characteristics<R: BufRead>(
    input: R,
    each: impl FnMut(&Header, Characteristics),
) -> Result<MasterdataSummary, EmifError> {
    let mut payloads = Payloads {
        payload: None,
        count: 0,
        each,
    };
    let (_, header) = walk(
        input,
        &[Document::MeteringPointCharacteristics],
        &mut payloads,
    )?;
    if payloads.count == 0 {
        return Err(EmifError::NoSeries);
    }
    Ok(MasterdataSummary {
        header,
        payloads: payloads.count,
    })
}

/// What the adapter's configuration says of a grid area: its price area and grid company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridArea {
    pub price_area: PriceArea,
    /// 13 digits, GS1 check digit checked by the configuration.
    pub grid_company_gln: String,
}

/// What a profile takes from outside the message.
#[derive(Debug, Clone, Copy)]
pub struct ProfileRules<'a> {
    pub tenant: &'a str,
    /// The tenant's zone: `StartOfOccurrence`'s local date is `valid_from`.
    pub timezone: Tz,
    /// Grid areas by EIC code (`elhub.grid_areas`).
    pub grid_areas: &'a BTreeMap<String, GridArea>,
    /// The scheme of a household (`elhub.household_scheme`); cabins and businesses get
    /// `none` (strømstøtte is for homes).
    pub household_scheme: Scheme,
}

/// `liten næring`: a business below this many kWh a year.
pub const SMALL_BUSINESS_KWH: u32 = 100_000;

/// The customer group of an Elhub consumption code ("sluttbrukergruppe", NVE publication
/// 7/2018): 35 households, 36 cabins and holiday homes, 1..34 (with `1a`, `29a`) trades.
fn customer_group(code: &str) -> Option<CustomerGroup> {
    match code {
        "35" => Some(CustomerGroup::Household),
        "36" => Some(CustomerGroup::Cabin),
        _ => {
            let digits = code.strip_suffix('a').unwrap_or(code);
            let n: u32 = digits.parse().ok()?;
            let lettered = digits.len() < code.len();
            let trade = (1..=34).contains(&n) && (!lettered || n == 1 || n == 29);
            trade.then_some(CustomerGroup::SmallBusiness)
        }
    }
}

/// The tax zone of a taxation profile: VAT code `S` (charged) or `E` (exempt: Nordland,
/// Troms, Finnmark), and `ElFee` 0 for no consumption tax (Finnmark and Nord-Troms).
fn tax_zone(vat: &str, el_fee: Option<Decimal>) -> Result<TaxZone, (RejectReason, String)> {
    let no_tax = el_fee.is_some_and(|f| f.is_zero());
    match (vat, no_tax) {
        ("S", false) => Ok(TaxZone::Standard),
        ("E", false) => Ok(TaxZone::North),
        ("E", true) => Ok(TaxZone::Finnmark),
        ("S", true) => Err((
            RejectReason::UnsupportedCustomer,
            "VAT without consumption tax is not a tax zone meterline prices".into(),
        )),
        (other, _) => Err((
            RejectReason::InvalidValue,
            format!("VATCode `{}` is not S or E", clip(other)),
        )),
    }
}

/// The refusals of one payload, each naming it by its place.
struct Refuse(usize);

impl Refuse {
    fn because(&self, reason: RejectReason, what: String) -> Refusal {
        Refusal {
            reason,
            message: format!("payload {}: {what}", self.0),
        }
    }

    fn missing(&self, field: &str) -> Refusal {
        self.because(
            RejectReason::MissingElement,
            format!("`{field}` is missing"),
        )
    }

    fn invalid(&self, field: &str) -> Refusal {
        self.because(
            RejectReason::InvalidValue,
            format!("`{field}` is not valid"),
        )
    }

    /// A required element's text, trimmed.
    fn text<'a>(&self, field: &str, text: &'a Option<String>) -> Result<&'a str, Refusal> {
        text.as_deref()
            .map(str::trim)
            .ok_or_else(|| self.missing(field))
    }

    /// An optional decimal element.
    fn decimal(&self, field: &str, text: &Option<String>) -> Result<Option<Decimal>, Refusal> {
        text.as_deref()
            .map(|t| Decimal::from_str_exact(t.trim()).map_err(|_| self.invalid(field)))
            .transpose()
    }
}

/// The customer group and tax zone of a payload's taxation profile.
fn taxation(p: &Characteristics, r: &Refuse) -> Result<(CustomerGroup, TaxZone), Refusal> {
    let code = r.text("MPTaxationProfile/ConsumptionCode", &p.consumption_code)?;
    let group =
        customer_group(code).ok_or_else(|| r.invalid("MPTaxationProfile/ConsumptionCode"))?;
    let annual = r.decimal("AnnualPeriodEstimatedMetrics/Total", &p.annual_kwh)?;
    if group == CustomerGroup::SmallBusiness && annual >= Some(Decimal::from(SMALL_BUSINESS_KWH)) {
        let what = format!(
            "a business of {SMALL_BUSINESS_KWH} kWh a year or more has no tariff group here"
        );
        return Err(r.because(RejectReason::UnsupportedCustomer, what));
    }
    let vat = r.text("MPTaxationProfile/VATCode", &p.vat_code)?;
    let el_fee = r.decimal("MPTaxationProfile/ElFee", &p.el_fee)?;
    let zone = tax_zone(vat, el_fee).map_err(|(reason, m)| r.because(reason, m))?;
    Ok((group, zone))
}

/// The `meter-profile/v1` record of one payload, versioned by the message's `Creation`.
///
/// # Errors
/// The payload cannot be a profile; the refusal names the payload by its place, never
/// the metering point or a personal value.
pub fn profile(
    p: &Characteristics,
    version: DateTime<Utc>,
    rules: &ProfileRules<'_>,
) -> Result<Record, Refusal> {
    let r = Refuse(p.number);
    let meter = r.text(
        "MeteringPointUsedDomainLocation/Identification",
        &p.metering_point,
    )?;
    if let Err(e) = check_gsrn(meter) {
        let what = match e {
            GsrnError::Shape => "the metering point is not 18 digits",
            GsrnError::CheckDigit => "the metering point's check digit is wrong",
        };
        return Err(r.because(RejectReason::InvalidGsrn, what.to_owned()));
    }
    let start = r.text("StartOfOccurrence", &p.start)?;
    let valid_from: NaiveDate = DateTime::parse_from_rfc3339(start)
        .map_err(|_| r.invalid("StartOfOccurrence"))?
        .with_timezone(&rules.timezone)
        .date_naive();
    let eic = r.text(
        "MeteringGridAreaUsedDomainLocation/Identification",
        &p.grid_area,
    )?;
    let area = rules.grid_areas.get(eic).ok_or_else(|| {
        let what = format!("grid area `{}` is not in elhub.grid_areas", clip(eic));
        r.because(RejectReason::UnknownGridArea, what)
    })?;
    let (group, zone) = taxation(p, &r)?;
    let scheme = if group == CustomerGroup::Household {
        rules.household_scheme
    } else {
        Scheme::None
    };
    let coordinates = coordinates(p).map_err(|m| r.because(RejectReason::InvalidValue, m))?;
    let v = serde_json::json!({
        "schema": PROFILE_SCHEMA,
        "tenant": rules.tenant,
        "meter_id": meter,
        "valid_from": valid_from.to_string(),
        "price_area": area.price_area.code(),
        "grid_company_gln": area.grid_company_gln,
        "customer_group": group.name(),
        "tax_zone": zone.name(),
        "scheme": scheme.name(),
        "version": version.to_rfc3339_opts(SecondsFormat::Micros, true),
    });
    let mut text = v.to_string();
    if let Some((lat, lon)) = coordinates {
        let position = format!(",\"latitude\":{lat},\"longitude\":{lon}");
        text.insert_str(text.len() - 1, &position);
    }
    Ok((meter.to_owned(), text))
}

/// Latitude and longitude rounded half to even to [`COORDINATE_DECIMALS`], both or none.
fn coordinates(p: &Characteristics) -> Result<Option<(Decimal, Decimal)>, String> {
    let parse = |t: &str, bound: i64| {
        Decimal::from_str_exact(t.trim())
            .ok()
            .filter(|d| d.abs() <= Decimal::from(bound))
            .map(|d| {
                let mut d = d.round_dp_with_strategy(
                    COORDINATE_DECIMALS,
                    RoundingStrategy::MidpointNearestEven,
                );
                d.rescale(COORDINATE_DECIMALS);
                d
            })
    };
    match (p.latitude.as_deref(), p.longitude.as_deref()) {
        (None, None) => Ok(None),
        (Some(lat), Some(lon)) => match (parse(lat, 90), parse(lon, 180)) {
            (Some(lat), Some(lon)) => Ok(Some((lat, lon))),
            _ => Err("the coordinates are not a latitude -90..90 and longitude -180..180".into()),
        },
        _ => Err("a coordinate needs both Latitude and Longitude".into()),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}
