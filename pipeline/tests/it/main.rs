//! End-to-end tests of the foundation: Kafka (librdkafka's in-process mock cluster,
//! no external broker) -> pipeline -> Delta lake on a local directory -> SQL. The
//! variants on a real broker (tansu) and a real S3 server (moto) are the fault
//! scenarios in `tests/faults`.

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

mod aggregates;
mod common;
mod consent;
mod corrections;
mod crash;
mod dead_letters;
mod demo;
mod epochs;
mod export;
mod layers;
mod lifecycle;
mod logs;
mod privacy;
mod replay;
mod sensitive;
