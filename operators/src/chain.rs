//! The operator chain of one pipeline: `decode` -> `validate` -> `anonymize`.
//!
//! Every input record comes out exactly once: as a row of [`ChainOutput::readings`]
//! or as a [`DeadLetter`]. Dead letters of every stage carry the same redacted
//! payload (sensitive data removed; public tenants' identifiers pseudonymized).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::anonymize::{Anonymize, AnonymizeBuildError};
use crate::consent::{elhub_filter, ConsentView};
use crate::dead_letter::{DeadLetter, Reason};
use crate::decode::{DecodeConfig, Decoder, RawRecord};
use crate::operator::{Operator, OperatorContext, OperatorError};
use crate::pseudonym::Pseudonymizer;
use crate::sensitive::SensitiveCounts;
use crate::tenant::TenantRegistry;
use crate::validate::Validate;

/// What one pass of the chain produced.
#[derive(Debug)]
pub struct ChainOutput {
    /// Rows of the `readings` schema.
    pub readings: RecordBatch,
    pub dead_letters: Vec<DeadLetter>,
    /// Sensitive values removed, by kind.
    pub sensitive: SensitiveCounts,
    /// Rows that went into each operator, for the per-component metrics.
    pub rows_in: [(&'static str, usize); 3],
    /// Valid readings not stored for lack of Elhub consent (an intentional drop).
    pub no_consent: usize,
    /// Valid readings of a public tenant in a closed key epoch (an intentional drop).
    pub epoch_closed: usize,
}

/// decode -> validate -> anonymize.
#[derive(Debug, Clone)]
pub struct Chain {
    decoder: Decoder,
    validate: Validate,
    anonymize: Anonymize,
    tenants: TenantRegistry,
    consent: Option<Arc<ConsentView>>,
}

impl Chain {
    /// # Errors
    /// A public tenant without a pseudonymizer.
    pub fn new(
        config: DecodeConfig,
        tenants: TenantRegistry,
        pseudonymizer: Option<Pseudonymizer>,
    ) -> Result<Self, AnonymizeBuildError> {
        Ok(Self {
            decoder: Decoder::new(config, tenants.clone(), pseudonymizer.clone()),
            validate: Validate::new(tenants.clone()),
            anonymize: Anonymize::new(tenants.clone(), pseudonymizer)?,
            tenants,
            consent: None,
        })
    }

    /// Keys of a tenant's open pseudonym epochs.
    pub fn set_epoch_keys(&mut self, tenant: &str, keys: &[(crate::epoch::Epoch, [u8; 32])]) {
        self.decoder.set_epoch_keys(tenant, keys);
        self.anonymize.set_epoch_keys(tenant, keys);
    }

    /// The short-lived keys of dead letters no epoch key applies to, by UTC day
    /// (see [`crate::Pseudonymizer::dead_letter_key`]).
    pub fn set_dead_letter_keys(&mut self, keys: &[(chrono::NaiveDate, [u8; 32])]) {
        self.decoder.set_dead_letter_keys(keys);
    }

    /// The consent state to apply from the next batch on (Elhub consent,
    /// upgrades to private treatment).
    pub fn set_consent(&mut self, view: Option<Arc<ConsentView>>) {
        self.anonymize.set_consent(view.clone());
        self.consent = view;
    }

    /// Run the chain over a slice of records.
    ///
    /// # Errors
    /// Only bugs (a batch without the expected schema); bad records are dead letters.
    pub fn process(
        &mut self,
        records: &[RawRecord<'_>],
        ctx: &OperatorContext,
    ) -> Result<ChainOutput, OperatorError> {
        let decoded = self.decoder.decode(records, ctx);
        let mut dead_letters = decoded.dead_letters;
        let decoded_rows = decoded.batch.num_rows();
        let validated = self.validate.process(decoded.batch, ctx)?;
        if !validated.rejected.is_empty() {
            let by_position: HashMap<(i32, i64), &RawRecord<'_>> = records
                .iter()
                .map(|r| ((r.partition, r.offset), r))
                .collect();
            for rejected in validated.rejected {
                dead_letters.push(self.redacted(&by_position, rejected));
            }
        }
        let (consented, no_consent) =
            elhub_filter(validated.accepted, &self.tenants, self.consent.as_deref()).map_err(
                |source| OperatorError::Arrow {
                    operator: "consent",
                    source,
                },
            )?;
        let (open, epoch_closed) = self.anonymize.drop_closed_epochs(consented)?;
        let validated_rows = open.num_rows();
        let anonymized = self.anonymize.process(open, ctx)?;
        dead_letters.extend(anonymized.rejected);
        Ok(ChainOutput {
            readings: anonymized.accepted,
            dead_letters,
            sensitive: decoded.sensitive,
            rows_in: [
                ("decode", records.len()),
                ("validate", decoded_rows),
                ("anonymize", validated_rows),
            ],
            no_consent,
            epoch_closed,
        })
    }

    fn redacted(
        &mut self,
        by_position: &HashMap<(i32, i64), &RawRecord<'_>>,
        rejected: DeadLetter,
    ) -> DeadLetter {
        match by_position.get(&(rejected.partition, rejected.offset)) {
            Some(rec) => self
                .decoder
                .dead_letter_for(rec, rejected.reason, rejected.detail),
            None => rejected,
        }
    }

    /// A dead letter for a record rejected after the chain (a version conflict),
    /// redacted like the chain's own.
    pub fn dead_letter(&mut self, rec: &RawRecord<'_>, reason: Reason, detail: &str) -> DeadLetter {
        self.decoder.dead_letter_for(rec, reason, detail.to_owned())
    }
}

#[cfg(test)]
mod tests;
