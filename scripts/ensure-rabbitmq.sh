#!/usr/bin/env bash
# ensure-rabbitmq.sh makes sure a local RabbitMQ broker answers AMQP on
# 127.0.0.1:5672: installs Debian's rabbitmq-server when it is missing, starts
# it (no systemd: init script, then `rabbitmq-server -detached`) and waits until
# it is ready. Idempotent; returns in milliseconds when the broker already runs.
# Enables no plugins; the default guest/guest user works on loopback.
set -euo pipefail

readonly HOST=127.0.0.1
readonly PORT=5672
readonly READY_TIMEOUT_S=90
readonly LOCK_FILE=/tmp/wadispatch-ensure-rabbitmq.lock

log() { printf 'rabbitmq: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# amqp_ready succeeds when the broker on HOST:PORT answers the AMQP 0-9-1
# protocol header with a frame (connection.start). RabbitMQ opens its AMQP
# listener only at the end of boot, so an answer means the node is ready.
amqp_ready() {
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "AMQP\0\0\x09\x01" >&3
		IFS= read -r -d "" -n 1 -t 2 frame <&3 || exit 1
		[[ $frame == $'"'"'\x01'"'"' ]]
	' _ "$HOST" "$PORT" 2>/dev/null
}

# as_root runs a command as root: directly when we are root, else through
# sudo; fails with a clear message when neither is possible.
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@" || sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

wait_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT_S))
	amqp_ready && return 0
	log "waiting up to ${READY_TIMEOUT_S}s for ${HOST}:${PORT}…"
	until amqp_ready; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

if amqp_ready; then
	exit 0
fi

# Serialise concurrent callers (parallel task deps, several shells) so only
# one installs or starts the broker.
if command -v flock >/dev/null 2>&1; then
	{ exec 9>>"$LOCK_FILE"; } 2>/dev/null && flock -w 300 9 || true
	if amqp_ready; then
		log "ready on ${HOST}:${PORT}"
		exit 0
	fi
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
	log "installing rabbitmq-server (apt-get)…"
	command -v apt-get >/dev/null 2>&1 || die "rabbitmq-server is not installed and apt-get is not available; install RabbitMQ yourself"
	as_root apt-get update -qq >&2 || die "apt-get update failed (need root or sudo, and network)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >&2 ||
		die "apt-get install rabbitmq-server failed (need root or sudo, and network)"
	# The package's postinst may already have started the node.
	if amqp_ready; then
		log "ready on ${HOST}:${PORT}"
		exit 0
	fi
fi

log "starting…"
# The init script itself waits for boot (up to 600 s); bound it. Its chatter
# is shown only when it fails.
if ! out=$(as_root timeout $((READY_TIMEOUT_S + 10)) service rabbitmq-server start 2>&1) && ! amqp_ready; then
	[[ -z $out ]] || printf '%s\n' "$out" >&2
	log "service start failed; trying rabbitmq-server -detached…"
	# Debian's wrapper drops to the rabbitmq user when run as root.
	as_root /usr/sbin/rabbitmq-server -detached >&2 || true
fi

wait_ready || die "not ready on ${HOST}:${PORT} after ${READY_TIMEOUT_S}s; see /var/log/rabbitmq/"
log "ready on ${HOST}:${PORT}"
