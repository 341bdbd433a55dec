//! What reading any Elhub file shares: its hash, taken as it is read; the refusal of a
//! series or payload; the reason of a message that cannot be read.

use std::io::Read;

use meterline_operators::elhub::emif::EmifError;
use meterline_operators::elhub::readings::RejectReason;

/// A series that was refused: its place in the message, why, and a message naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRefusal {
    pub series: usize,
    pub reason: RejectReason,
    pub message: String,
}

/// A reader that hashes what passes through it.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R> Hashing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The hash of what was read, in hex.
    pub(crate) fn finish(self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The reason of a message that cannot be read.
pub(crate) fn emif_reason(e: &EmifError) -> RejectReason {
    match e {
        EmifError::Xml { .. } => RejectReason::MalformedXml,
        EmifError::NotExpected { .. } => RejectReason::NotEmif,
        EmifError::Namespace { .. } => RejectReason::WrongNamespace,
        EmifError::TooManySeries | EmifError::NoSeries => RejectReason::SeriesCount,
    }
}
