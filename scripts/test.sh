#!/usr/bin/env bash
# The whole meterline test suite: formatting, lints, unit, property, mock-cluster
# and real-infrastructure end-to-end tests, and a build of the benchmarks.
# Run from anywhere:
#   scripts/test.sh
#
# Needs the Rust toolchain and Python 3 (with venv/pip). The first run installs the
# test tools into ~/.cache/meterline-tools (override with METERLINE_TOOLS) and
# reuses them afterwards:
#   - tansu, a Kafka-protocol broker (cargo install, about 10 minutes once);
#   - moto_server, an S3 API server (pip, in a virtualenv).
# Each end-to-end test starts its own broker and S3 server on free loopback ports
# (so a test can freeze them without disturbing others) and stops them when it
# ends; this script also stops any that a killed test run left behind.
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/meterline-target) so they are
# reused across checkouts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meterline-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TOOLS="${METERLINE_TOOLS:-$HOME/.cache/meterline-tools}"
TANSU_VERSION="0.6.0"
MOTO_VERSION="5.2.1"

step() { printf '\n== %s\n' "$*"; }

# Servers started by this run's tests carry this id in their environment.
export METERLINE_TESTKIT_RUN="run-$$-$RANDOM"
cleanup() {
    for env in /proc/[0-9]*/environ; do
        if grep -qz "^METERLINE_TESTKIT_RUN=$METERLINE_TESTKIT_RUN\$" "$env" 2>/dev/null; then
            pid="${env#/proc/}"
            pid="${pid%/environ}"
            kill -CONT "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT

step "test tools (cached in $TOOLS)"
if [ -z "${METERLINE_TANSU:-}" ]; then
    # The SQLite storage engine (libsql): see meterline::testkit::Broker for why
    # not the in-memory one.
    TANSU_ROOT="$TOOLS/tansu-$TANSU_VERSION-libsql"
    if ! "$TANSU_ROOT/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        echo "installing tansu $TANSU_VERSION (once; about 15 minutes on 2 cores)"
        cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
            --root "$TANSU_ROOT"
    fi
    export METERLINE_TANSU="$TANSU_ROOT/bin/tansu"
fi
if [ -z "${METERLINE_MOTO_SERVER:-}" ]; then
    if ! "$TOOLS/venv/bin/python" -c "import moto; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
        echo "installing moto[server] $MOTO_VERSION into $TOOLS/venv"
        python3 -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
            "moto[server]==$MOTO_VERSION"
    fi
    export METERLINE_MOTO_SERVER="$TOOLS/venv/bin/moto_server"
fi
echo "tansu:       $METERLINE_TANSU"
echo "moto_server: $METERLINE_MOTO_SERVER"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --release --workspace --all-targets -- -D warnings

step "cargo test (unit, property, mock-cluster and real broker + S3 end-to-end)"
cargo test --release --workspace --all-targets

step "benchmarks compile"
cargo bench --workspace --no-run

echo
echo "all tests passed"
