//! The one operator trait: a synchronous function over Arrow record batches.

use arrow::array::RecordBatch;
use arrow::error::ArrowError;

use crate::dead_letter::DeadLetter;

/// What an operator is given besides the batch. The clock is passed in so that tests
/// are deterministic.
#[derive(Debug, Clone, Copy)]
pub struct OperatorContext {
    /// "Now", in microseconds since the Unix epoch (UTC).
    pub now_micros: i64,
}

/// Rows an operator accepted, plus the rows it rejected with a reason.
#[derive(Debug)]
pub struct OperatorOutput {
    pub accepted: RecordBatch,
    pub rejected: Vec<DeadLetter>,
}

impl OperatorOutput {
    /// An output that accepts every row.
    pub fn accept_all(accepted: RecordBatch) -> Self {
        Self {
            accepted,
            rejected: Vec::new(),
        }
    }
}

/// Errors an operator returns for a whole batch. Bad *rows* are never errors: they come
/// back as [`OperatorOutput::rejected`]. An error here means the batch did not have the
/// shape the operator was built for, which is a bug in the chain, not bad data.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator `{operator}` got a batch without column `{column}` of the expected type")]
    Schema {
        operator: &'static str,
        column: &'static str,
    },
    #[error("operator `{operator}`: arrow error: {source}")]
    Arrow {
        operator: &'static str,
        #[source]
        source: ArrowError,
    },
    /// A caller broke an operator's contract (a bug, never the data's fault).
    #[error("operator `{operator}`: {reason}")]
    Internal {
        operator: &'static str,
        reason: &'static str,
    },
}

/// A step of the chain. Small and synchronous: a batch in, accepted and rejected rows
/// out. `flush` is for operators that hold state across batches (none yet).
pub trait Operator: Send {
    /// A short verb naming the operator, used as the `component` metric label.
    fn name(&self) -> &'static str;

    /// Process one batch.
    ///
    /// # Errors
    /// [`OperatorError`] when the batch does not have the expected schema.
    fn process(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
    ) -> Result<OperatorOutput, OperatorError>;

    /// Emit anything held back (windowed operators). The default holds nothing.
    fn flush(&mut self, _ctx: &OperatorContext) -> Result<Option<RecordBatch>, OperatorError> {
        Ok(None)
    }
}
