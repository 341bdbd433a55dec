//! `validate`: the meter-data rules (VEE's validation half), per tenant.
//!
//! Runs on decoded batches (identifiers still raw, so GSRNs can be checked). Each
//! row passes, passes with flags, or is rejected with a stable reason:
//!
//! | rule | outcome |
//! |---|---|
//! | `meter_id` is 18 digits with a valid GS1 check digit | `invalid_gsrn` |
//! | `meter_id` starts with an allowed prefix (`gsrn_prefixes`, if set) | `gsrn_prefix` |
//! | `start` on the resolution grid in UTC terms | `misaligned_interval` |
//! | interval end <= now + `max_future_skew_secs` | `future_interval` |
//! | interval start >= now - `max_age_days` | `too_old` |
//! | unit allowed for the quantity; `Wh` converted if `convert_wh` | `unit_not_allowed`, flag `unit_converted` |
//! | value <= physical maximum per interval | `value_too_high` |
//! | highest interval of the meter's day <= `spike_factor` x third-highest | flag `spike` |
//! | one resolution per meter and local day | flag `resolution_mix` |
//!
//! Syntax, types, timestamps with offsets, negative values, quality codes, sizes,
//! encodings and sensitive data are checked earlier, in `decode`, where the raw
//! payload is. Rows are processed column-wise over Arrow arrays; the per-row work is
//! integer comparisons, plus the GSRN checksum when a meter id is present.
//!
//! The spike rule compares intervals of the same meter and local day *within one
//! batch* (Elhub delivers a day's series together); the resolution rule remembers the
//! resolution per meter and day across batches (at most [`MAX_REMEMBERED_DAYS`]
//! meter-days of 16 bytes each, cleared when full; forgotten on restart).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    Date32Type, Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt32Type,
};

use crate::dead_letter::{DeadLetter, Reason};
use crate::decimal;
use crate::flags;
use crate::ids::{check_gsrn, GsrnError};
use crate::operator::{Operator, OperatorContext, OperatorError, OperatorOutput};
use crate::schema::{col, DECODED};
use crate::tenant::{Rules, TenantRegistry};
use crate::FastMap;

/// Meter-days whose resolution is remembered; the memory is cleared when full. Its
/// keys are 16-byte digests, so this is about 32 MB however long the identifiers.
pub const MAX_REMEMBERED_DAYS: usize = 1_000_000;

/// The validate operator.
#[derive(Debug, Clone)]
pub struct Validate {
    tenants: TenantRegistry,
    /// [`day_key`] of (tenant, meter, quantity, direction, local date) -> resolution
    /// in minutes. Keyed by message content: at most `max_days` entries.
    day_resolution: FastMap<[u8; 16], i32>,
    max_days: usize,
}

impl Validate {
    pub fn new(tenants: TenantRegistry) -> Self {
        Self {
            tenants,
            day_resolution: FastMap::default(),
            max_days: MAX_REMEMBERED_DAYS,
        }
    }

    /// Meter-days whose resolution is remembered now (never more than
    /// [`MAX_REMEMBERED_DAYS`]).
    pub fn remembered_days(&self) -> usize {
        self.day_resolution.len()
    }

    /// A smaller memory, so tests reach the bound quickly.
    #[cfg(test)]
    fn with_max_remembered_days(mut self, max_days: usize) -> Self {
        self.max_days = max_days;
        self
    }
}

fn schema_error(column: &'static str) -> OperatorError {
    OperatorError::Schema {
        operator: "validate",
        column,
    }
}

/// Thousandths of Wh to thousandths of kWh, rounding half to even.
fn wh_to_kwh(v: i128) -> i128 {
    let q = v.div_euclid(1000);
    let r = v.rem_euclid(1000);
    match r.cmp(&500) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// Units allowed per quantity (after `Wh` conversion).
fn unit_allowed(quantity: &str, unit: &str) -> bool {
    match quantity {
        "gas" | "water" => unit == "kWh" || unit == "m3",
        _ => unit == "kWh",
    }
}

/// The resolution memory's key for a meter-day: a 16-byte digest of the parts, each
/// followed by NUL (which identifiers cannot contain), then the date. Fixed-size, so
/// long identifiers do not make the memory larger.
fn day_key(parts: [&str; 4], date: i32) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(&date.to_le_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    key
}

struct Rejection {
    reason: Reason,
    detail: &'static str,
}

fn rejection(reason: Reason, detail: &'static str) -> Rejection {
    Rejection { reason, detail }
}

impl Operator for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
    ) -> Result<OperatorOutput, OperatorError> {
        if batch.schema().fields() != DECODED.fields() {
            return Err(schema_error("tenant"));
        }
        let rows = batch.num_rows();
        let s = |i: usize, name: &'static str| {
            batch
                .column(i)
                .as_string_opt::<i32>()
                .ok_or(schema_error(name))
        };
        let tenant = s(col::TENANT, "tenant")?;
        let device_id = s(col::DEVICE_ID, "device_id")?;
        let meter_id = s(col::METER_ID, "meter_id")?;
        let quantity = s(col::QUANTITY, "quantity")?;
        let direction = s(col::DIRECTION, "direction")?;
        let unit = s(col::UNIT, "unit")?;
        let start = batch
            .column(col::INTERVAL_START)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or(schema_error("interval_start"))?;
        let resolution = batch
            .column(col::RESOLUTION)
            .as_primitive_opt::<Int32Type>()
            .ok_or(schema_error("resolution_minutes"))?;
        let local_date = batch
            .column(col::LOCAL_DATE)
            .as_primitive_opt::<Date32Type>()
            .ok_or(schema_error("local_date"))?;
        let value = batch
            .column(col::VALUE)
            .as_primitive_opt::<Decimal128Type>()
            .ok_or(schema_error("value"))?;
        let partition = batch
            .column(col::SOURCE_PARTITION)
            .as_primitive_opt::<Int32Type>()
            .ok_or(schema_error("source_partition"))?;
        let offset = batch
            .column(col::SOURCE_OFFSET)
            .as_primitive_opt::<Int64Type>()
            .ok_or(schema_error("source_offset"))?;
        let flag_in = batch
            .column(col::FLAGS)
            .as_primitive_opt::<UInt32Type>()
            .ok_or(schema_error("flags"))?;

        let mut keep = vec![true; rows];
        let mut values: Vec<i128> = value.values().to_vec();
        let mut units: Vec<&str> = Vec::with_capacity(rows);
        let mut row_flags: Vec<u32> = flag_in.values().to_vec();
        let mut rejected = Vec::new();
        // The tenants of this batch (few), found by a short scan instead of a
        // registry lookup per row.
        let mut seen: Vec<(&str, &Rules)> = Vec::new();
        let default_rules = Rules::default();

        for row in 0..rows {
            let t = tenant.value(row);
            let rules = match seen.iter().find(|(id, _)| *id == t) {
                Some((_, r)) => *r,
                None => {
                    let r = self.tenants.by_id(t).map_or(&default_rules, |x| &x.rules);
                    seen.push((t, r));
                    r
                }
            };
            let mut u = unit.value(row);
            // A replayed public dead letter carries a pseudonym, not the GSRN (which
            // is why identity rules cannot apply to it).
            let pseudonymized = flag_in.value(row) & flags::REPLAYED != 0;
            let outcome = (|| {
                if meter_id.is_valid(row) && !pseudonymized {
                    let m = meter_id.value(row);
                    match check_gsrn(m) {
                        Ok(()) => {}
                        Err(GsrnError::Shape) => {
                            return Err(rejection(
                                Reason::InvalidGsrn,
                                "field `meter_id`: a GSRN is exactly 18 digits",
                            ))
                        }
                        Err(GsrnError::CheckDigit) => {
                            return Err(rejection(
                                Reason::InvalidGsrn,
                                "field `meter_id`: the GS1 check digit does not match",
                            ))
                        }
                    }
                    if !rules.gsrn_prefixes.is_empty()
                        && !rules
                            .gsrn_prefixes
                            .iter()
                            .any(|p| m.starts_with(p.as_str()))
                    {
                        return Err(rejection(
                            Reason::GsrnPrefix,
                            "field `meter_id`: prefix not allowed for this tenant (validation.gsrn_prefixes)",
                        ));
                    }
                }
                let res = i64::from(resolution.value(row));
                let step = res * 60 * 1_000_000;
                let s = start.value(row);
                if s.rem_euclid(step) != 0 {
                    return Err(rejection(
                        Reason::MisalignedInterval,
                        if res == 15 {
                            "field `start`: PT15M intervals start at minute 00, 15, 30 or 45 (UTC terms)"
                        } else {
                            "field `start`: PT1H intervals start at minute 00 (UTC terms)"
                        },
                    ));
                }
                if s + step > ctx.now_micros.saturating_add(rules.future_skew_micros) {
                    return Err(rejection(
                        Reason::FutureInterval,
                        "field `start`: the interval ends in the future (validation.max_future_skew_secs)",
                    ));
                }
                if s < ctx.now_micros.saturating_sub(rules.max_age_micros) {
                    return Err(rejection(
                        Reason::TooOld,
                        "field `start`: older than the tenant's horizon (validation.max_age_days)",
                    ));
                }
                if u == "Wh" {
                    if !rules.convert_wh {
                        return Err(rejection(
                            Reason::UnitNotAllowed,
                            "field `unit`: Wh is accepted only where the tenant sets validation.convert_wh",
                        ));
                    }
                    values[row] = wh_to_kwh(values[row]);
                    u = "kWh";
                    row_flags[row] |= flags::UNIT_CONVERTED;
                }
                if !unit_allowed(quantity.value(row), u) {
                    return Err(rejection(
                        Reason::UnitNotAllowed,
                        "field `unit`: electricity, district heating and cooling are in kWh; gas and water in m3 or kWh",
                    ));
                }
                let per_hour = if u == "kWh" {
                    rules.max_kwh_per_hour
                } else {
                    rules.max_m3_per_hour
                };
                if values[row] * 60 > per_hour * i128::from(res) {
                    return Err(rejection(
                        Reason::ValueTooHigh,
                        "field `value`: above the physical maximum for one interval (validation.max_kwh_per_hour / max_m3_per_hour)",
                    ));
                }
                Ok(())
            })();
            units.push(u);
            if let Err(r) = outcome {
                keep[row] = false;
                rejected.push(DeadLetter {
                    partition: partition.value(row),
                    offset: offset.value(row),
                    reason: r.reason,
                    detail: r.detail.to_owned(),
                    tenant: Some(t.to_owned()),
                    payload: None,
                    payload_bytes: 0,
                });
            }
        }

        // Per meter and local day: spikes (within the batch) and resolution changes.
        let meter_key = |row: usize| {
            if meter_id.is_valid(row) {
                meter_id.value(row)
            } else {
                device_id.value(row)
            }
        };
        type DayKey<'a> = (&'a str, &'a str, &'a str, &'a str, i32);
        let mut days: FastMap<DayKey<'_>, Vec<usize>> = FastMap::default();
        for row in (0..rows).filter(|r| keep[*r]) {
            let key = (
                tenant.value(row),
                meter_key(row),
                quantity.value(row),
                direction.value(row),
                local_date.value(row),
            );
            days.entry(key).or_default().push(row);
        }
        for ((t, m, q, d, date), members) in &days {
            if members.len() >= 3 {
                let mut sorted: Vec<(i128, usize)> =
                    members.iter().map(|r| (values[*r], *r)).collect();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let (top, top_row) = sorted[0];
                let third = sorted[2].0;
                let factor = self
                    .tenants
                    .by_id(t)
                    .map_or(default_rules.spike_factor, |x| x.rules.spike_factor);
                if top > 0 && top * 1000 > factor * third {
                    row_flags[top_row] |= flags::SPIKE;
                }
            }
            // The resolution seen first (earlier batch or first row) is the day's.
            let key = day_key([t, m, q, d], *date);
            let seen = match self.day_resolution.get(&key) {
                Some(r) => *r,
                None => {
                    if self.day_resolution.len() >= self.max_days {
                        self.day_resolution.clear();
                    }
                    let r = resolution.value(members[0]);
                    self.day_resolution.insert(key, r);
                    r
                }
            };
            for r in members {
                if resolution.value(*r) != seen {
                    row_flags[*r] |= flags::RESOLUTION_MIX;
                }
            }
        }

        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[col::VALUE] = Arc::new(
            Decimal128Array::from(values)
                .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
                .map_err(|source| OperatorError::Arrow {
                    operator: "validate",
                    source,
                })?,
        );
        columns[col::UNIT] = Arc::new(StringArray::from(units));
        columns[col::FLAGS] = Arc::new(UInt32Array::from(row_flags));
        let arrow_err = |source| OperatorError::Arrow {
            operator: "validate",
            source,
        };
        let full = RecordBatch::try_new(DECODED.clone(), columns).map_err(arrow_err)?;
        let accepted = if rejected.is_empty() {
            full
        } else {
            filter_record_batch(&full, &BooleanArray::from(keep)).map_err(arrow_err)?
        };
        Ok(OperatorOutput { accepted, rejected })
    }
}

#[cfg(test)]
mod tests;
