//! Fri nettleie tariff files (the open grid tariff dataset, CC BY 4.0), one YAML file per grid
//! company, into [`GridTariff`]s.
//!
//! ```yaml
//! netteier: 'Havnett AS'
//! gln: ['7080010001832']
//! sist_oppdatert: '2025-02-24'
//! kilder: ['https://...']
//! tariffer:
//!   - kundegrupper: [husholdning, fritid]        # husholdning | fritid | liten_næring
//!     gyldig_fra: '2024-08-01'                    # included
//!     gyldig_til: '2025-01-01'                    # excluded; absent: open
//!     energiledd:
//!       grunnpris: 29.72                          # øre/kWh excl. VAT and fees
//!       unntak:
//!         - {navn: Dag, timer: 6-21, dager: [virkedag], måneder: [januar], pris: 38.5}
//!     fastledd:
//!       metode: TRE_DØGNMAX_MND                   # or MND_MAX, OV_TREFASE, FEM_VEKTET_ÅR, UKJENT
//!       terskel_inkludert: true
//!       terskler: [{terskel: 0, pris: 2400}, {terskel: 5, pris: 3072}]   # kW (A), NOK/year
//! ```
//!
//! Numbers are read exactly: an integer as it is, a decimal through its shortest round-trip
//! text, which is the text of the file for any price with fewer than 16 significant digits.
//! Unknown keys are refused (the dataset's schema is closed), so a misspelt `måneder` is an
//! error rather than an exception that applies all year. `tillegg` (a surcharge, in files from
//! before December 2024) is read as well as `pris`.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::capacity::{Step, Steps};
use super::tariff::{
    Adjustment, CapacityCharge, CustomerGroup, Days, EnergyCharge, Exception, GridTariff, HourRange,
};

/// Why a tariff file was not read. Nothing of a file is used unless all of it is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffFileError {
    #[error("not a Fri nettleie tariff file: {0}")]
    Yaml(String),
    #[error("tariff {tariff}: `{field}` {problem}")]
    Invalid {
        /// 1-based position in `tariffer`.
        tariff: usize,
        field: &'static str,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    netteier: String,
    gln: Vec<Text>,
    #[serde(default)]
    mga: Vec<String>,
    /// When the data was last checked: not needed to price anything.
    #[serde(default, rename = "sist_oppdatert")]
    _checked: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    kilder: Vec<String>,
    tariffer: Vec<TariffYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TariffYaml {
    gyldig_fra: Text,
    #[serde(default)]
    gyldig_til: Option<Text>,
    #[serde(default)]
    navn: Option<String>,
    kundegrupper: Vec<String>,
    energiledd: EnergyYaml,
    fastledd: CapacityYaml,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnergyYaml {
    grunnpris: Number,
    #[serde(default)]
    unntak: Vec<ExceptionYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionYaml {
    navn: String,
    #[serde(default)]
    timer: Option<Text>,
    #[serde(default)]
    dager: Option<OneOrMany>,
    #[serde(default, rename = "måneder")]
    maneder: Option<OneOrMany>,
    #[serde(default)]
    pris: Option<Number>,
    #[serde(default)]
    tillegg: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacityYaml {
    metode: String,
    #[serde(default)]
    terskel_inkludert: Option<bool>,
    terskler: Vec<StepYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepYaml {
    terskel: Number,
    pris: Number,
}

/// A number as YAML gives it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Number {
    fn decimal(&self) -> Option<Decimal> {
        match self {
            Self::Int(i) => Some(Decimal::from(*i)),
            Self::Float(f) if f.is_finite() => Decimal::from_str_exact(&f.to_string()).ok(),
            Self::Float(_) => None,
            Self::Text(t) => Decimal::from_str_exact(t.trim()).ok(),
        }
    }
}

/// A scalar that may come quoted or not (`'2024-08-01'` or `2024-08-01`; a GLN as text or as
/// a number; `6-21`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Text {
    Text(String),
    Int(i64),
}

impl Text {
    fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Int(i) => i.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

const MONTHS: [&str; 12] = [
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
];

/// The most bytes a tariff file may have; the largest in the dataset is a few kilobytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Every tariff of a Fri nettleie file.
///
/// # Errors
/// See [`TariffFileError`]: the first problem found.
pub fn parse_tariff_file(yaml: &str) -> Result<Vec<GridTariff>, TariffFileError> {
    if yaml.len() > MAX_FILE_BYTES {
        return Err(TariffFileError::Yaml(format!(
            "{} bytes, more than the {MAX_FILE_BYTES} a tariff file may have",
            yaml.len()
        )));
    }
    let file: File = yaml_serde::from_str(yaml)
        .map_err(|e| TariffFileError::Yaml(e.to_string().chars().take(200).collect()))?;
    let gln: Vec<String> = file.gln.iter().map(Text::text).collect();
    if gln.is_empty() || !gln.iter().all(|g| valid_gln(g)) {
        return Err(TariffFileError::Invalid {
            tariff: 0,
            field: "gln",
            problem: "must list the company's GLNs (13 digits, a valid GS1 check digit)".into(),
        });
    }
    file.tariffer
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut tariff = tariff(i + 1, &file.netteier, &gln, t)?;
            tariff.grid_areas.clone_from(&file.mga);
            tariff.sources.clone_from(&file.kilder);
            Ok(tariff)
        })
        .collect()
}

fn tariff(
    n: usize,
    company: &str,
    gln: &[String],
    t: &TariffYaml,
) -> Result<GridTariff, TariffFileError> {
    let invalid = |field, problem: String| TariffFileError::Invalid {
        tariff: n,
        field,
        problem,
    };
    let date = |field, text: &Text| {
        let text = text.text();
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| {
            invalid(
                field,
                format!("is not a date (YYYY-MM-DD): `{}`", clip(&text)),
            )
        })
    };
    let valid_from = date("gyldig_fra", &t.gyldig_fra)?;
    let valid_to = t
        .gyldig_til
        .as_ref()
        .map(|d| date("gyldig_til", d))
        .transpose()?;
    if valid_to.is_some_and(|to| to <= valid_from) {
        return Err(invalid("gyldig_til", "is not after gyldig_fra".into()));
    }
    let customer_groups = t
        .kundegrupper
        .iter()
        .map(|g| {
            CustomerGroup::parse(g).ok_or_else(|| {
                invalid(
                    "kundegrupper",
                    format!("has an unknown group `{}`", clip(g)),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if customer_groups.is_empty() {
        return Err(invalid("kundegrupper", "is empty".into()));
    }
    let base_ore = t
        .energiledd
        .grunnpris
        .decimal()
        .ok_or_else(|| invalid("energiledd.grunnpris", "is not a number".into()))?;
    let exceptions = t
        .energiledd
        .unntak
        .iter()
        .map(|e| exception(n, e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GridTariff {
        company: company.to_owned(),
        gln: gln.to_vec(),
        name: t.navn.clone(),
        customer_groups,
        valid_from,
        valid_to,
        energy: EnergyCharge {
            base_ore,
            exceptions,
        },
        capacity: capacity(n, &t.fastledd)?,
        grid_areas: Vec::new(),
        sources: Vec::new(),
    })
}

fn capacity(n: usize, c: &CapacityYaml) -> Result<CapacityCharge, TariffFileError> {
    let invalid = |problem: String| TariffFileError::Invalid {
        tariff: n,
        field: "fastledd.terskler",
        problem,
    };
    let mut steps = c
        .terskler
        .iter()
        .map(|s| {
            Ok(Step {
                from: s
                    .terskel
                    .decimal()
                    .ok_or_else(|| invalid("has a threshold that is not a number".into()))?,
                nok_per_year: s
                    .pris
                    .decimal()
                    .ok_or_else(|| invalid("has a price that is not a number".into()))?,
            })
        })
        .collect::<Result<Vec<_>, TariffFileError>>()?;
    steps.sort_by_key(|s| s.from);
    if steps.windows(2).any(|w| w[0].from == w[1].from) {
        return Err(invalid("has two steps with the same threshold".into()));
    }
    Ok(CapacityCharge {
        method: c.metode.clone(),
        steps: Steps {
            steps,
            // The dataset's default when a source does not say ("2 to 5" is the common form).
            threshold_included: c.terskel_inkludert.unwrap_or(true),
        },
    })
}

fn exception(n: usize, e: &ExceptionYaml) -> Result<Exception, TariffFileError> {
    let invalid = |field, problem: String| TariffFileError::Invalid {
        tariff: n,
        field,
        problem,
    };
    let hours = e
        .timer
        .as_ref()
        .map(|t| {
            hour_range(&t.text()).ok_or_else(|| {
                invalid(
                    "unntak.timer",
                    format!("is not an hour range such as 6-21: `{}`", clip(&t.text())),
                )
            })
        })
        .transpose()?;
    let days = e.dager.as_ref().map_or(Ok(Vec::new()), |d| {
        d.items()
            .into_iter()
            .map(|name| {
                Days::parse(name).ok_or_else(|| {
                    invalid(
                        "unntak.dager",
                        format!("has an unknown day `{}`", clip(name)),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut months = Vec::new();
    for name in e.maneder.as_ref().map(OneOrMany::items).unwrap_or_default() {
        if name == "alle" {
            months.clear();
            break;
        }
        let month = MONTHS.iter().position(|m| *m == name).ok_or_else(|| {
            invalid(
                "unntak.måneder",
                format!("has an unknown month `{}`", clip(name)),
            )
        })?;
        months.push(u32::try_from(month + 1).unwrap_or(0));
    }
    let adjustment = match (&e.pris, &e.tillegg) {
        (Some(p), None) => Adjustment::Price(
            p.decimal()
                .ok_or_else(|| invalid("unntak.pris", "is not a number".into()))?,
        ),
        (None, Some(s)) => Adjustment::Surcharge(
            s.decimal()
                .ok_or_else(|| invalid("unntak.tillegg", "is not a number".into()))?,
        ),
        _ => {
            return Err(invalid(
                "unntak",
                "needs exactly one of `pris` and `tillegg`".into(),
            ))
        }
    };
    Ok(Exception {
        name: e.navn.clone(),
        hours,
        days,
        months,
        adjustment,
    })
}

/// 13 digits whose last is the GS1 check digit of the others.
#[must_use]
pub fn valid_gln(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 13
        && b.iter().all(u8::is_ascii_digit)
        && crate::ids::gs1_check_digit(&b[..12]) == b[12] - b'0'
}

/// `6-21`, `22-5` (wraps) or `17` (one hour).
fn hour_range(text: &str) -> Option<HourRange> {
    let hour = |s: &str| s.trim().parse::<u32>().ok().filter(|h| *h <= 23);
    match text.split_once('-') {
        Some((from, to)) => Some(HourRange {
            from: hour(from)?,
            to: hour(to)?,
        }),
        None => hour(text).map(|h| HourRange { from: h, to: h }),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}
