//! Exchange rates: what an EUR price is in NOK when its record does not say.
//!
//! ENTSO-E publishes day-ahead prices in EUR/MWh. A `price/v1` record may carry the
//! rate it was converted with (`exchange_rate`, as the JSON price feeds do); one without
//! it is converted with the `exchange_rates` table, which `meterline import
//! exchange-rates` fills from Norges Bank's daily rates. Norges Bank publishes them on
//! business days (about 14:15 Oslo time) as semicolon-separated CSV from its data
//! warehouse (`https://data.norges-bank.no/api/data/EXR/B.EUR.NOK.SP?format=csv`):
//!
//! ```text
//! FREQ;Frequency;BASE_CUR;Base Currency;QUOTE_CUR;Quote Currency;TENOR;Tenor;DECIMALS;Decimals;CALCULATED;Calculated;UNIT_MULT;Unit Multiplier;COLLECTION;Collection Indicator;TIME_PERIOD;OBS_VALUE
//! B;Business;EUR;Euro;NOK;Norwegian krone;SP;Spot;4;Four;false;False;0;Units;C;ECB concertation time 14:15 CET;2026-10-23;11.7025
//! ```
//!
//! Columns are found by their codes (`BASE_CUR`, `QUOTE_CUR`, `TIME_PERIOD`, `OBS_VALUE`
//! and, optional, `UNIT_MULT`), so the file may hold labels or not, either locale's
//! decimal separator (`locale=no` writes `11,7025`) and a byte order mark. A rate is NOK
//! per `10^UNIT_MULT` units of the base currency (the yen is quoted per 100); rows quoted
//! in another currency than NOK are skipped. Fields are not quoted with separators inside
//! them in these files, and are not read as if they could be.
//!
//! **Which day's rate.** The day-ahead auction for a delivery day D closes at noon on D-1,
//! so D's prices are converted with the latest rate published before D (D-1's, or that
//! of the last business day before it), at most [`MAX_AGE_DAYS`] days old. Without one,
//! the price stays unconverted and its hours incomplete: never priced at a stale rate.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;

/// How old (in days before the delivery day) a rate may be and still convert its prices.
/// A week covers Easter (Norges Bank publishes nothing from Maundy Thursday to Easter
/// Monday) and any weekend.
pub const MAX_AGE_DAYS: i64 = 7;

/// One published rate: NOK per one unit of `currency` on `date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRate {
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    pub date: NaiveDate,
    pub nok_per_unit: Decimal,
}

/// Why an exchange rate file was not read. Rates are about no one, so the errors quote
/// what they found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("not a Norges Bank exchange rate file: its header has no `{0}` column")]
    MissingColumn(&'static str),
    #[error("line {line}: {what}")]
    Invalid { line: usize, what: String },
    #[error("no daily rates quoted in NOK in the file")]
    Empty,
}

/// Rates by currency and date, to convert prices with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeRates {
    by_day: BTreeMap<(String, NaiveDate), Decimal>,
}

impl ExchangeRates {
    /// The rates of `rates`; of two for the same currency and date, the later one wins.
    #[must_use]
    pub fn new(rates: impl IntoIterator<Item = ExchangeRate>) -> Self {
        let mut out = Self::default();
        for r in rates {
            out.by_day.insert((r.currency, r.date), r.nok_per_unit);
        }
        out
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_day.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_day.len()
    }

    /// The rate that converts `currency` prices of delivery day `day`: the latest one
    /// dated before it and at most [`MAX_AGE_DAYS`] days older, with its date.
    #[must_use]
    pub fn for_delivery(&self, currency: &str, day: NaiveDate) -> Option<(NaiveDate, Decimal)> {
        let oldest = day - Duration::days(MAX_AGE_DAYS);
        self.by_day
            .range((currency.to_owned(), oldest)..(currency.to_owned(), day))
            .next_back()
            .map(|((_, date), rate)| (*date, *rate))
    }
}

/// The codes of the columns read, found in the header.
struct Columns {
    base: usize,
    quote: usize,
    period: usize,
    value: usize,
    unit_mult: Option<usize>,
    count: usize,
}

impl Columns {
    fn find(names: &[&str]) -> Result<Self, ExchangeError> {
        let find = |code: &'static str| {
            names
                .iter()
                .position(|n| *n == code)
                .ok_or(ExchangeError::MissingColumn(code))
        };
        Ok(Self {
            base: find("BASE_CUR")?,
            quote: find("QUOTE_CUR")?,
            period: find("TIME_PERIOD")?,
            value: find("OBS_VALUE")?,
            unit_mult: find("UNIT_MULT").ok(),
            count: names.len(),
        })
    }
}

fn cells(line: &str, separator: char) -> Vec<&str> {
    line.split(separator)
        .map(|c| c.trim().trim_matches('"'))
        .collect()
}

/// Parse a Norges Bank exchange rate CSV file (see the module documentation).
///
/// # Errors
/// A header without the columns read; a row with fewer cells than the header, a date
/// that is not a day (`2026-10`: monthly or yearly rates), a value that is not a
/// positive number, a currency that is not three capital letters, a `UNIT_MULT` outside
/// 0..=6; no row quoted in NOK.
pub fn parse_norges_bank_csv(text: &str) -> Result<Vec<ExchangeRate>, ExchangeError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ExchangeError::MissingColumn("TIME_PERIOD"));
    };
    let separator = if header.contains(';') { ';' } else { ',' };
    let columns = Columns::find(&cells(header, separator))?;
    let mut out = Vec::new();
    for (index, line) in lines {
        let row = cells(line, separator);
        let invalid = |what: String| ExchangeError::Invalid {
            line: index + 1,
            what,
        };
        if row.len() < columns.count {
            return Err(invalid(format!(
                "{} cells where the header has {}",
                row.len(),
                columns.count
            )));
        }
        if row[columns.quote] != "NOK" {
            continue;
        }
        let currency = row[columns.base];
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(format!("`{currency}` is not a currency code")));
        }
        let period = row[columns.period];
        let date = NaiveDate::parse_from_str(period, "%Y-%m-%d")
            .map_err(|_| invalid(format!("`{period}` is not a day (daily rates only)")))?;
        let text = row[columns.value];
        let normalized = if separator == ';' {
            text.replace(',', ".")
        } else {
            text.to_owned()
        };
        let mut value = Decimal::from_str_exact(&normalized)
            .ok()
            .filter(|v| v.is_sign_positive() && !v.is_zero())
            .ok_or_else(|| invalid(format!("`{text}` is not a positive rate")))?;
        let mult = match columns.unit_mult.map(|k| row[k]) {
            None | Some("") => 0,
            Some(m) => m
                .parse::<u32>()
                .ok()
                .filter(|m| *m <= 6)
                .ok_or_else(|| invalid(format!("UNIT_MULT `{m}` is not 0..=6")))?,
        };
        // NOK per 10^mult units: the same digits, `mult` more decimals.
        value
            .set_scale(value.scale() + mult)
            .map_err(|_| invalid(format!("`{text}` has too many decimals")))?;
        out.push(ExchangeRate {
            currency: currency.to_owned(),
            date,
            nok_per_unit: value,
        });
    }
    if out.is_empty() {
        return Err(ExchangeError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    /// A labelled English-locale file: EUR and JPY (per 100 yen) over a weekend.
    const LABELLED: &str = "\u{feff}FREQ;Frequency;BASE_CUR;Base Currency;QUOTE_CUR;Quote Currency;TENOR;Tenor;DECIMALS;Decimals;CALCULATED;Calculated;UNIT_MULT;Unit Multiplier;COLLECTION;Collection Indicator;TIME_PERIOD;OBS_VALUE
B;Business;EUR;Euro;NOK;Norwegian krone;SP;Spot;4;Four;false;False;0;Units;C;ECB concertation time 14:15 CET;2026-10-22;11.6890
B;Business;EUR;Euro;NOK;Norwegian krone;SP;Spot;4;Four;false;False;0;Units;C;ECB concertation time 14:15 CET;2026-10-23;11.7025
B;Business;JPY;Japanese yen;NOK;Norwegian krone;SP;Spot;4;Four;false;False;2;Hundreds;C;ECB concertation time 14:15 CET;2026-10-23;7.1534
";

    #[test]
    fn a_labelled_file_gives_nok_per_unit_with_the_unit_multiplier_applied() {
        let rates = parse_norges_bank_csv(LABELLED).unwrap();
        assert_eq!(
            rates,
            vec![
                ExchangeRate {
                    currency: "EUR".into(),
                    date: day("2026-10-22"),
                    nok_per_unit: dec("11.6890"),
                },
                ExchangeRate {
                    currency: "EUR".into(),
                    date: day("2026-10-23"),
                    nok_per_unit: dec("11.7025"),
                },
                ExchangeRate {
                    currency: "JPY".into(),
                    date: day("2026-10-23"),
                    // 7.1534 NOK per 100 yen.
                    nok_per_unit: dec("0.071534"),
                },
            ]
        );
    }

    #[test]
    fn the_norwegian_locale_with_decimal_commas_and_no_labels_reads_the_same() {
        let text = "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\r\nEUR;NOK;2026-10-23;11,7025\r\n\r\n";
        let rates = parse_norges_bank_csv(text).unwrap();
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].nok_per_unit, dec("11.7025"));
        assert_eq!(rates[0].date, day("2026-10-23"));
    }

    #[test]
    fn files_that_are_not_daily_nok_rates_are_refused_with_the_line() {
        let cases = [
            ("", "TIME_PERIOD"),
            ("a;b;c\n1;2;3\n", "BASE_CUR"),
            (
                "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nEUR;NOK;2026-10;11.7\n",
                "line 2: `2026-10` is not a day",
            ),
            (
                "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nEUR;NOK;2026-10-23;-1\n",
                "line 2: `-1` is not a positive rate",
            ),
            (
                "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nEUR;NOK;2026-10-23;NaN\n",
                "`NaN` is not a positive rate",
            ),
            (
                "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nEUR;NOK;2026-10-23\n",
                "line 2: 3 cells where the header has 4",
            ),
            (
                "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\neur;NOK;2026-10-23;11.7\n",
                "`eur` is not a currency code",
            ),
            (
                "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nNOK;EUR;2026-10-23;0.085\n",
                "no daily rates quoted in NOK",
            ),
        ];
        for (text, expected) in cases {
            let e = parse_norges_bank_csv(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_delivery_day_takes_the_latest_rate_before_it_never_a_stale_one() {
        let rates = ExchangeRates::new([
            ExchangeRate {
                currency: "EUR".into(),
                date: day("2026-10-22"),
                nok_per_unit: dec("11.6890"),
            },
            ExchangeRate {
                currency: "EUR".into(),
                // Friday.
                date: day("2026-10-23"),
                nok_per_unit: dec("11.7025"),
            },
            ExchangeRate {
                currency: "EUR".into(),
                // Published again (a correction): the later wins.
                date: day("2026-10-23"),
                nok_per_unit: dec("11.7030"),
            },
        ]);
        assert_eq!(rates.len(), 2);
        // Saturday's prices were auctioned on Friday; Sunday and Monday take Friday's
        // too (no rate on the weekend).
        for delivery in ["2026-10-24", "2026-10-25", "2026-10-26"] {
            assert_eq!(
                rates.for_delivery("EUR", day(delivery)),
                Some((day("2026-10-23"), dec("11.7030"))),
                "{delivery}"
            );
        }
        // Friday's own prices were auctioned on Thursday.
        assert_eq!(
            rates.for_delivery("EUR", day("2026-10-23")),
            Some((day("2026-10-22"), dec("11.6890")))
        );
        // Seven days after the last rate, still; eight, no longer.
        assert!(rates.for_delivery("EUR", day("2026-10-30")).is_some());
        assert_eq!(rates.for_delivery("EUR", day("2026-10-31")), None);
        // Nothing before the first rate, nothing in another currency.
        assert_eq!(rates.for_delivery("EUR", day("2026-10-22")), None);
        assert_eq!(rates.for_delivery("SEK", day("2026-10-24")), None);
    }
}
