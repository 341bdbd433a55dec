#!/usr/bin/env bash
# The whole meterline test suite: formatting, lints, unit, property, mock-cluster
# and real-infrastructure end-to-end tests, and a build of the benchmarks.
# Run from anywhere:
#   scripts/test.sh
#
# Needs the Rust toolchain and Python 3 (with venv/pip). The first run installs the
# test tools into ~/.cache/meterline-tools (override with METERLINE_TOOLS) and
# reuses them afterwards:
#   - tansu, a Kafka-protocol broker (cargo install once, in the background while
#     the workspace builds; its log is in the tools directory);
#   - moto_server, an S3 API server (pip, in a virtualenv);
#   - psycopg and PyJWT (pip, the same virtualenv), the SQL server's test client,
#     and DuckDB (pip), which the sql_server bench compares the server with;
#   - check-jsonschema and kubernetes-validate (pip, the same virtualenv), which
#     validate deploy/ offline (scripts/check-deploy.sh);
#   - stunnel4, openssl and psql (apt-get, when missing), for the tests over TLS,
#     and prometheus (promtool: the alert rules' unit tests; the live-Prometheus test).
# Each end-to-end test starts its own broker and S3 server on free loopback ports
# (so a test can freeze them without disturbing others) and stops them when it
# ends; this script also stops any that a killed test run left behind.
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/meterline-target) so they are
# reused across checkouts, and shared with scripts/demo.sh.
#
# The tests that depend on the calendar (key epochs, retention, deadlines) read
# "now" from METERLINE_FAKE_NOW when it is set. After the whole suite, this script
# runs them again with "now" moved to each moment in METERLINE_TEST_MOMENTS
# (space-separated RFC 3339 instants; default: a month and year start at 00:30 and
# a leap day at 23:30, Oslo time). To run only those tests, at the eight moments
# of the hardening issue (or at the moments you give):
#   scripts/test.sh --dates [MOMENT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meterline-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TOOLS="${METERLINE_TOOLS:-$HOME/.cache/meterline-tools}"
TANSU_VERSION="0.6.0"
MOTO_VERSION="5.2.1"
# The SQL server's clients: psycopg (with its binary libpq) and PyJWT (tokens made
# by an implementation independent of meterline's), in the same virtualenv.
PSYCOPG_VERSION="3.2.13"
PYJWT_VERSION="2.10.1"
# DuckDB reads the lake's Parquet files in the sql_server bench (in test mode here:
# the server's answers must equal DuckDB's).
DUCKDB_VERSION="1.4.2"
# deploy/ validated offline: the compose file against its schema, the manifests.
CHECK_JSONSCHEMA_VERSION="0.39.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"

# Each step prints the time since the script started, so a run's log shows
# where its time went (the README's CI figures come from these lines).
step() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

DATES_ONLY=0
MOMENTS="${METERLINE_TEST_MOMENTS:-2027-01-01T00:30:00+01:00 2028-02-29T23:30:00+01:00}"
if [ "${1:-}" = "--dates" ]; then
    DATES_ONLY=1
    shift
    if [ $# -gt 0 ]; then
        MOMENTS="$*"
    else
        MOMENTS=""
        for day in 2026-12-01 2027-01-01 2027-03-01 2028-02-29; do
            MOMENTS="$MOMENTS ${day}T00:30:00+01:00 ${day}T23:30:00+01:00"
        done
    fi
elif [ $# -gt 0 ]; then
    echo "usage: scripts/test.sh [--dates [MOMENT ...]]" >&2
    exit 2
fi

# Servers started by this run's tests carry this id in their environment.
export METERLINE_TESTKIT_RUN="run-$$-$RANDOM"
cleanup() {
    if [ -n "${TANSU_BUILD_PID:-}" ]; then
        kill "$TANSU_BUILD_PID" 2>/dev/null || true
    fi
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

# The background tansu build (see "test tools" below) must have finished before
# any test runs; a failed build stops the run with the end of its log.
await_tansu() {
    [ -n "$TANSU_BUILD_PID" ] || return 0
    step "waiting for the tansu build to finish"
    if ! wait "$TANSU_BUILD_PID"; then
        tail -n 40 "$TANSU_LOG" >&2
        echo "building tansu failed (whole log: $TANSU_LOG)" >&2
        TANSU_BUILD_PID=""
        exit 1
    fi
    TANSU_BUILD_PID=""
    tail -n 2 "$TANSU_LOG"
    rm -rf "$TOOLS/tansu-build"
}

step "test tools (cached in $TOOLS)"
TANSU_BUILD_PID=""
TANSU_LOG="$TOOLS/tansu-install.log"
if [ -z "${METERLINE_TANSU:-}" ]; then
    # The SQLite storage engine (libsql): see meterline::dev::testkit::Broker for why
    # not the in-memory one.
    TANSU_ROOT="$TOOLS/tansu-$TANSU_VERSION-libsql"
    if ! "$TANSU_ROOT/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        # Built in the background, in its own target directory, while the workspace
        # builds: a cold build of DataFusion and delta-rs leaves one of two cores
        # idle for long stretches (one large crate at a time, its front end on one
        # thread). Optimization level 1 is plenty for a test broker and compiles in
        # about half the time. The tests wait for it (await_tansu).
        mkdir -p "$TOOLS"
        echo "building tansu $TANSU_VERSION in the background (once; log: $TANSU_LOG)"
        CARGO_TARGET_DIR="$TOOLS/tansu-build" CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
            cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
            --root "$TANSU_ROOT" >"$TANSU_LOG" 2>&1 &
        TANSU_BUILD_PID=$!
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
if [ -z "${METERLINE_PYTHON:-}" ]; then
    if ! "$TOOLS/venv/bin/python" -c "
import psycopg, jwt, duckdb
assert psycopg.__version__ == '$PSYCOPG_VERSION' and jwt.__version__ == '$PYJWT_VERSION'
assert duckdb.__version__ == '$DUCKDB_VERSION'
" 2>/dev/null; then
        echo "installing psycopg $PSYCOPG_VERSION, PyJWT $PYJWT_VERSION and DuckDB $DUCKDB_VERSION into $TOOLS/venv"
        [ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
            "psycopg[binary]==$PSYCOPG_VERSION" "PyJWT[crypto]==$PYJWT_VERSION" \
            "duckdb==$DUCKDB_VERSION"
    fi
    export METERLINE_PYTHON="$TOOLS/venv/bin/python"
fi
if ! "$METERLINE_PYTHON" -c "
from importlib.metadata import version
assert version('check-jsonschema') == '$CHECK_JSONSCHEMA_VERSION'
assert version('kubernetes-validate') == '$KUBERNETES_VALIDATE_VERSION'
" 2>/dev/null; then
    echo "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION next to $METERLINE_PYTHON"
    "$(dirname "$METERLINE_PYTHON")/pip" install --quiet --disable-pip-version-check \
        "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
# stunnel, the TLS terminator in front of the broker of the TLS test, and openssl,
# which makes that test's CA: Debian packages (apt-get, as root or with sudo).
if { [ -z "${METERLINE_STUNNEL:-}" ] && ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; } \
    || ! command -v openssl >/dev/null || ! command -v psql >/dev/null \
    || ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "installing stunnel4, openssl, postgresql-client and prometheus (apt-get)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stunnel4 openssl postgresql-client prometheus >/dev/null
fi
# The Debian package starts a Prometheus service where systemd runs; the tests start
# their own on free ports and need nothing of it.
export METERLINE_PROMETHEUS="${METERLINE_PROMETHEUS:-$(command -v prometheus)}"
echo "tansu:       $METERLINE_TANSU"
echo "moto_server: $METERLINE_MOTO_SERVER"
echo "python:      $METERLINE_PYTHON (psycopg, PyJWT, DuckDB)"

# The tests that read the calendar, by name. One cargo invocation with the same
# feature set as the whole suite, so nothing is compiled again for them.
date_tests() {
    local moment="$1"
    step "date-dependent tests with now = $moment"
    METERLINE_FAKE_NOW="$moment" cargo test --release --workspace \
        --lib --test calendar --test it --test faults -- \
        epochs_and_retention clock dlq:: \
        epochs:: privacy::no_raw consent:: lifecycle:: export:: privacy::upgrades orphans:: dead_letter_keys::
}

# Clippy lints the workspace's own crates while the test build compiles them.
# `cargo clippy` would check every dependency a second time (a check build of
# DataFusion and delta-rs, about 20 minutes on 2 cores); instead the build runs
# clippy-driver as the workspace wrapper, which is how `cargo clippy` itself drives
# it (RUSTC_WORKSPACE_WRAPPER, lint flags in CLIPPY_ARGS): dependencies are built
# once, by rustc, and every workspace target is linted with warnings as errors.
# The same environment for the test run and the bench build keeps one fingerprint.
export RUSTC_WORKSPACE_WRAPPER="${RUSTC_WORKSPACE_WRAPPER:-$(rustc --print sysroot)/bin/clippy-driver}"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

if [ "$DATES_ONLY" = 1 ]; then
    await_tansu
    for moment in $MOMENTS; do
        date_tests "$moment"
    done
    echo
    echo "date-dependent tests passed at:$(printf ' %s' $MOMENTS)"
    exit 0
fi

# Test and bench executables of earlier builds pile up in the target directory
# (each links DataFusion and delta-rs: 100-400 MB; a busy week of builds filled a
# disk with 37 GB of them). Of each name, the newest stays, and so does any built
# in the last day (the test and bench builds of one target differ in name hash).
prune_stale_executables() {
    local deps="$CARGO_TARGET_DIR/release/deps"
    [ -d "$deps" ] || return 0
    find "$deps" -maxdepth 1 -type f -executable -size +50M -printf '%T@ %f\n' |
        sort -rn |
        awk '{ name = $2; sub(/-[0-9a-f]+$/, "", name); if (seen[name]++) print $2 }' |
        while read -r f; do
            find "$deps/$f" -mmin +1440 -delete
        done
}
prune_stale_executables

step "cargo fmt --check"
cargo fmt --all -- --check

step "deploy/: alert rules and their tests, dashboard, compose and Kubernetes files"
scripts/check-deploy.sh

step "build with clippy (all targets, warnings are errors)"
# --timings writes where the build's time went to cargo-timings/ in the target dir.
cargo test --release --workspace --all-targets --no-run --timings
await_tansu

step "cargo test (unit, property, mock-cluster and real broker + S3 end-to-end)"
cargo test --release --workspace --all-targets

step "benchmarks compile"
cargo bench --workspace --no-run

for moment in $MOMENTS; do
    date_tests "$moment"
done

echo
echo "all tests passed in $((SECONDS / 60))m$((SECONDS % 60))s"
