#!/usr/bin/env bash
# Runs every check and test of the project: set-up, formatting, lints, the
# whole test suite (unit, property, differential against the Xet reference,
# fuzz-corpus replay, real hf_xet client; the S3 store and the node's
# end-to-end tests also against a real Garage server).
#
# CAS_SKIP_GARAGE=1 skips installing and starting Garage; the Garage S3 tests
# then skip themselves. CI always runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cas-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Incremental compilation only costs disk space for a one-shot build.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

./scripts/setup.sh

if [ "${CAS_SKIP_GARAGE:-0}" = 1 ]; then
  echo "== Garage skipped (CAS_SKIP_GARAGE=1): the garage:: S3 tests will skip"
else
  echo "== Garage"
  ./scripts/garage.sh install
  GARAGE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cas-garage.XXXXXX")"
  stop_garage() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -f "$GARAGE_DIR/garage.log" ]; then
      echo "== Garage log (last lines)"
      tail -n 40 "$GARAGE_DIR/garage.log" || true
    fi
    ./scripts/garage.sh stop "$GARAGE_DIR" || true
    rm -rf "$GARAGE_DIR"
    return "$status"
  }
  trap stop_garage EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  garage_env="$(./scripts/garage.sh start "$GARAGE_DIR")"
  eval "$garage_env"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

# As root, the partition and leader-kill scenarios again with each region in its
# own network namespace: the kernel drops the packets of a cut (iptables).
# Built for the whole workspace, as above, so they reuse that build: one
# package alone unifies its dependencies' features differently and would
# build most of them (RocksDB's C++ included) once more, ~16 minutes cold.
if [ "$(id -u)" -eq 0 ] && ip netns add "cas-probe-$$" 2>/dev/null; then
  ip netns delete "cas-probe-$$"
  echo "== cluster scenarios in network namespaces (CAS_CLUSTER_NET=netns)"
  CAS_CLUSTER_NET=netns cargo test --workspace --test netns --locked -- --nocapture
  CAS_CLUSTER_NET=netns cargo test --workspace --test scenarios --locked -- \
    minority_region_partitioned_away_and_healed leader_kill_9_under_load
else
  echo "== cluster scenarios in network namespaces skipped (needs root and ip netns)"
fi
