//! The rates the state sets, by date and zone: consumption tax (elavgift), the Enova fee, VAT,
//! strømstøtte and Norgespris.
//!
//! A [`RateTable`] is a list of [`RateRow`]s: a rate, the zone it applies to (or every zone),
//! the first day it applies and the first day it no longer does. The rate on a day is the row
//! with the latest start on or before that day whose end is after it, preferring a row for the
//! zone over a row for every zone; a later row therefore replaces an earlier one from its start
//! (how the state changes a rate mid-year). [`RateTable::defaults`] holds the rates of
//! 2024-2026; a tenant adds rows by config or import.
//!
//! All amounts exclude VAT. The day is the local (Europe/Oslo) date of the hour being priced.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;

/// Where a household's meter is, for the taxes that differ by place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaxZone {
    /// Most of Norway: consumption tax and VAT.
    Standard,
    /// Households in Nordland, Troms and Finnmark: no VAT on electricity.
    North,
    /// Households in Finnmark and the seven Nord-Troms municipalities (Karlsøy, Kvænangen,
    /// Kåfjord, Lyngen, Nordreisa, Skjervøy, Storfjord): no VAT and no consumption tax.
    Finnmark,
}

impl TaxZone {
    pub const ALL: [Self; 3] = [Self::Standard, Self::North, Self::Finnmark];

    /// `standard`, `north`, `finnmark`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::North => "north",
            Self::Finnmark => "finnmark",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|z| z.name() == text)
    }
}

/// A rate the state sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rate {
    /// Forbruksavgift (elavgift), øre/kWh.
    ConsumptionTax,
    /// Enova fee for households, øre/kWh.
    Enova,
    /// VAT, as a share (0.25 for 25 %).
    Vat,
    /// Strømstøtte: the hourly spot above this threshold is supported, øre/kWh.
    SupportThreshold,
    /// Strømstøtte: the share of the excess the state pays (0.9).
    SupportShare,
    /// Norgespris: the fixed price a metering point on the scheme pays, øre/kWh.
    Norgespris,
}

impl Rate {
    pub const ALL: [Self; 6] = [
        Self::ConsumptionTax,
        Self::Enova,
        Self::Vat,
        Self::SupportThreshold,
        Self::SupportShare,
        Self::Norgespris,
    ];

    /// The rate's name in `tax_rates` and in config.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ConsumptionTax => "consumption_tax",
            Self::Enova => "enova",
            Self::Vat => "vat",
            Self::SupportThreshold => "support_threshold",
            Self::SupportShare => "support_share",
            Self::Norgespris => "norgespris",
        }
    }

    /// The unit of its values.
    #[must_use]
    pub fn unit(self) -> &'static str {
        match self {
            Self::Vat | Self::SupportShare => "share",
            _ => "ore_per_kwh",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == text)
    }
}

/// One dated value of a rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    pub rate: Rate,
    /// `None`: every zone.
    pub zone: Option<TaxZone>,
    /// The first day it applies.
    pub valid_from: NaiveDate,
    /// The first day it no longer applies; `None`: until replaced.
    pub valid_to: Option<NaiveDate>,
    pub value: Decimal,
    /// Where the value comes from (a law, a config file, an import).
    pub source: String,
}

impl RateRow {
    fn covers(&self, rate: Rate, zone: TaxZone, day: NaiveDate) -> bool {
        self.rate == rate
            && self.zone.is_none_or(|z| z == zone)
            && self.valid_from <= day
            && self.valid_to.is_none_or(|to| day < to)
    }
}

/// Dated rates; see the module documentation for which row applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateTable {
    rows: Vec<RateRow>,
}

/// The value of every rate on one day in one zone; `None` where no row covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatesOnDay {
    pub consumption_tax_ore: Option<Decimal>,
    pub enova_ore: Option<Decimal>,
    pub vat_share: Option<Decimal>,
    pub support_threshold_ore: Option<Decimal>,
    pub support_share: Option<Decimal>,
    /// `None` outside the scheme's period.
    pub norgespris_ore: Option<Decimal>,
}

impl RateTable {
    #[must_use]
    pub fn new(rows: Vec<RateRow>) -> Self {
        Self { rows }
    }

    /// The rates of 2024-2026 as enacted (sources in each row). Consumption tax: 9.51 / 16.44
    /// øre (2024, January-March / April-December), 9.79 / 16.93 / 12.53 (2025, from January /
    /// April / October), 7.13 (2026); 0 in the Finnmark zone. Enova 1.0 øre. VAT 25 %, 0 in
    /// the north. Strømstøtte 90 % above 73 / 75 / 77 øre. Norgespris 40 øre from 1 October
    /// 2025 to 31 December 2026.
    ///
    /// # Panics
    /// Never: the literals are valid.
    #[must_use]
    pub fn defaults() -> Self {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a valid date");
        let dec = |s: &str| s.parse::<Decimal>().expect("a decimal literal");
        let row = |rate, zone, from, to, value: &str, source: &str| RateRow {
            rate,
            zone,
            valid_from: from,
            valid_to: to,
            value: dec(value),
            source: source.to_owned(),
        };
        let mut rows = Vec::new();
        // Seasonal until 2025; cut from 1 October 2025 (revised budget), flat in 2026.
        for (from, to, tax) in [
            (day(2024, 1, 1), day(2024, 4, 1), "9.51"),
            (day(2024, 4, 1), day(2025, 1, 1), "16.44"),
            (day(2025, 1, 1), day(2025, 4, 1), "9.79"),
            (day(2025, 4, 1), day(2025, 10, 1), "16.93"),
            (day(2025, 10, 1), day(2026, 1, 1), "12.53"),
            (day(2026, 1, 1), day(2027, 1, 1), "7.13"),
        ] {
            let to = Some(to);
            let law = format!(
                "Stortingets vedtak om forbruksavgift på elektrisk kraft {}",
                from.year()
            );
            rows.push(row(Rate::ConsumptionTax, None, from, to, tax, &law));
            rows.push(row(
                Rate::ConsumptionTax,
                Some(TaxZone::Finnmark),
                from,
                to,
                "0",
                &law,
            ));
        }
        for (year, threshold) in [(2024, "73"), (2025, "75"), (2026, "77")] {
            let (from, to) = (day(year, 1, 1), Some(day(year + 1, 1, 1)));
            let law = format!("forskrift om strømstønad {year}");
            rows.push(row(Rate::SupportThreshold, None, from, to, threshold, &law));
            rows.push(row(Rate::SupportShare, None, from, to, "0.9", &law));
        }
        let (from, to) = (day(2024, 1, 1), None);
        rows.push(row(
            Rate::Enova,
            None,
            from,
            to,
            "1.0",
            "Enova-avgift, husholdninger",
        ));
        rows.push(row(
            Rate::Vat,
            None,
            from,
            to,
            "0.25",
            "merverdiavgiftsloven § 5-1",
        ));
        for zone in [TaxZone::North, TaxZone::Finnmark] {
            rows.push(row(
                Rate::Vat,
                Some(zone),
                from,
                to,
                "0",
                "merverdiavgiftsloven § 6-6 (Nord-Norge)",
            ));
        }
        rows.push(row(
            Rate::Norgespris,
            None,
            day(2025, 10, 1),
            Some(day(2027, 1, 1)),
            "40",
            "forskrift om norgespris",
        ));
        Self { rows }
    }

    /// Add `rows` after the present ones (they win over rows of the same start).
    pub fn extend(&mut self, rows: impl IntoIterator<Item = RateRow>) {
        self.rows.extend(rows);
    }

    /// A name for the table's content (32 hex digits of its BLAKE3 hash): equal for equal
    /// rows, different when any rate, date or source changes. Stored with what was computed
    /// from the rates, so a change of rates is noticed.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let hash = blake3::hash(format!("{:?}", self.rows).as_bytes()).to_hex();
        hash[..32].to_owned()
    }

    /// Every row, in the order given.
    #[must_use]
    pub fn rows(&self) -> &[RateRow] {
        &self.rows
    }

    /// The value of `rate` in `zone` on `day`: among the rows that cover the day, a zone's
    /// own row before an every-zone row, then the latest start, then the last given.
    #[must_use]
    pub fn value(&self, rate: Rate, zone: TaxZone, day: NaiveDate) -> Option<Decimal> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.covers(rate, zone, day))
            .max_by_key(|(i, r)| (r.zone.is_some(), r.valid_from, *i))
            .map(|(_, r)| r.value)
    }

    /// Every rate on `day` in `zone`.
    #[must_use]
    pub fn on(&self, zone: TaxZone, day: NaiveDate) -> RatesOnDay {
        let v = |rate| self.value(rate, zone, day);
        RatesOnDay {
            consumption_tax_ore: v(Rate::ConsumptionTax),
            enova_ore: v(Rate::Enova),
            vat_share: v(Rate::Vat),
            support_threshold_ore: v(Rate::SupportThreshold),
            support_share: v(Rate::SupportShare),
            norgespris_ore: v(Rate::Norgespris),
        }
    }
}
