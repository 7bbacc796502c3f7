#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine:
# system packages (C toolchain pieces for -sys crates, which also build
# Garage for the S3 tests; curl for its readiness check) and the Python
# packages of the real-client compatibility tests; iproute2 and iptables for
# the cluster scenarios in network namespaces (run as root). Idempotent and
# quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential pkg-config cmake clang libclang-dev python3 python3-pip curl
  iproute2 iptables)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import hf_xet, sys; sys.exit(hf_xet.__name__ != "hf_xet")' >/dev/null 2>&1 \
   || ! python3 -m pip show hf_xet 2>/dev/null | grep -qx 'Version: 1.8.0'; then
  echo "setup: installing Python test requirements"
  python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r requirements-test.txt
fi
