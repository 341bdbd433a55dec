#!/usr/bin/env bash
# The whole meterline test suite: formatting, lints, unit, property and end-to-end
# tests, and a build of the benchmarks. Run from anywhere:
#   scripts/test.sh
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/meterline-target) so they are
# reused across checkouts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meterline-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --release --workspace --all-targets -- -D warnings

step "cargo test (unit, property, end-to-end)"
cargo test --release --workspace --all-targets

step "benchmarks compile"
cargo bench --workspace --no-run

echo
echo "all tests passed"
