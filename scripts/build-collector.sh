#!/usr/bin/env bash
# Build the otel-rl OpenTelemetry Collector distribution (`otelcol-rl`) from
# Go modules with the OpenTelemetry Collector Builder, using the manifest
# collector/builder-config.yaml.
#
# The binary is cached OUTSIDE the repo, keyed by the manifest's content:
#     ${OTEL_RL_CACHE:-$HOME/.cache/otel-rl}/collector/<sha256[:16]>/otelcol-rl
# If it already exists it is reused at once (no Go needed). Otherwise it is
# built in a temp directory inside the cache dir and moved into place with
# mv (atomic rename on the same filesystem), so an interrupted build never
# leaves a binary that would be reused.
#
# stdout: ONLY the absolute path of the binary. Everything else goes to stderr.
#
# Environment:
#   OTEL_RL_CACHE        cache root (default $HOME/.cache/otel-rl)
#   GO                   go command (default: `go` on PATH, else /usr/local/go/bin/go)
#   OTEL_RL_BUILD_JOBS   parallel build jobs, go build -p (default 2)
#   GOMAXPROCS / GOMEMLIMIT  honoured by the go tool as usual
set -euo pipefail

BUILDER_VERSION="v0.165.0"

log() { printf '[build-collector] %s\n' "$*" >&2; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$repo_root/collector/builder-config.yaml"
[ -f "$manifest" ] || { log "missing $manifest"; exit 1; }

key="$(sha256sum "$manifest" | cut -c1-16)"
cache_root="${OTEL_RL_CACHE:-$HOME/.cache/otel-rl}"
mkdir -p "$cache_root"
cache_root="$(cd "$cache_root" && pwd)"
out_dir="$cache_root/collector/$key"
binary="$out_dir/otelcol-rl"

if [ -x "$binary" ]; then
  printf '%s\n' "$binary"
  exit 0
fi

# --- locate Go ---------------------------------------------------------------
GO="${GO:-}"
if [ -z "$GO" ]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
  else log "Go toolchain not found (need Go >= 1.26)"; exit 1
  fi
fi
log "using $("$GO" version)"
# The builder runs `go` from PATH: give it the same one (GO, or the fallback found above).
PATH="$(dirname "$(command -v "$GO")"):$PATH"
export PATH

# Keep the build gentle on small machines (2 cores): limit parallel packages.
jobs="${OTEL_RL_BUILD_JOBS:-2}"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=$jobs"
# Never let the go command switch toolchains behind our back unless asked.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

# --- install the pinned builder into the cache ---------------------------------
builder_dir="$cache_root/tools/builder-$BUILDER_VERSION"
builder="$builder_dir/builder"
if [ ! -x "$builder" ]; then
  log "installing go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
  mkdir -p "$cache_root/tools"
  tmp_tool="$(mktemp -d "$cache_root/tools/.builder.XXXXXX")"
  GOBIN="$tmp_tool" "$GO" install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2
  mkdir -p "$builder_dir"
  mv -f "$tmp_tool/builder" "$builder"
  rmdir "$tmp_tool" 2>/dev/null || rm -rf "$tmp_tool"
fi

# --- build ---------------------------------------------------------------------
mkdir -p "$cache_root/collector"
# Leftovers of builds that were killed hard (SIGKILL) are never reused; drop
# old ones so they do not pile up.
find "$cache_root/collector" -mindepth 1 -maxdepth 1 -name '.build-*' -mmin +120 \
  -exec rm -rf {} + 2>/dev/null || true
work="$(mktemp -d "$cache_root/collector/.build-$key.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building otelcol-rl (manifest sha256 $key) in $work: 1-3 minutes, cached afterwards"
start=$(date +%s)
# The manifest's dist.output_path is relative (./_build): run from $work.
# The builder strips symbols by default (-ldflags="-s -w") and uses -trimpath.
( cd "$work" && "$builder" --config="$manifest" ) >&2
built="$work/_build/otelcol-rl"
[ -x "$built" ] || { log "builder did not produce $built"; exit 1; }
log "built in $(( $(date +%s) - start ))s ($(du -h "$built" | cut -f1))"

mkdir -p "$out_dir"
# Same filesystem as $out_dir -> rename(2) is atomic.
mv -f "$built" "$binary.tmp.$$"
mv -f "$binary.tmp.$$" "$binary"
printf '%s\n' "$binary"
