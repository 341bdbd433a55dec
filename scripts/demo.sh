#!/usr/bin/env bash
# The README's first command: `meterline demo` on the embedded default (an
# in-process Kafka mock cluster and a local lake), nothing to install.
#   scripts/demo.sh [demo options]      e.g. scripts/demo.sh --meters 20
#
# It builds into the same target directory, with the same profile and features,
# as scripts/test.sh ($CARGO_TARGET_DIR, default ~/.cache/meterline-target), so
# running the demo and then the tests (or the other way round) compiles DataFusion
# and delta-rs once. `cargo run --release -- demo` works too, but builds into
# ./target: a second full build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meterline-target}"
exec cargo run --release -p meterline -- demo "$@"
