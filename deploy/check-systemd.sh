#!/usr/bin/env bash
# check-systemd.sh checks deploy/systemd/wadispatch.service on a machine whose
# PID 1 is not systemd (parts 1-3 need no running systemd; part 4 boots one
# in a throwaway systemd-nspawn container):
#
#   1. the unit's contract with the worker, read from the file: ExecStart runs
#      /usr/local/bin/wadispatch run, ExecReload sends SIGHUP to $MAINPID,
#      EnvironmentFile=-/etc/wadispatch/wadispatch.env (optional), Restart=
#      on-failure with RestartPreventExitStatus=2 (a configuration error is
#      not restarted in a loop), DynamicUser=yes, tokens by LoadCredential=,
#      and TimeoutStopSec >= SHUTDOWN_TIMEOUT + 5s, SHUTDOWN_TIMEOUT taken
#      from deploy/systemd/wadispatch.env (25s, the worker's default, if unset);
#      the example env file sets only settings `wadispatch run` knows;
#   2. `systemd-analyze verify` accepts it with no message at all (verify
#      exits 0 on unknown keys and unparsable values, so any output fails).
#      verify needs ExecStart's binary: the unit is installed, unchanged, into
#      a temporary root (--root) with the freshly built binary at
#      /usr/local/bin/wadispatch, /bin/kill and the host's systemd units;
#   3. `systemd-analyze security --offline=yes` rates its exposure at most
#      MAX_EXPOSURE (default 1.5 on systemd's 0-10 scale, 0 fully confined,
#      10 unprotected; systemd names 0.1-0.9 "SAFE" and 1.0-4.9 "OK"; this
#      unit scores 1.1, so 1.5 leaves room for one small loosening and fails
#      on anything like dropping PrivateDevices or ProtectSystem), and, whatever the
#      total, every setting it assesses is in force (✓) except the few in
#      allowed_open below, each with its reason.
#
#   4. (BOOT=1, the default) the unit runs for real: see section 4 below
#      and deploy/systemd/boot-check.sh.
#
# Installs systemd (and for 4, systemd-container) with apt-get when missing.
# Prints the score.
# Usage: deploy/check-systemd.sh. Environment: MAX_EXPOSURE (1.5), BOOT=0 skips
# part 4, BOOT_BROKER=0 runs part 4 without a broker, KEEP=1 keeps the temp root.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
unit_src="$repo/deploy/systemd/wadispatch.service"
env_src="$repo/deploy/systemd/wadispatch.env"
max_exposure="${MAX_EXPOSURE:-1.5}"
start_s=$SECONDS

say() { printf 'check-systemd: %s\n' "$*"; }
ok() { printf 'check-systemd: ok: %s\n' "$*"; }
fail() {
	printf 'check-systemd: FAIL: %s\n' "$*" >&2
	exit 1
}

# shellcheck source=check/need.sh
source "$repo/deploy/check/need.sh"
need systemd-analyze systemd
need jq jq
say "$(systemd-analyze --version | head -1)"

tmp="$(mktemp -d /tmp/wadispatch-check-systemd.XXXXXX)"
cleanup() {
	local rc=$?
	if [[ ${KEEP:-} == 1 ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
	say "took $((SECONDS - start_s))s"
	exit "$rc"
}
trap cleanup EXIT

# value KEY: the unit's last assignment of KEY in [Service] (the one in force
# for single-valued settings); all KEY: every assignment.
value() { sed -n '/^\[Service\]/,/^\[/p' "$unit_src" | grep -E "^$1=" | tail -1 | cut -d= -f2- || true; }
all() { sed -n '/^\[Service\]/,/^\[/p' "$unit_src" | grep -E "^$1=" | cut -d= -f2- || true; }
expect() { # expect KEY WANT
	local got
	got="$(value "$1")"
	[[ $got == "$2" ]] || fail "$1=$got, want $1=$2"
	ok "$1=$got"
}
usec() { # usec TIMESPAN: microseconds, as systemd parses a time span
	systemd-analyze timespan "$1" 2>/dev/null | sed -n 's/^ *μs: *//p'
}

# 1. The contract with the worker.
expect Type exec
expect ExecStart "/usr/local/bin/wadispatch run"
# shellcheck disable=SC2016 # $MAINPID is literal: systemd expands it
expect ExecReload '/bin/kill -HUP $MAINPID'
expect EnvironmentFile "-/etc/wadispatch/wadispatch.env"
expect Restart on-failure
expect RestartPreventExitStatus 2
expect DynamicUser yes
all LoadCredential | grep -q '^token:/etc/wadispatch/credentials$' ||
	fail "no LoadCredential=token:/etc/wadispatch/credentials"
ok "LoadCredential=$(all LoadCredential | paste -sd' ')"
grep -q '/run/credentials/wadispatch.service/token_' "$unit_src" ||
	fail "the unit's comments no longer tell where the credentials appear"

# The hardening, as written (systemd-analyze security below rates the effect;
# some settings are implied by others there, e.g. NoNewPrivileges by
# SystemCallFilter, so they are asserted here as well).
hardening=(
	NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes
	ProtectKernelTunables=yes ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes
	"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" RestrictNamespaces=yes LockPersonality=yes
	MemoryDenyWriteExecute=yes SystemCallFilter=@system-service SystemCallArchitectures=native
	CapabilityBoundingSet= AmbientCapabilities= UMask=0077 ReadOnlyPaths=/etc/wadispatch
)
for kv in "${hardening[@]}"; do
	all "${kv%%=*}" | grep -qxF -- "${kv#*=}" || fail "the unit lacks $kv"
done
ok "hardening as written: ${#hardening[@]} settings"

shutdown="$(sed -n 's/^SHUTDOWN_TIMEOUT=//p' "$env_src" | tail -1)"
shutdown="${shutdown:-25s}"
stop="$(value TimeoutStopSec)"
[[ -n $stop ]] || fail "no TimeoutStopSec= (systemd's default 90s is not tied to SHUTDOWN_TIMEOUT)"
stop_us="$(usec "$stop")"
shutdown_us="$(usec "$shutdown")"
[[ -n $stop_us && -n $shutdown_us ]] || fail "cannot parse TimeoutStopSec=$stop or SHUTDOWN_TIMEOUT=$shutdown"
((stop_us >= shutdown_us + 5000000)) || fail "TimeoutStopSec=$stop < SHUTDOWN_TIMEOUT=$shutdown + 5s"
ok "TimeoutStopSec=$stop >= SHUTDOWN_TIMEOUT=$shutdown (wadispatch.env) + 5s"

# 2. systemd-analyze verify, on the unit as it is, in a temporary root.
t=$SECONDS
root="$tmp/root"
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/etc/wadispatch/credentials"
(cd "$repo" && CGO_ENABLED=0 GOWORK=off go build -trimpath \
	-ldflags "-s -w -X main.version=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)" \
	-o "$root/usr/local/bin/wadispatch" ./cmd/wadispatch) || fail "go build ./cmd/wadispatch"
ok "binary built in $((SECONDS - t))s"
# Every setting in the example env file is one `wadispatch run` knows.
help="$("$root/usr/local/bin/wadispatch" run --help 2>&1)" || fail "wadispatch run --help"
while IFS= read -r key; do
	grep -q "env $key," <<<"$help" || fail "wadispatch.env sets $key, which is not a setting of wadispatch run"
done < <(sed -nE 's/^#?([A-Z][A-Z0-9_]*)=.*/\1/p' "$env_src")
ok "wadispatch.env: $(sed -nE 's/^([A-Z][A-Z0-9_]*)=.*/\1/p' "$env_src" | paste -sd' ') (and the commented ones) are settings of wadispatch run"
for kv in $(all Environment); do
	grep -q "env ${kv%%=*}," <<<"$help" || fail "the unit sets Environment=$kv, which is not a setting of wadispatch run"
done

cp /bin/kill "$root/bin/kill"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
install -m 0644 "$unit_src" "$root/etc/systemd/system/wadispatch.service"
install -m 0600 "$env_src" "$root/etc/wadispatch/wadispatch.env"
out="$(systemd-analyze verify --man=no --root="$root" wadispatch.service 2>&1)" || fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify printed messages (it exits 0 on unknown keys; none are allowed):
$out"
ok "systemd-analyze verify: no messages"
# The same verify must fail when the binary is missing, so the one above
# really looked at ExecStart.
mv "$root/usr/local/bin/wadispatch" "$tmp/wadispatch.aside"
if systemd-analyze verify --man=no --root="$root" wadispatch.service >/dev/null 2>&1; then
	fail "systemd-analyze verify passes without the ExecStart binary: the check proves nothing"
fi
mv "$tmp/wadispatch.aside" "$root/usr/local/bin/wadispatch"
ok "systemd-analyze verify fails without /usr/local/bin/wadispatch (so it checked ExecStart)"

# 3. systemd-analyze security.
systemd-analyze security --offline=yes --root="$root" --no-pager wadispatch.service >"$tmp/security.txt" 2>&1 ||
	{ cat "$tmp/security.txt" >&2; fail "systemd-analyze security"; }
systemd-analyze security --offline=yes --root="$root" --json=short wadispatch.service >"$tmp/security.json" 2>&1 ||
	{ cat "$tmp/security.json" >&2; fail "systemd-analyze security --json"; }
score="$(sed -n 's/.*Overall exposure level for wadispatch.service: \([0-9.]*\).*/\1/p' "$tmp/security.txt")"
[[ -n $score ]] || { cat "$tmp/security.txt" >&2; fail "no exposure level in systemd-analyze security's output"; }
say "systemd-analyze security: exposure $score (0 = fully confined, 10 = unprotected); settings that still cost:"
grep -E '^✗' "$tmp/security.txt" | sed 's/  */ /g; s/^/check-systemd:   /'
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s + 0 <= m + 0) }' ||
	fail "exposure $score > MAX_EXPOSURE $max_exposure"
ok "exposure $score <= $max_exposure"

# Every row of the assessment is in force (✓) but these, which a network
# worker cannot give up or which need a deployment's own values:
allowed_open=(
	PrivateNetwork                      # it talks to the broker and to Meta
	RestrictAddressFamilies_AF_INET_INET6 # the same
	RestrictAddressFamilies_AF_UNIX     # kept for logging and local sockets
	IPAddressDeny                       # the broker's and Meta's addresses are the deployment's
	RootDirectoryOrRootImage            # a static binary gains little from a root of its own
	DeviceAllow                         # ProtectClock=yes itself adds char-rtc:r
)
open_rows="$(jq -r '.[] | select(.set != true) | .json_field' "$tmp/security.json")"
rows="$(jq -r 'length' "$tmp/security.json")"
for f in $open_rows; do
	printf '%s\n' "${allowed_open[@]}" | grep -qx -- "$f" ||
		fail "security: $f is not in force, and is not one of the allowed: ${allowed_open[*]}"
done
for f in NoNewPrivileges UserOrDynamicUser ProtectSystem ProtectHome PrivateTmp PrivateDevices \
	ProtectKernelTunables ProtectKernelModules ProtectControlGroups RestrictNamespaces_user \
	LockPersonality MemoryDenyWriteExecute SystemCallArchitectures SystemCallFilter_privileged \
	CapabilityBoundingSet_CAP_SYS_ADMIN AmbientCapabilities UMask; do
	[[ $(jq -r --arg f "$f" '[.[] | select(.json_field == $f)][0].set' "$tmp/security.json") == true ]] ||
		fail "security: $f is not in force (or no longer assessed)"
done
ok "security: $((rows - $(wc -w <<<"$open_rows"))) of $rows settings in force; open: $(paste -sd' ' <<<"$open_rows") (all allowed)"

# 4. The unit for real (BOOT=1, the default; BOOT=0 skips): systemd-nspawn
# boots this machine's own systemd as PID 1 in a throwaway container (its
# /usr read-only, a copy of /etc, empty /var, a private network with only
# loopback) with the unit installed unchanged, and deploy/systemd/
# boot-check.sh drives it there: start, the process's identity and sandbox
# (dynamic uid, no capabilities, no_new_privs, seccomp), the credential,
# /metrics (LimitNOFILE, /proc access), readiness with the machine's own
# rabbitmq-server started inside the container when it is installed, reload
# (SIGHUP -> config_reloaded), graceful stop (exit 0), a SIGKILL restarted,
# and a configuration error (exit 2) not restarted.
if [[ ${BOOT:-1} == 1 ]]; then
	t=$SECONDS
	if ! command -v systemd-nspawn >/dev/null 2>&1; then
		say "systemd-nspawn is missing: apt-get install -y systemd-container"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq systemd-container >/tmp/wadispatch-apt-systemd-container.log 2>&1 ||
			{ apt-get update -qq >>/tmp/wadispatch-apt-systemd-container.log 2>&1 &&
				apt-get install -y -qq systemd-container >>/tmp/wadispatch-apt-systemd-container.log 2>&1; } ||
			{ tail -20 /tmp/wadispatch-apt-systemd-container.log >&2; fail "could not install systemd-container"; }
	fi
	boot="$tmp/boot"
	broot="$boot/root"
	mkdir -p "$boot/localbin" "$boot/results" "$boot/wdtest" "$boot/etc-wadispatch/credentials"
	mkdir -p "$broot"/{usr,var,tmp,run,root,wdtest,wdtest-results}
	chmod 1777 "$broot/tmp"
	for l in bin lib lib64 sbin; do [[ -L /$l ]] && ln -s "usr/$l" "$broot/$l"; done
	cp -a /etc "$broot/etc"
	rm -f "$broot/etc/os-release" && cp /usr/lib/os-release "$broot/etc/os-release"
	rm -rf "$broot/etc/systemd/system/multi-user.target.wants" "$broot/etc/systemd/system/wadispatch.service.d"
	echo wdtest >"$broot/etc/hostname"
	install -m 0644 "$unit_src" "$broot/etc/systemd/system/wadispatch.service"
	cat >"$broot/etc/systemd/system/wdtest.target" <<-'UNIT'
		[Unit]
		Description=check-systemd: boot-check of wadispatch.service
		Requires=basic.target wdtest.service
		After=basic.target
	UNIT
	cat >"$broot/etc/systemd/system/wdtest.service" <<-'UNIT'
		[Unit]
		Description=check-systemd: run deploy/systemd/boot-check.sh
		After=basic.target
		[Service]
		Type=oneshot
		ExecStart=/bin/bash /wdtest/boot-check.sh
	UNIT
	cp "$root/usr/local/bin/wadispatch" "$boot/localbin/wadispatch"
	cp "$repo/deploy/systemd/boot-check.sh" "$boot/wdtest/boot-check.sh"
	with_broker=0
	if [[ ${BOOT_BROKER:-1} == 1 && -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] && getent passwd rabbitmq >/dev/null; then
		with_broker=1
		mkdir -p "$broot/var/lib/rabbitmq" "$broot/var/log/rabbitmq"
		chown rabbitmq:rabbitmq "$broot/var/lib/rabbitmq" "$broot/var/log/rabbitmq"
		# A node name that resolves without DNS, in the container's own network.
		mkdir -p "$broot/etc/rabbitmq"
		printf 'NODENAME=rabbit@localhost\n' >"$broot/etc/rabbitmq/rabbitmq-env.conf"
	fi
	echo "WITH_BROKER=$with_broker" >"$boot/wdtest/env"
	# The configuration as an operator would install it (see the unit's
	# header), for one tenant whose token comes in as a credential.
	e="$boot/etc-wadispatch"
	cat >"$e/wadispatch.env" <<-'ENV'
		AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
		META_BASE_URL=http://127.0.0.1:8090
		ADMIN_ADDR=127.0.0.1:8081
		METRICS_ADDR=127.0.0.1:9090
		SHUTDOWN_TIMEOUT=25s
		TENANTS_WATCH=off
	ENV
	cat >"$e/tenants.yaml" <<-'YAML'
		defaults:
		  rate_limit: { per_minute: 80, burst: 80 }
		tenants:
		  - id: acme
		    phone_number_id: "106540352242922"
		    access_token_file: /run/credentials/wadispatch.service/token_acme.token
	YAML
	printf 'boot-check-fake-token\n' >"$e/credentials/acme.token"
	chmod 0600 "$e/wadispatch.env" "$e/credentials/acme.token"
	chmod 0700 "$e/credentials"
	chmod 0644 "$e/tenants.yaml"
	machine="wdcheck$$"
	# systemd-nspawn leaves empty cgroups behind (supervisor/, payload/…):
	# remember which exist, and remove the new ones afterwards.
	find /sys/fs/cgroup -mindepth 1 -maxdepth 4 -type d 2>/dev/null | sort >"$boot/cgroups.before"
	rc=0
	timeout 300 systemd-nspawn --quiet --directory="$broot" --machine="$machine" --register=no --keep-unit \
		--private-network --bind-ro=/usr --bind-ro="$boot/localbin:/usr/local/bin" \
		--bind="$e:/etc/wadispatch" --bind-ro="$boot/wdtest:/wdtest" --bind="$boot/results:/wdtest-results" \
		--boot systemd.unit=wdtest.target >"$boot/console.log" 2>&1 || rc=$?
	rm -rf "/run/systemd/nspawn/propagate/$machine" 2>/dev/null || true
	find /sys/fs/cgroup -mindepth 1 -maxdepth 4 -type d 2>/dev/null | sort |
		comm -13 "$boot/cgroups.before" - | sort -r | xargs -r rmdir 2>/dev/null || true
	if [[ ! -s $boot/results/test.log ]]; then
		tail -30 "$boot/console.log" >&2
		fail "the container ran no boot-check (systemd-nspawn exit $rc; BOOT=0 skips this part)"
	fi
	sed 's/^/check-systemd:   boot: /' "$boot/results/test.log"
	if grep -q '^FAIL' "$boot/results/test.log" || ! grep -qx DONE "$boot/results/test.log"; then
		tail -30 "$boot/results/journal.log" >&2 2>/dev/null || true
		fail "boot-check under systemd failed (systemd-nspawn exit $rc)"
	fi
	((rc == 0)) || fail "systemd-nspawn exit $rc"
	((with_broker)) || say "boot-check ran without a broker (rabbitmq-server not installed, or BOOT_BROKER=0): readiness and the SIGHUP reload event were not checked"
	ok "the unit runs under systemd $(systemctl --version | head -1 | cut -d' ' -f2) as PID 1 (nspawn): $(grep -c '^ok' "$boot/results/test.log") checks in $((SECONDS - t))s"
else
	say "skipped: the boot-check under systemd-nspawn (BOOT=0)"
fi

say "all checks passed ($((SECONDS - start_s))s), exposure $score"
