//! `anonymize`: turn decoded rows into stored rows according to each tenant's
//! deployment.
//!
//! | column    | public tenant                                   | private tenant          |
//! |-----------|-------------------------------------------------|-------------------------|
//! | `meter`   | pseudonym of `meter_id`, else of `device_id`    | `meter_id`, else `device_id` |
//! | `device`  | pseudonym of `device_id`                        | `device_id`             |
//! | `subject` | null (dropped at collection)                    | kept                    |
//! | `area`    | postcodes cut to their first 2 digits           | kept                    |
//!
//! `pii` and `status` never reach this operator: `decode` does not keep them.
//! Pseudonyms are computed once per distinct identifier per batch.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, UInt32Type};

use crate::epoch::{Epoch, Rotation};
use crate::flags;
use crate::operator::{Operator, OperatorContext, OperatorError, OperatorOutput};
use crate::pseudonym::{pseudonym_with_key, IdKind, Pseudonymizer};
use crate::schema::{col, DECODED, READINGS};
use crate::tenant::{Deployment, TenantRegistry};
use crate::FastMap;

/// The anonymize operator. Public tenants require a pseudonymizer (a master key).
#[derive(Debug, Clone)]
pub struct Anonymize {
    tenants: TenantRegistry,
    pseudonymizer: Option<Pseudonymizer>,
    /// Upgrades to private treatment (see [`crate::consent`]).
    consent: Option<std::sync::Arc<crate::consent::ConsentView>>,
}

/// Why an anonymizer cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnonymizeBuildError {
    #[error("a public tenant is configured but no pseudonym key was given (set [privacy] key_file or METERLINE_PSEUDONYM_KEY)")]
    MissingKey,
}

impl Anonymize {
    /// # Errors
    /// [`AnonymizeBuildError::MissingKey`] when a public tenant has no key to use.
    pub fn new(
        tenants: TenantRegistry,
        pseudonymizer: Option<Pseudonymizer>,
    ) -> Result<Self, AnonymizeBuildError> {
        if tenants.any_public() && pseudonymizer.is_none() {
            return Err(AnonymizeBuildError::MissingKey);
        }
        Ok(Self {
            tenants,
            pseudonymizer,
            consent: None,
        })
    }

    /// Keys of a tenant's open epochs (see [`Pseudonymizer::set_epoch_keys`]).
    pub fn set_epoch_keys(&mut self, tenant: &str, keys: &[(Epoch, [u8; 32])]) {
        if let Some(p) = self.pseudonymizer.as_mut() {
            p.set_epoch_keys(tenant, keys);
        }
    }

    /// Remove the rows of public tenants whose key epoch is closed (or not loaded):
    /// they cannot be pseudonymized any more. Returns the rows left and how many
    /// were removed (an intentional drop).
    ///
    /// # Errors
    /// A batch of another schema.
    pub fn drop_closed_epochs(
        &self,
        batch: RecordBatch,
    ) -> Result<(RecordBatch, usize), OperatorError> {
        let rotating: Vec<(&str, Rotation)> = self
            .tenants
            .iter()
            .filter(|t| {
                t.deployment == Deployment::Public && t.rules.key_rotation != Rotation::Never
            })
            .map(|t| (t.id.as_str(), t.rules.key_rotation))
            .collect();
        if rotating.is_empty() || batch.num_rows() == 0 {
            return Ok((batch, 0));
        }
        let schema_error = || OperatorError::Schema {
            operator: "anonymize",
            column: "local_date",
        };
        let tenant = batch
            .column(col::TENANT)
            .as_string_opt::<i32>()
            .ok_or_else(schema_error)?;
        let local_date = batch
            .column(col::LOCAL_DATE)
            .as_primitive_opt::<arrow::datatypes::Date32Type>()
            .ok_or_else(schema_error)?;
        let keep: arrow::array::BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let t = tenant.value(i);
                Some(
                    rotating
                        .iter()
                        .find(|r| r.0 == t)
                        .is_none_or(|(_, rotation)| {
                            let epoch = rotation.epoch_of(local_date.value(i));
                            self.pseudonymizer
                                .as_ref()
                                .is_some_and(|p| p.has_epoch(t, epoch))
                        }),
                )
            })
            .collect();
        let dropped = keep.false_count();
        if dropped == 0 {
            return Ok((batch, 0));
        }
        let kept = arrow::compute::filter_record_batch(&batch, &keep).map_err(|source| {
            OperatorError::Arrow {
                operator: "anonymize",
                source,
            }
        })?;
        Ok((kept, dropped))
    }

    /// The consent state to apply from the next batch on.
    pub fn set_consent(&mut self, view: Option<std::sync::Arc<crate::consent::ConsentView>>) {
        self.consent = view;
    }
}

fn string_col<'a>(
    batch: &'a RecordBatch,
    index: usize,
    name: &'static str,
) -> Result<&'a StringArray, OperatorError> {
    batch
        .column(index)
        .as_string_opt::<i32>()
        .filter(|_| batch.schema().field(index).name() == name)
        .ok_or(OperatorError::Schema {
            operator: "anonymize",
            column: name,
        })
}

/// Public areas: a postcode (all digits) keeps only its first two digits; price or
/// grid areas (`NO1`) are not personal and stay.
/// A public tenant's `area`: a postcode (all digits) is cut to its first 2 digits;
/// a price/grid area code (`NO1`, `SE3`: 2 capitals and 1-2 digits) is kept;
/// anything else (an address, a place name, free text) is dropped, since the
/// field could carry personal data.
pub(crate) fn public_area(area: &str) -> Option<&str> {
    let b = area.as_bytes();
    if b.len() > 2 && b.iter().all(u8::is_ascii_digit) {
        Some(&area[..2])
    } else if (3..=4).contains(&b.len())
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..].iter().all(u8::is_ascii_digit)
        || (1..=2).contains(&b.len()) && b.iter().all(u8::is_ascii_digit)
    {
        Some(area)
    } else {
        None
    }
}

/// Pseudonyms computed once per distinct (tenant, kind, identifier) in a batch: the
/// same id of another tenant or kind has another pseudonym. Created per batch and
/// dropped with it, so bounded by the batch's rows.
#[derive(Default)]
struct PseudonymCache<'a> {
    /// (tenant slot in this batch, kind, id) -> index into `values`.
    index: FastMap<(usize, IdKind, &'a str), usize>,
    values: Vec<String>,
}

impl<'a> PseudonymCache<'a> {
    fn get(&mut self, slot: usize, kind: IdKind, key: &[u8; 32], id: &'a str) -> &str {
        let values = &mut self.values;
        let i = *self.index.entry((slot, kind, id)).or_insert_with(|| {
            values.push(pseudonym_with_key(key, id));
            values.len() - 1
        });
        &self.values[i]
    }
}

/// A tenant as this batch uses it: looked up once per batch, not per row.
struct BatchTenant<'a> {
    id: &'a str,
    /// The key epoch (one slot per tenant and epoch: pseudonyms differ by epoch).
    epoch: Epoch,
    deployment: Deployment,
    device_key: [u8; 32],
    meter_key: [u8; 32],
}

/// The batch's copies of the derived keys are wiped with it, as the
/// pseudonymizer wipes its own.
impl Drop for BatchTenant<'_> {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.device_key.zeroize();
        self.meter_key.zeroize();
    }
}

impl Operator for Anonymize {
    fn name(&self) -> &'static str {
        "anonymize"
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
    ) -> Result<OperatorOutput, OperatorError> {
        let upgrades = self.consent.clone().filter(|c| c.has_upgrades());
        let c = Columns::of(&batch)?;
        let rows = batch.num_rows();
        let mut out = Outputs::with_capacity(rows);
        // Per batch: the tenants seen (few; found by a short scan), each tenant's
        // key rotation, and a cache of pseudonyms for identifiers that repeat
        // within the batch.
        let mut seen: Vec<BatchTenant<'_>> = Vec::new();
        let mut rotations: Vec<(&str, Rotation)> = Vec::new();
        let mut cache = PseudonymCache::default();
        for row in 0..rows {
            let t = c.tenant.value(row);
            let epoch = self.epoch_of(&mut rotations, t, c.local_date.value(row));
            let slot = match seen.iter().position(|s| s.id == t && s.epoch == epoch) {
                Some(slot) => slot,
                None => {
                    seen.push(self.batch_tenant(t, epoch)?);
                    seen.len() - 1
                }
            };
            // A replayed dead letter of a public tenant carries pseudonyms already
            // (verified by its replay tag in decode): keep them as they are.
            let replayed = c.flags.value(row) & flags::REPLAYED != 0;
            // A public subject who upgraded to private treatment: readings of the
            // meters the upgrade lists, from the moment it was recorded until it
            // ends, are kept linked; never those before, nor other meters.
            let deployment = match (&upgrades, seen[slot].deployment) {
                (Some(view), Deployment::Public)
                    if !replayed
                        && c.subject.is_valid(row)
                        && view.upgraded(
                            t,
                            c.subject.value(row),
                            c.meter_id.is_valid(row).then(|| c.meter_id.value(row)),
                            c.device_id.value(row),
                            c.start.value(row),
                        ) =>
                {
                    Deployment::Private
                }
                (_, deployment) => deployment,
            };
            match deployment {
                Deployment::Public if replayed => out.push_replayed_public(&c, row),
                Deployment::Public => out.push_public(&c, row, slot, &seen[slot], &mut cache),
                Deployment::Private => out.push_private(&c, row),
            }
        }
        out.finish(&batch, &c)
    }
}

impl Anonymize {
    /// The key epoch of a reading of tenant `t` on `local_date` (`rotations`
    /// remembers each tenant's rotation for the batch).
    fn epoch_of<'a>(
        &self,
        rotations: &mut Vec<(&'a str, Rotation)>,
        t: &'a str,
        local_date: i32,
    ) -> Epoch {
        let rotation = match rotations.iter().find(|r| r.0 == t) {
            Some(r) => r.1,
            None => {
                let r = self
                    .tenants
                    .by_id(t)
                    .filter(|x| x.deployment == Deployment::Public)
                    .map_or(Rotation::Never, |x| x.rules.key_rotation);
                rotations.push((t, r));
                r
            }
        };
        match rotation {
            Rotation::Never => Epoch::All,
            r => r.epoch_of(local_date),
        }
    }

    /// Tenant `t` in `epoch` as this batch uses it: its treatment and keys.
    fn batch_tenant<'a>(
        &mut self,
        t: &'a str,
        epoch: Epoch,
    ) -> Result<BatchTenant<'a>, OperatorError> {
        let deployment = self
            .tenants
            .by_id(t)
            .map(|x| x.deployment)
            // decode only emits configured tenants; treat anything else with the
            // strictest rules.
            .unwrap_or(Deployment::Public);
        let (device_key, meter_key) = match (deployment, self.pseudonymizer.as_mut()) {
            (Deployment::Public, Some(p)) => match (
                p.epoch_key(t, IdKind::Device, epoch),
                p.epoch_key(t, IdKind::Meter, epoch),
            ) {
                (Some(d), Some(m)) => (d, m),
                // `drop_closed_epochs` removed such rows first.
                _ => {
                    return Err(OperatorError::Schema {
                        operator: "anonymize",
                        column: "local_date",
                    })
                }
            },
            (Deployment::Public, None) => {
                // `new` refuses public tenants without a key; a batch for an
                // unconfigured tenant cannot be stored safely.
                return Err(OperatorError::Schema {
                    operator: "anonymize",
                    column: "tenant",
                });
            }
            (Deployment::Private, _) => ([0; 32], [0; 32]),
        };
        Ok(BatchTenant {
            id: t,
            epoch,
            deployment,
            device_key,
            meter_key,
        })
    }
}

/// The columns anonymize reads, typed (a batch of another shape is a schema error).
struct Columns<'a> {
    tenant: &'a StringArray,
    device_id: &'a StringArray,
    meter_id: &'a StringArray,
    subject: &'a StringArray,
    area: &'a StringArray,
    area_index: usize,
    start: &'a arrow::array::PrimitiveArray<arrow::datatypes::TimestampMicrosecondType>,
    local_date: &'a arrow::array::PrimitiveArray<arrow::datatypes::Date32Type>,
    flags: &'a arrow::array::PrimitiveArray<UInt32Type>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, OperatorError> {
        let schema = |column| OperatorError::Schema {
            operator: "anonymize",
            column,
        };
        let start = batch
            .column(col::INTERVAL_START)
            .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
            .ok_or(schema("interval_start"))?;
        if batch.schema().fields() != DECODED.fields() {
            return Err(schema("tenant"));
        }
        let area_index = READINGS.index_of("area").expect("area column");
        Ok(Self {
            tenant: string_col(batch, col::TENANT, "tenant")?,
            device_id: string_col(batch, col::DEVICE_ID, "device_id")?,
            meter_id: string_col(batch, col::METER_ID, "meter_id")?,
            subject: string_col(batch, col::SUBJECT, "subject")?,
            local_date: batch
                .column(col::LOCAL_DATE)
                .as_primitive_opt::<arrow::datatypes::Date32Type>()
                .ok_or(schema("local_date"))?,
            area: string_col(batch, area_index, "area")?,
            area_index,
            start,
            flags: batch
                .column(col::FLAGS)
                .as_primitive_opt::<UInt32Type>()
                .ok_or(schema("flags"))?,
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

    /// A public tenant's area of a row (see [`public_area`]).
    fn public_area(&self, row: usize) -> Option<&'a str> {
        self.area
            .is_valid(row)
            .then(|| public_area(self.area.value(row)))
            .flatten()
    }
}

/// The identifier and area columns being built.
struct Outputs {
    meter: StringBuilder,
    device: StringBuilder,
    subject: StringBuilder,
    area: StringBuilder,
}

impl Outputs {
    fn with_capacity(rows: usize) -> Self {
        Self {
            meter: StringBuilder::with_capacity(rows, rows * 32),
            device: StringBuilder::with_capacity(rows, rows * 32),
            subject: StringBuilder::with_capacity(rows, rows * 8),
            area: StringBuilder::with_capacity(rows, rows * 4),
        }
    }

    /// A replayed public dead letter: its identifiers are pseudonyms already.
    fn push_replayed_public(&mut self, c: &Columns<'_>, row: usize) {
        self.meter.append_value(c.meter(row));
        self.device.append_value(c.device_id.value(row));
        self.subject.append_null();
        self.area.append_option(c.public_area(row));
    }

    /// Public treatment: identifiers become pseudonyms under the tenant's epoch
    /// keys, the subject is dropped and the area cut.
    fn push_public<'a>(
        &mut self,
        c: &Columns<'a>,
        row: usize,
        slot: usize,
        tenant: &BatchTenant<'_>,
        cache: &mut PseudonymCache<'a>,
    ) {
        let device = c.device_id.value(row);
        self.device
            .append_value(cache.get(slot, IdKind::Device, &tenant.device_key, device));
        if c.meter_id.is_valid(row) {
            let m = c.meter_id.value(row);
            self.meter
                .append_value(cache.get(slot, IdKind::Meter, &tenant.meter_key, m));
        } else {
            self.meter
                .append_value(cache.get(slot, IdKind::Device, &tenant.device_key, device));
        }
        self.subject.append_null();
        self.area.append_option(c.public_area(row));
    }

    /// Private treatment: everything as it came.
    fn push_private(&mut self, c: &Columns<'_>, row: usize) {
        self.meter.append_value(c.meter(row));
        self.device.append_value(c.device_id.value(row));
        self.subject
            .append_option(c.subject.is_valid(row).then(|| c.subject.value(row)));
        self.area
            .append_option(c.area.is_valid(row).then(|| c.area.value(row)));
    }

    /// The readings batch: the decoded columns with the new identifiers, subject
    /// and area, and the flags rendered as text.
    fn finish(
        mut self,
        batch: &RecordBatch,
        c: &Columns<'_>,
    ) -> Result<OperatorOutput, OperatorError> {
        let flags_out: StringArray = c.flags.values().iter().map(|b| flags::render(*b)).collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[col::METER_ID] = Arc::new(self.device.finish()); // position 2 -> `device`
        columns[col::DEVICE_ID] = Arc::new(self.meter.finish()); // position 1 -> `meter`
        columns[col::SUBJECT] = Arc::new(self.subject.finish());
        columns[c.area_index] = Arc::new(self.area.finish());
        columns[col::FLAGS] = Arc::new(flags_out);
        debug_assert!(columns.iter().all(|c| c.data_type() != &DataType::Null));
        let accepted = RecordBatch::try_new(READINGS.clone(), columns).map_err(|source| {
            OperatorError::Arrow {
                operator: "anonymize",
                source,
            }
        })?;
        Ok(OperatorOutput::accept_all(accepted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_areas_keep_only_codes_and_postcode_prefixes() {
        assert_eq!(public_area("0150"), Some("01"));
        assert_eq!(public_area("NO1"), Some("NO1"));
        assert_eq!(public_area("SE12"), Some("SE12"));
        assert_eq!(public_area("01"), Some("01"));
        assert_eq!(public_area("Storgata 1"), None);
        assert_eq!(public_area("Kari"), None);
        assert_eq!(public_area("no1"), None);
    }
    use crate::decode::{DecodeConfig, Decoder, RawRecord};
    use crate::pseudonym::MasterKey;
    use crate::tenant::{Rules, Tenant};

    fn tenants() -> TenantRegistry {
        TenantRegistry::new([
            Tenant {
                id: "pub".into(),
                deployment: Deployment::Public,
                timezone: chrono_tz::Europe::Oslo,
                rules: Rules::default(),
            },
            Tenant {
                id: "priv".into(),
                deployment: Deployment::Private,
                timezone: chrono_tz::Europe::Oslo,
                rules: Rules::default(),
            },
        ])
        .unwrap()
    }

    fn reading(tenant: &str, device: &str, meter: Option<&str>) -> String {
        let meter = meter
            .map(|m| format!(",\"meter_id\":\"{m}\""))
            .unwrap_or_default();
        format!(
            r#"{{"schema":"reading/v1","tenant":"{tenant}","device_id":"{device}"{meter},
            "quantity":"electricity","start":"2026-01-01T00:00:00Z","resolution":"PT1H",
            "value":1,"unit":"kWh","quality":"measured","subject":"acct-1","area":"0150"}}"#
        )
    }

    fn run(texts: &[String], key: u8) -> RecordBatch {
        let ctx = OperatorContext { now_micros: 0 };
        let p = Pseudonymizer::new(MasterKey::from_bytes([key; 32]));
        let mut dec = Decoder::new(DecodeConfig::default(), tenants(), Some(p.clone()));
        let records: Vec<RawRecord> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| RawRecord {
                partition: 0,
                offset: i as i64,
                payload: Some(t.as_bytes()),
                replay_tag: None,
            })
            .collect();
        let decoded = dec.decode(&records, &ctx);
        assert!(decoded.dead_letters.is_empty());
        let mut op = Anonymize::new(tenants(), Some(p)).unwrap();
        op.process(decoded.batch, &ctx).unwrap().accepted
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    }

    #[test]
    fn public_rows_are_pseudonymized_and_private_rows_keep_ids() {
        let out = run(
            &[
                reading("pub", "dev-1", Some("707057500000000018")),
                reading("pub", "dev-1", None),
                reading("priv", "dev-2", Some("707057500022939815")),
                reading("priv", "dev-3", None),
            ],
            1,
        );
        assert_eq!(out.schema(), *READINGS);
        let meter = strings(&out, "meter");
        let device = strings(&out, "device");
        let subject = strings(&out, "subject");
        let area = strings(&out, "area");
        // Public: pseudonyms, meter falls back to the device pseudonym.
        assert_eq!(meter[0].as_ref().unwrap().len(), 32);
        assert_ne!(meter[0], device[0]);
        assert_eq!(meter[1], device[1]);
        assert_eq!(device[0], device[1]);
        assert!(!meter[0].as_ref().unwrap().contains("7070575"));
        assert_eq!(subject[0], None);
        assert_eq!(area[0].as_deref(), Some("01"));
        // Private: raw identifiers, meter falls back to device id.
        assert_eq!(meter[2].as_deref(), Some("707057500022939815"));
        assert_eq!(device[2].as_deref(), Some("dev-2"));
        assert_eq!(meter[3].as_deref(), Some("dev-3"));
        assert_eq!(subject[2].as_deref(), Some("acct-1"));
        assert_eq!(area[2].as_deref(), Some("0150"));
    }

    #[test]
    fn pseudonyms_change_with_the_key() {
        let a = run(&[reading("pub", "dev-1", None)], 1);
        let b = run(&[reading("pub", "dev-1", None)], 2);
        assert_ne!(strings(&a, "device"), strings(&b, "device"));
        assert_eq!(
            strings(&a, "device"),
            strings(&run(&[reading("pub", "dev-1", None)], 1), "device")
        );
    }

    #[test]
    fn a_public_tenant_without_key_is_refused_at_build() {
        assert_eq!(
            Anonymize::new(tenants(), None).unwrap_err(),
            AnonymizeBuildError::MissingKey
        );
    }
}
