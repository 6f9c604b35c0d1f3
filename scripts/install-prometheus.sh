#!/usr/bin/env bash
# Ensure Prometheus (Debian 12 package `prometheus`, 2.42; also ships
# `promtool`) and Alertmanager (`prometheus-alertmanager`, 0.25; ships `amtool`)
# are installed, without leaving the packaged services running.
#
# Idempotent and fast: if both are already on PATH nothing is installed.
# Needs root (or sudo) only when it has to install.
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

find_alertmanager() {
  command -v prometheus-alertmanager 2>/dev/null && return 0
  command -v alertmanager 2>/dev/null && return 0
  [ -x /usr/bin/prometheus-alertmanager ] && { echo /usr/bin/prometheus-alertmanager; return 0; }
  return 1
}

packages=()
find_prom >/dev/null || packages+=(prometheus)
{ find_alertmanager >/dev/null && command -v amtool >/dev/null 2>&1; } || packages+=(prometheus-alertmanager)
if [ "${#packages[@]}" -eq 0 ]; then
  find_prom
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

# Processes of these binaries that exist before the install are not ours to touch.
running() { { pgrep -x prometheus; pgrep -f '^/usr/bin/prometheus-alertmanager( |$)'; } 2>/dev/null | sort || true; }
before="$(running)"

log "apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
log "apt-get install -y --no-install-recommends ${packages[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${packages[@]}" >&2

# Belt and braces: stop any service the package install started anyway (it
# would hold 9090, 9093 and 9094), only processes that did not exist before.
after="$(running)"
new_pids="$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -v '^$' || true)"
for pid in $new_pids; do
  log "stopping pid $pid ($(ps -o comm= -p "$pid" 2>/dev/null)) started by the package install"
  $SUDO kill "$pid" 2>/dev/null || true
done
for pid in $new_pids; do
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  $SUDO kill -9 "$pid" 2>/dev/null || true
done

prom="$(find_prom)" || { log "prometheus still not found after install"; exit 1; }
alertmanager="$(find_alertmanager)" || { log "alertmanager still not found after install"; exit 1; }
log "$("$prom" --version 2>&1 | head -n1)"
log "$("$alertmanager" --version 2>&1 | head -n1)"
printf '%s\n' "$prom"
