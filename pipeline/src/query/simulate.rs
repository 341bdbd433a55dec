//! `meterline simulate-cost`: what a meter's consumption over a period cost, and what it
//! would have cost under another support scheme or another grid tariff, side by side.
//!
//! The same computation as the cost tables (`operators/src/economics/tables.rs`) runs
//! twice over the meter's current readings, the lake's prices and tariffs and the rates
//! `meterline run` prices with: once with the meter's profiles as they are, once with
//! every profile's scheme replaced (`--scheme`) and/or the tariffs of a Fri nettleie file
//! (`--tariff`, matched by the profile's customer group and the date, whatever company
//! published it). Nothing is written.
//!
//! Months partly inside the period pay their whole capacity charge (a twelfth of the
//! step's yearly price), as the bill of that month would.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context as _};
use chrono::NaiveDate;
use meterline_operators::economics::hour::Scheme;
use meterline_operators::economics::tables::{Context, Temperatures};
use meterline_operators::Deployment;
use rust_decimal::Decimal;

use crate::config::Config;
use crate::cost::read_inputs;
pub use crate::cost::simulation::{compare, Sums, LINES};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub tenant: String,
    pub meter: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub scheme: Option<Scheme>,
    pub tariff_file: Option<std::path::PathBuf>,
}

/// Actual and simulated sums.
///
/// # Errors
/// Configuration; a tenant that is not private; a tariff file that does not parse; no
/// readings of the meter in the period; the lake cannot be read.
pub async fn simulate(config: &Path, s: &Simulation) -> anyhow::Result<(Sums, Sums, String)> {
    let settings = Config::load(config)?.build()?;
    let tenant = settings
        .tenants
        .by_id(&s.tenant)
        .with_context(|| format!("tenant `{}` is not configured", s.tenant))?;
    if tenant.deployment != Deployment::Private {
        bail!(
            "tenant `{}` is public: public deployments keep no per-meter profiles, so there is nothing to price",
            s.tenant
        );
    }
    if s.to < s.from {
        bail!("--to {} is before --from {}", s.to, s.from);
    }
    if (s.to - s.from).num_days() > 366 {
        bail!("a simulation covers at most 367 days");
    }
    if s.scheme.is_none() && s.tariff_file.is_none() {
        bail!("nothing to compare: give --scheme, --tariff or both");
    }
    let lake = meterline_sinks::Lake::existing(&settings.lake)?;
    let inputs = read_inputs(&lake, &s.tenant, s.from, s.to, Some(&s.meter)).await?;
    if inputs.readings.iter().all(|b| b.num_rows() == 0) {
        bail!(
            "no readings of meter {} of tenant {} from {} to {}",
            s.meter,
            s.tenant,
            s.from,
            s.to
        );
    }
    let rates_version = settings.economics.rates.fingerprint();
    let temperatures = Temperatures::new();
    let days: BTreeSet<NaiveDate> = s.from.iter_days().take_while(|d| *d <= s.to).collect();
    let actual_ctx = Context {
        tenant: &s.tenant,
        tz: tenant.timezone,
        prices: &inputs.prices,
        profiles: &inputs.profiles,
        tariffs: &inputs.tariffs,
        rates: &settings.economics.rates,
        rates_version: &rates_version,
        temperatures: &temperatures,
        stations: &[],
    };
    let mut label = Vec::new();
    if let Some(scheme) = s.scheme {
        label.push(format!("scheme {}", scheme.name()));
    }
    let other = match &s.tariff_file {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("read {}", file.display()))?;
            let parsed = meterline_operators::economics::frinettleie::parse_tariff_file(&text)
                .with_context(|| format!("{}: not a Fri nettleie tariff file", file.display()))?;
            label.push(format!(
                "tariff {} ({})",
                parsed.first().map_or("?", |t| t.company.as_str()),
                file.display()
            ));
            Some(parsed)
        }
    };
    let (actual, simulated) = compare(
        &actual_ctx,
        &s.meter,
        s.scheme,
        other,
        &days,
        &inputs.readings,
    )?;
    Ok((actual, simulated, label.join(", ")))
}

fn cell(v: Option<Decimal>, kwh: bool) -> String {
    v.map_or_else(
        || "unknown".to_owned(),
        |v| {
            if kwh {
                v.normalize().to_string()
            } else {
                v.round_dp(2).to_string()
            }
        },
    )
}

/// Print the comparison.
///
/// # Errors
/// As [`simulate`].
pub async fn run(config: &Path, s: &Simulation) -> anyhow::Result<()> {
    let (actual, simulated, label) = simulate(config, s).await?;
    println!(
        "meter {} of {}, {} to {}: actual vs {label} (NOK; VAT included where due)",
        s.meter, s.tenant, s.from, s.to
    );
    println!(
        "  {:<36} {:>14} {:>14} {:>14}",
        "", "actual", "simulated", "difference"
    );
    for (i, (label, _)) in LINES.iter().enumerate() {
        let (a, b) = (actual.values[i], simulated.values[i]);
        let kwh = i == 0;
        println!(
            "  {label:<36} {:>14} {:>14} {:>14}",
            cell(a, kwh),
            cell(b, kwh),
            cell(a.zip(b).map(|(a, b)| b - a), kwh)
        );
    }
    println!(
        "  hours priced: {} ({} with every input; an unknown amount means a price, tariff, profile or rate was missing)",
        actual.hours, actual.complete_hours
    );
    if simulated.complete_hours != actual.complete_hours {
        println!(
            "  simulated hours with every input: {} (the other tariff or scheme lacks a price or rate on some days)",
            simulated.complete_hours
        );
    }
    Ok(())
}
