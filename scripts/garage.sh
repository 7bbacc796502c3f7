#!/usr/bin/env bash
# A single-node Garage S3 server for the S3 integration tests.
#
#   scripts/garage.sh install     install Garage into $CAS_TOOLS_DIR (once; cached)
#   scripts/garage.sh start DIR   start a server whose config and data live in DIR;
#                                 prints `export GARAGE_...=...` lines for eval
#   scripts/garage.sh stop DIR    stop the server started in DIR
#
# CAS_TOOLS_DIR defaults to ~/.cache/cas-tools, outside the clone, so the
# few-minute build happens once per machine.
#
# GARAGE_PROFILE picks the build, for install and start alike:
#   test     (default) a quick build (opt-level 1, ~7 minutes on 2 cores) for
#            the test suites, which need an S3 server that behaves like
#            Garage, not one that is fast;
#   release  the crate's own release profile, as `cargo install garage`
#            builds it for operators (~15 minutes): the benchmarks use it,
#            since the test build spends about twice the CPU per stored
#            byte (MD5 ETags, BLAKE2 block hashes) on the cores it shares.
set -euo pipefail

GARAGE_VERSION=2.5.0
CAS_TOOLS_DIR="${CAS_TOOLS_DIR:-$HOME/.cache/cas-tools}"
GARAGE_PROFILE="${GARAGE_PROFILE:-test}"
case "$GARAGE_PROFILE" in
  test) GARAGE_ROOT="$CAS_TOOLS_DIR" ;;
  release) GARAGE_ROOT="$CAS_TOOLS_DIR/garage-release" ;;
  *) echo "garage.sh: GARAGE_PROFILE must be test or release, not '$GARAGE_PROFILE'" >&2; exit 1 ;;
esac
GARAGE_BIN="$GARAGE_ROOT/bin/garage"

log() { echo "garage.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Whether $GARAGE_BIN is Garage $GARAGE_VERSION (a crates.io build reports
# `garage cargo:2.5.0 [features: ...]`, a git build `garage v2.5.0 ...`).
installed() {
  [ -x "$GARAGE_BIN" ] \
    && "$GARAGE_BIN" --version 2>/dev/null | grep -Eq "(^|[^0-9.])${GARAGE_VERSION//./\\.}([^0-9.-]|\$)"
}

cmd_install() {
  if installed; then
    log "Garage $GARAGE_VERSION ($GARAGE_PROFILE build) already installed at $GARAGE_BIN"
    return 0
  fi
  mkdir -p "$GARAGE_ROOT"
  local started=$SECONDS
  # Its own target dir: the project's build cache stays untouched. Only the
  # features a single-node server needs (LMDB metadata).
  local -a profile=()
  if [ "$GARAGE_PROFILE" = test ]; then
    log "installing Garage $GARAGE_VERSION (test build) into $GARAGE_ROOT (takes ~7 minutes on 2 cores the first time)"
    # A quick release profile: this binary serves tests, not production.
    profile=(
      CARGO_PROFILE_RELEASE_LTO=false
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
      CARGO_PROFILE_RELEASE_OPT_LEVEL=1
      CARGO_PROFILE_RELEASE_DEBUG=0
      CARGO_PROFILE_RELEASE_INCREMENTAL=false
    )
  else
    log "installing Garage $GARAGE_VERSION (release build) into $GARAGE_ROOT (takes ~15 minutes on 2 cores the first time)"
  fi
  env CARGO_TARGET_DIR="$GARAGE_ROOT/target" "${profile[@]}" \
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$GARAGE_ROOT" \
      --no-default-features --features bundled-libs,lmdb
  installed || die "$GARAGE_BIN does not report version $GARAGE_VERSION after install"
  # Only the binary is kept; the build tree is large.
  rm -rf "$GARAGE_ROOT/target"
  log "installed Garage $GARAGE_VERSION ($GARAGE_PROFILE build) in $((SECONDS - started)) s"
}

# Random lowercase hex of $1 bytes.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Three distinct free TCP ports on 127.0.0.1 (the S3, RPC and admin APIs).
free_ports() {
  python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
'
}

# The PID of the server started from DIR ($1), if it still runs.
running_pid() {
  local pid
  [ -f "$1/garage.pid" ] || return 1
  pid="$(cat "$1/garage.pid")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Not another process that reused the PID.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q garage || return 1
  echo "$pid"
}

# HTTP status of GET $1 ("000" when nothing answers).
http_status() {
  curl --silent --output /dev/null --max-time 2 --noproxy '*' --write-out '%{http_code}' "$1" || true
}

cmd_start() {
  local dir="${1:?usage: $0 start DIR}" pid
  installed || die "Garage $GARAGE_VERSION ($GARAGE_PROFILE build) is not installed; run: GARAGE_PROFILE=$GARAGE_PROFILE $0 install"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if pid="$(running_pid "$dir")"; then
    die "a Garage server already runs from $dir (PID $pid); stop it first: $0 stop $dir"
  fi

  # Credentials are generated once per DIR: Garage keeps the key in its
  # metadata and refuses another secret for the same key id on a restart.
  # Key ids are GK + 24 hex digits, secrets 64 hex digits, like Garage's own.
  if [ ! -f "$dir/credentials.env" ]; then
    (
      umask 077
      cat >"$dir/credentials.env" <<EOF
GARAGE_RPC_SECRET=$(random_hex 32)
GARAGE_DEFAULT_ACCESS_KEY=GK$(random_hex 12)
GARAGE_DEFAULT_SECRET_KEY=$(random_hex 32)
GARAGE_DEFAULT_BUCKET=cas-test
EOF
    )
  fi
  # shellcheck disable=SC1091
  . "$dir/credentials.env"

  local s3_port rpc_port admin_port
  read -r s3_port rpc_port admin_port < <(free_ports)
  (
    umask 077
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
# No zstd on blocks: xorbs arrive LZ4/BG4-compressed already, and zstd-1 on
# top cost Garage ~40% of its CPU on uploads of incompressible data. (The
# block size stays at its 1 MiB default: 2 and 4 MiB measured the same, and
# 512 KiB and 8 MiB cost Garage more CPU per GiB uploaded.)
compression_level = "none"

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$GARAGE_RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
EOF
  )

  GARAGE_DEFAULT_ACCESS_KEY="$GARAGE_DEFAULT_ACCESS_KEY" \
  GARAGE_DEFAULT_SECRET_KEY="$GARAGE_DEFAULT_SECRET_KEY" \
  GARAGE_DEFAULT_BUCKET="$GARAGE_DEFAULT_BUCKET" \
  RUST_LOG="${GARAGE_LOG:-warn,garage=info}" \
    nohup "$GARAGE_BIN" -c "$dir/garage.toml" server --single-node --default-bucket \
    </dev/null >"$dir/garage.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/garage.pid"

  # Ready once the cluster reports quorum and the S3 API answers (403 to this
  # unsigned request). The default key and bucket are made before it listens.
  local endpoint="http://127.0.0.1:$s3_port"
  local timeout="${GARAGE_START_TIMEOUT:-60}"
  local deadline=$((SECONDS + timeout))
  until [ "$(http_status "http://127.0.0.1:$admin_port/health")" = 200 ] \
     && [ "$(http_status "$endpoint/")" != 000 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/garage.log" >&2 || true
      die "Garage exited during start-up (log: $dir/garage.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$dir/garage.log" >&2 || true
      cmd_stop "$dir" || true
      die "Garage did not answer on $endpoint within $timeout s (log: $dir/garage.log)"
    fi
    sleep 0.2
  done
  log "Garage $GARAGE_VERSION ($GARAGE_PROFILE build) serves S3 on $endpoint (PID $pid, log: $dir/garage.log)"

  echo "export GARAGE_ENDPOINT=$endpoint"
  echo "export GARAGE_REGION=garage"
  echo "export GARAGE_DEFAULT_ACCESS_KEY=$GARAGE_DEFAULT_ACCESS_KEY"
  echo "export GARAGE_DEFAULT_SECRET_KEY=$GARAGE_DEFAULT_SECRET_KEY"
  echo "export GARAGE_DEFAULT_BUCKET=$GARAGE_DEFAULT_BUCKET"
  echo "export GARAGE_SERVER_PID=$pid"
}

cmd_stop() {
  local dir="${1:?usage: $0 stop DIR}" pid
  if ! pid="$(running_pid "$dir")"; then
    rm -f "$dir/garage.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "Garage (PID $pid) ignored SIGTERM for 20 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$dir/garage.pid"
  log "stopped Garage (PID $pid)"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
