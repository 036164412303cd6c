#!/usr/bin/env bash
# Checks wadispatch's monitoring files: the Grafana dashboard
# (deploy/grafana), the Prometheus alerts and their unit tests
# (deploy/prometheus), with the Go module deploy/check/observability and
# promtool. Exits non-zero on any failure.
#
# promtool and the Prometheus server (which runs the dashboard's and the
# alerts' queries on synthetic series, on the loopback) come from Debian's
# prometheus package, unpacked (not installed) into a cache folder the
# first time:
#   $WADISPATCH_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/wadispatch)/prometheus
# Set PROMTOOL and PROMETHEUS to use others.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/deploy/check/observability"
export GOWORK=off

cache="${WADISPATCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wadispatch}"

log() { printf '== [%3ds] %s\n' "$SECONDS" "$*" >&2; }

tmp=""
trap 'if [ -n "$tmp" ]; then rm -rf "$tmp"; fi' EXIT

# fetch_prometheus unpacks promtool and prometheus from Debian's
# prometheus package into $cache/prometheus.
fetch_prometheus() {
	local dest="$cache/prometheus" apt_opts=()
	tmp="$(mktemp -d)"
	# As root, apt downloads as the _apt user, who cannot write to a
	# private temporary folder; let it download as root instead.
	if [ "$(id -u)" = 0 ]; then
		apt_opts=(-o APT::Sandbox::User=root)
	fi
	log "fetching promtool and prometheus: apt-get download prometheus"
	if ! (cd "$tmp" && apt-get download -q "${apt_opts[@]}" prometheus >&2); then
		if [ "$(id -u)" != 0 ]; then
			echo "apt-get download prometheus failed; run 'apt-get update' as root, or set PROMTOOL and PROMETHEUS" >&2
			return 1
		fi
		log "apt-get update, then again"
		apt-get update -q >&2
		(cd "$tmp" && apt-get download -q "${apt_opts[@]}" prometheus >&2)
	fi
	local deb
	deb="$(ls "$tmp"/prometheus_*.deb)"
	dpkg-deb -x "$deb" "$tmp/x"
	mkdir -p "$dest"
	# Both are statically linked: nothing else of the package is needed.
	local bin
	for bin in promtool prometheus; do
		cp "$tmp/x/usr/bin/$bin" "$dest/$bin.new"
		mv "$dest/$bin.new" "$dest/$bin"
	done
	basename "$deb" >"$dest/package"
}

if [ -z "${PROMTOOL:-}" ] || [ -z "${PROMETHEUS:-}" ]; then
	if ! "$cache/prometheus/promtool" --version >/dev/null 2>&1 ||
		! "$cache/prometheus/prometheus" --version >/dev/null 2>&1; then
		fetch_prometheus
	fi
	PROMTOOL="${PROMTOOL:-$cache/prometheus/promtool}"
	PROMETHEUS="${PROMETHEUS:-$cache/prometheus/prometheus}"
fi
"$PROMTOOL" --version 2>&1 | head -1 >&2
"$PROMETHEUS" --version 2>&1 | head -1 >&2
export PROMTOOL PROMETHEUS OBSERVABILITY_REQUIRE_PROMTOOL=1

cd "$module"
log "gofmt"
unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
	echo "not gofmt-ed: $unformatted" >&2
	exit 1
fi
log "go vet"
go vet ./...
log "go test (dashboard, alerts, promtool check rules / test rules, queries on a fleet, metric list)"
go test -count=1 ./...
log "done"
