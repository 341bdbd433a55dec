//! Materialization of the cost tables on a local lake, against the aggregate materializer
//! on the same readings in the same run.
//!
//! 1. Readings of `METERS` meters (half of them a private tenant's: those are priced) go
//!    through the real operator chain into `readings`; prices, profiles, temperatures and a
//!    tariff go through the input decoders into their tables (`meterline demo`'s inputs).
//! 2. The aggregate materializer's first round folds all of it: readings per second, the
//!    baseline.
//! 3. The cost materializer's first round prices every private meter-hour and writes the
//!    cost and insight tables: meter-hours per second, and its time as a ratio to the
//!    aggregate round's. (What a change recomputes is shown by the test in
//!    `pipeline/src/cost/tests.rs`.)
//!
//! Run: `cargo bench --workspace --bench cost`. Under `cargo test` the same steps and
//! checks run on a few days of 8 meters.

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use meterline::aggregate::Materializer;
use meterline::config::AggregateSettings;
use meterline::dev::economics::{materialize, write_inputs};
use meterline::dev::generator::{tenants, GeneratorSpec};
use meterline::metrics::Metrics;

mod support;

use support::{date, Scale};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut bench = support::BenchLake::new().await;
        let lake = bench.lake.clone();
        let scale = Scale::pick(
            Scale {
                meters: 40,
                first_day: date(2026, 1, 1),
                days: 90,
                measured: true,
            },
            Scale {
                meters: 8,
                first_day: date(2026, 3, 28),
                days: 3,
                measured: false,
            },
        );
        let spec = GeneratorSpec {
            meters: scale.meters,
            first_day: scale.first_day,
            days: scale.days,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: 1,
        };
        let payloads: Vec<Vec<u8>> = spec.generate().into_iter().map(|m| m.payload).collect();
        bench.append(&payloads, 0, 100_000).await;
        let inputs = write_inputs(&lake, &spec, &tenants())
            .await
            .expect("inputs");
        println!(
            "loaded {} days: {} readings of {} meters; {} prices, {} profiles, {} temperatures, {} tariff(s)",
            scale.days,
            payloads.len(),
            scale.meters,
            inputs.prices,
            inputs.profiles,
            inputs.observations,
            inputs.tariffs
        );

        let mut aggregate = Materializer::open(
            &lake,
            tenants(),
            AggregateSettings {
                disclosure: HashMap::new(),
                ..AggregateSettings::default()
            },
            Metrics::new(),
        )
        .await
        .expect("materializer");
        let started = Instant::now();
        let folded = aggregate.round().await.expect("aggregate round");
        let aggregate_secs = started.elapsed().as_secs_f64();
        println!(
            "aggregate materialization: {} readings in {aggregate_secs:.2}s = {:.0} readings/s (baseline)",
            folded.readings,
            folded.readings as f64 / aggregate_secs
        );

        let started = Instant::now();
        let costs = materialize(&lake, tenants()).await.expect("cost round");
        let cost_secs = started.elapsed().as_secs_f64();
        println!(
            "cost materialization: {} meter-hours ({} local days) in {cost_secs:.2}s = {:.0} meter-hours/s",
            costs.hours,
            costs.days(),
            costs.hours as f64 / cost_secs
        );
        println!(
            "ratio cost/aggregate: {:.2} (time of the first rounds over the same readings; the cost round prices the private half)",
            cost_secs / aggregate_secs
        );
        // Every private meter-hour is priced once: half the meters, every hour.
        let private_meters = scale.meters / 2;
        let expected_days = scale.days as usize;
        if costs.days() != expected_days {
            eprintln!(
                "expected {expected_days} private (tenant, day) partitions priced, got {}",
                costs.days()
            );
            return ExitCode::FAILURE;
        }
        let day_hours: usize = (0..scale.days)
            .map(|d| {
                let day = scale.first_day + chrono::Duration::days(i64::from(d));
                if day == date(2026, 3, 29) {
                    23
                } else if day == date(2026, 10, 25) {
                    25
                } else {
                    24
                }
            })
            .sum();
        if costs.hours != private_meters * day_hours {
            eprintln!(
                "expected {} meter-hours ({private_meters} private meters x {day_hours} hours), got {}",
                private_meters * day_hours,
                costs.hours
            );
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    })
}
