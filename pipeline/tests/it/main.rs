//! End-to-end tests of the foundation: Kafka (librdkafka's in-process mock cluster,
//! a real Kafka-protocol server on loopback) -> pipeline -> Delta lake on a local
//! directory -> SQL. The real-broker and S3 variants live in the reliability suite.

mod aggregates;
mod common;
mod consent;
mod corrections;
mod crash;
mod dead_letters;
mod epochs;
mod export;
mod lifecycle;
mod privacy;
mod replay;
mod sensitive;
