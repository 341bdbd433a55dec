//! For developers and rehearsals: the embedded demo, the traffic generator, and
//! (with the `testkit` feature, for tests only) the real-broker and S3 test kit.

pub mod demo;
pub mod economics;
pub mod emif;
pub mod generator;
#[cfg(feature = "testkit")]
pub mod testkit;
