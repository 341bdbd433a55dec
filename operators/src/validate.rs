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
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, PrimitiveArray, RecordBatch,
    StringArray, UInt32Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    ArrowPrimitiveType, Date32Type, Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType,
    UInt32Type,
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
        "reactive_energy" => unit == "kvarh",
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
        let c = Columns::of(&batch)?;
        let rows = batch.num_rows();
        let mut keep = vec![true; rows];
        let mut values: Vec<i128> = c.value.values().to_vec();
        let mut units: Vec<&str> = Vec::with_capacity(rows);
        let mut row_flags: Vec<u32> = c.flags.values().to_vec();
        let mut rejected = Vec::new();
        // The tenants of this batch (few), found by a short scan instead of a
        // registry lookup per row.
        let mut seen: Vec<(&str, &Rules)> = Vec::new();
        let default_rules = Rules::default();

        for row in 0..rows {
            let t = c.tenant.value(row);
            let rules = match seen.iter().find(|(id, _)| *id == t) {
                Some((_, r)) => *r,
                None => {
                    let r = self.tenants.by_id(t).map_or(&default_rules, |x| &x.rules);
                    seen.push((t, r));
                    r
                }
            };
            let mut unit = c.unit.value(row);
            let outcome = check_identity(&c, row, rules)
                .and_then(|()| check_interval(&c, row, rules, ctx.now_micros))
                .and_then(|()| {
                    check_quantity(
                        &c,
                        row,
                        rules,
                        &mut unit,
                        &mut values[row],
                        &mut row_flags[row],
                    )
                });
            units.push(unit);
            if let Err(r) = outcome {
                keep[row] = false;
                rejected.push(DeadLetter {
                    partition: c.partition.value(row),
                    offset: c.offset.value(row),
                    reason: r.reason,
                    detail: r.detail.to_owned(),
                    tenant: Some(t.to_owned()),
                    payload: None,
                    payload_bytes: 0,
                });
            }
        }
        self.flag_meter_days(&c, &keep, &values, &mut row_flags);
        let accepted = assemble(&batch, values, units, row_flags, keep, rejected.is_empty())?;
        Ok(OperatorOutput { accepted, rejected })
    }
}

impl Validate {
    /// Per meter and local day (within the batch): flag the day's largest value as
    /// a spike when it exceeds the tenant's factor times the third largest, and
    /// the rows whose resolution differs from the one the day was first seen with
    /// (in an earlier batch, or its first row here).
    fn flag_meter_days(
        &mut self,
        c: &Columns<'_>,
        keep: &[bool],
        values: &[i128],
        row_flags: &mut [u32],
    ) {
        type DayKey<'a> = (&'a str, &'a str, &'a str, &'a str, i32);
        let default_spike = Rules::default().spike_factor;
        let mut days: FastMap<DayKey<'_>, Vec<usize>> = FastMap::default();
        for row in (0..keep.len()).filter(|r| keep[*r]) {
            let key = (
                c.tenant.value(row),
                c.meter(row),
                c.quantity.value(row),
                c.direction.value(row),
                c.local_date.value(row),
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
                    .map_or(default_spike, |x| x.rules.spike_factor);
                if top > 0 && top * 1000 > factor * third {
                    row_flags[top_row] |= flags::SPIKE;
                }
            }
            let key = day_key([t, m, q, d], *date);
            let seen = match self.day_resolution.get(&key) {
                Some(r) => *r,
                None => {
                    if self.day_resolution.len() >= self.max_days {
                        self.day_resolution.clear();
                    }
                    let r = c.resolution.value(members[0]);
                    self.day_resolution.insert(key, r);
                    r
                }
            };
            for r in members {
                if c.resolution.value(*r) != seen {
                    row_flags[*r] |= flags::RESOLUTION_MIX;
                }
            }
        }
    }
}

/// The decoded batch's columns, typed (a batch of another shape is a schema error).
struct Columns<'a> {
    tenant: &'a StringArray,
    device_id: &'a StringArray,
    meter_id: &'a StringArray,
    quantity: &'a StringArray,
    direction: &'a StringArray,
    unit: &'a StringArray,
    start: &'a PrimitiveArray<TimestampMicrosecondType>,
    resolution: &'a PrimitiveArray<Int32Type>,
    local_date: &'a PrimitiveArray<Date32Type>,
    value: &'a PrimitiveArray<Decimal128Type>,
    partition: &'a PrimitiveArray<Int32Type>,
    offset: &'a PrimitiveArray<Int64Type>,
    flags: &'a PrimitiveArray<UInt32Type>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, OperatorError> {
        if batch.schema().fields() != DECODED.fields() {
            return Err(schema_error("tenant"));
        }
        Ok(Self {
            tenant: string(batch, col::TENANT, "tenant")?,
            device_id: string(batch, col::DEVICE_ID, "device_id")?,
            meter_id: string(batch, col::METER_ID, "meter_id")?,
            quantity: string(batch, col::QUANTITY, "quantity")?,
            direction: string(batch, col::DIRECTION, "direction")?,
            unit: string(batch, col::UNIT, "unit")?,
            start: primitive(batch, col::INTERVAL_START, "interval_start")?,
            resolution: primitive(batch, col::RESOLUTION, "resolution_minutes")?,
            local_date: primitive(batch, col::LOCAL_DATE, "local_date")?,
            value: primitive(batch, col::VALUE, "value")?,
            partition: primitive(batch, col::SOURCE_PARTITION, "source_partition")?,
            offset: primitive(batch, col::SOURCE_OFFSET, "source_offset")?,
            flags: primitive(batch, col::FLAGS, "flags")?,
        })
    }

    /// The meter of a row: its meter id, or its device id when it has none.
    fn meter(&self, row: usize) -> &'a str {
        if self.meter_id.is_valid(row) {
            self.meter_id.value(row)
        } else {
            self.device_id.value(row)
        }
    }
}

fn string<'a>(
    batch: &'a RecordBatch,
    i: usize,
    name: &'static str,
) -> Result<&'a StringArray, OperatorError> {
    batch
        .column(i)
        .as_string_opt::<i32>()
        .ok_or(schema_error(name))
}

fn primitive<'a, T: ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    i: usize,
    name: &'static str,
) -> Result<&'a PrimitiveArray<T>, OperatorError> {
    batch
        .column(i)
        .as_primitive_opt::<T>()
        .ok_or(schema_error(name))
}

/// The meter id is a GSRN with a valid check digit and an allowed prefix. A
/// replayed public dead letter carries a pseudonym, not the GSRN, so identity
/// rules cannot apply to it.
fn check_identity(c: &Columns<'_>, row: usize, rules: &Rules) -> Result<(), Rejection> {
    let pseudonymized = c.flags.value(row) & flags::REPLAYED != 0;
    if !c.meter_id.is_valid(row) || pseudonymized {
        return Ok(());
    }
    let m = c.meter_id.value(row);
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
    Ok(())
}

/// The interval is aligned to its resolution, has ended, and is within the
/// tenant's horizon.
fn check_interval(
    c: &Columns<'_>,
    row: usize,
    rules: &Rules,
    now_micros: i64,
) -> Result<(), Rejection> {
    let res = i64::from(c.resolution.value(row));
    let step = res * 60 * 1_000_000;
    let s = c.start.value(row);
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
    if s + step > now_micros.saturating_add(rules.future_skew_micros) {
        return Err(rejection(
            Reason::FutureInterval,
            "field `start`: the interval ends in the future (validation.max_future_skew_secs)",
        ));
    }
    if s < now_micros.saturating_sub(rules.max_age_micros) {
        return Err(rejection(
            Reason::TooOld,
            "field `start`: older than the tenant's horizon (validation.max_age_days)",
        ));
    }
    Ok(())
}

/// The unit suits the quantity (a Wh value becomes kWh where the tenant allows
/// it, and is flagged) and the value is physically possible for the interval.
fn check_quantity<'a>(
    c: &Columns<'a>,
    row: usize,
    rules: &Rules,
    unit: &mut &'a str,
    value: &mut i128,
    row_flags: &mut u32,
) -> Result<(), Rejection> {
    if *unit == "Wh" {
        if !rules.convert_wh {
            return Err(rejection(
                Reason::UnitNotAllowed,
                "field `unit`: Wh is accepted only where the tenant sets validation.convert_wh",
            ));
        }
        *value = wh_to_kwh(*value);
        *unit = "kWh";
        *row_flags |= flags::UNIT_CONVERTED;
    }
    if !unit_allowed(c.quantity.value(row), unit) {
        return Err(rejection(
            Reason::UnitNotAllowed,
            "field `unit`: electricity, district heating and cooling are in kWh; gas and water in m3 or kWh; reactive_energy in kvarh",
        ));
    }
    // Reactive energy is bounded like active energy (a meter's kvarh per hour stays
    // within its fuse's kVA).
    let per_hour = if *unit == "kWh" || *unit == "kvarh" {
        rules.max_kwh_per_hour
    } else {
        rules.max_m3_per_hour
    };
    if *value * 60 > per_hour * i128::from(c.resolution.value(row)) {
        return Err(rejection(
            Reason::ValueTooHigh,
            "field `value`: above the physical maximum for one interval (validation.max_kwh_per_hour / max_m3_per_hour)",
        ));
    }
    Ok(())
}

/// The output batch: the input with the converted values and units and the new
/// flags, without the rejected rows.
fn assemble(
    batch: &RecordBatch,
    values: Vec<i128>,
    units: Vec<&str>,
    row_flags: Vec<u32>,
    keep: Vec<bool>,
    all_kept: bool,
) -> Result<RecordBatch, OperatorError> {
    let arrow_err = |source| OperatorError::Arrow {
        operator: "validate",
        source,
    };
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[col::VALUE] = Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
            .map_err(arrow_err)?,
    );
    columns[col::UNIT] = Arc::new(StringArray::from(units));
    columns[col::FLAGS] = Arc::new(UInt32Array::from(row_flags));
    let full = RecordBatch::try_new(DECODED.clone(), columns).map_err(arrow_err)?;
    if all_kept {
        Ok(full)
    } else {
        filter_record_batch(&full, &BooleanArray::from(keep)).map_err(arrow_err)
    }
}

#[cfg(test)]
mod tests;
