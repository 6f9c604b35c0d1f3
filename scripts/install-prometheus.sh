#!/usr/bin/env bash
# Ensure Prometheus (Debian 12 package `prometheus`, 2.42; also ships
# `promtool`) is installed, without leaving the packaged service running.
#
# Idempotent and fast: if `prometheus` is already on PATH nothing is
# installed. Needs root (or sudo) only when it has to install.
#
# stdout: ONLY the absolute path of the prometheus binary. Logs go to stderr.
set -euo pipefail

log() { printf '[install-prometheus] %s\n' "$*" >&2; }

find_prom() {
  command -v prometheus 2>/dev/null && return 0
  # /usr/bin is where Debian puts it; be robust to a PATH without it.
  [ -x /usr/bin/prometheus ] && { echo /usr/bin/prometheus; return 0; }
  return 1
}

if prom="$(find_prom)"; then
  printf '%s\n' "$prom"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "not root and no sudo: cannot apt-get install prometheus"; exit 1; }
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive

# Deny service starts from maintainer scripts (invoke-rc.d consults
# /usr/sbin/policy-rc.d; exit 101 = "action forbidden"). Only install our own
# policy if none exists, and remove it afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from otel-rl scripts/install-prometheus.sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 0755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

# Processes named prometheus that exist before the install are not ours to touch.
before="$(pgrep -x prometheus 2>/dev/null | sort || true)"

log "apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
log "apt-get install -y --no-install-recommends prometheus"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus >&2

# Belt and braces: stop any prometheus the package install started anyway
# (only processes that did not exist before the install).
after="$(pgrep -x prometheus 2>/dev/null | sort || true)"
new_pids="$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -v '^$' || true)"
for pid in $new_pids; do
  log "stopping prometheus pid $pid started by the package install"
  $SUDO kill "$pid" 2>/dev/null || true
done
for pid in $new_pids; do
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  $SUDO kill -9 "$pid" 2>/dev/null || true
done

prom="$(find_prom)" || { log "prometheus still not found after install"; exit 1; }
log "$("$prom" --version 2>&1 | head -n1)"
printf '%s\n' "$prom"
