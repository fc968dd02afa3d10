#!/usr/bin/env bash
# System packages the test stack needs beyond what the machine image ships: Debian's redis-server and age, and the
# PostgreSQL 15 server binaries and Go toolchain it checks for, and systemd-analyze (Debian's systemd package) that
# checks the example units. Idempotent and quick when everything is there: installs only what is missing.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v age >/dev/null 2>&1 || missing+=(age)  # tests check that the standard age tool decrypts a snapshot
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# tests/playbooks/test_deployment_checks.py: `systemd-analyze verify` and `security --offline=true` (systemd >= 252)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}; install them (apt-get install ${missing[*]}) and re-run" >&2
    exit 1
  fi
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  echo "the Go toolchain is needed to build the MinIO, mc and Weaviate test servers (or point DRTOOL_TEST_* at running ones)" >&2
  exit 1
fi
