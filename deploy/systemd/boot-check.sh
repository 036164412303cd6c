#!/bin/bash
# boot-check.sh runs INSIDE the throwaway systemd-nspawn container that
# deploy/check-systemd.sh boots (systemd as PID 1, private network); it is
# not meant to be run on a host. It drives wadispatch.service, installed
# unchanged, with real systemctl calls and prints one "ok: …" or "FAIL: …"
# line per assertion, then "DONE" and powers the container off.
#
# Set up by check-systemd.sh: /usr/local/bin/wadispatch, the unit, and
# /etc/wadispatch with wadispatch.env (TENANTS_WATCH=off, metrics on
# 127.0.0.1:9090), tenants.yaml naming the credential token_acme.token, and
# credentials/acme.token. WITH_BROKER=1 (in /wdtest/env) starts the
# machine's own rabbitmq-server inside the container first.
# ok and bad always succeed, so "A && ok || bad" is an if-then-else here.
# shellcheck disable=SC2015,SC2016,SC2317
exec >/wdtest-results/test.log 2>&1
# shellcheck disable=SC1091
. /wdtest/env

ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; }
prop() { systemctl show -p "$1" --value wadispatch.service; }
probe() { /usr/local/bin/wadispatch probe --addr 127.0.0.1:9090 --timeout 1s "$@" >/dev/null 2>&1; }
get() { # get PATH: the body of an HTTP GET on the metrics listener
	exec 3<>/dev/tcp/127.0.0.1/9090 || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$1" >&3
	cat <&3
	exec 3<&-
}
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.2
	done
}
journal_has() { journalctl -u wadispatch.service -o cat --no-pager | grep -q "$1"; }

finish() {
	journalctl -u wadispatch.service -o cat --no-pager >/wdtest-results/journal.log 2>&1
	echo DONE
	systemctl poweroff --no-block
	exit 0
}

broker=0
if [[ ${WITH_BROKER:-0} == 1 ]]; then
	if systemctl start rabbitmq-server.service; then
		broker=1
		ok "rabbitmq-server started inside the container"
	else
		bad "rabbitmq-server did not start inside the container"
		journalctl -u rabbitmq-server.service --no-pager | tail -20
	fi
fi

# Start, and what the process is.
systemctl start wadispatch.service || bad "systemctl start wadispatch.service"
if wait_for 15 probe; then ok "probe (alive) answers 0 after start"; else bad "probe (alive) never answered"; fi
[[ $(prop ActiveState)/$(prop SubState) == active/running ]] && ok "active/running" ||
	bad "state $(prop ActiveState)/$(prop SubState)"
pid="$(prop MainPID)"
status="/proc/$pid/status"
uid="$(awk '/^Uid:/ { print $2 }' "$status")"
[[ -n $uid && $uid != 0 ]] && ok "runs as a dynamic user, uid $uid ($(id -nu "$uid" 2>/dev/null || echo '?'))" ||
	bad "runs as uid '$uid'"
for kv in CapEff:0000000000000000 CapBnd:0000000000000000 CapAmb:0000000000000000 NoNewPrivs:1 Seccomp:2; do
	got="$(awk -v k="${kv%%:*}:" '$1 == k { print $2 }' "$status")"
	[[ $got == "${kv#*:}" ]] && ok "${kv%%:*} $got" || bad "${kv%%:*} is '$got', want ${kv#*:}"
done
cred=/run/credentials/wadispatch.service/token_acme.token
[[ -f $cred && $(stat -c %u "$cred") == "$uid" ]] && ok "credential $cred, owned by the service's user" ||
	bad "credential $cred missing or not the service's ($(stat -c '%u %a' "$cred" 2>&1))"
metrics="$(get /metrics)"
# LimitNOFILE=65536, or the container's own hard limit if that is lower
# (systemd cannot raise it beyond what PID 1 was given).
hard="$(awk '/^Max open files/ { print $5 }' /proc/1/limits)"
want=65536
[[ $hard =~ ^[0-9]+$ ]] && ((hard < want)) && want=$hard
grep -q "^process_max_fds $want\$" <<<"$metrics" && ok "process_max_fds $want (LimitNOFILE=65536, PID 1's hard limit $hard)" ||
	bad "process_max_fds: $(grep '^process_max_fds' <<<"$metrics"), want $want"
grep -q '^process_open_fds ' <<<"$metrics" && ok "process metrics readable under ProtectProc=invisible, ProcSubset=pid" ||
	bad "no process_open_fds in /metrics"
grep -q '^wadispatch_build_info' <<<"$metrics" && ok "/metrics serves wadispatch_build_info" || bad "no wadispatch_build_info"

if ((broker)); then
	if wait_for 60 probe --ready; then ok "probe --ready answers 0 (connected to the broker)"; else bad "never ready"; fi
	# SIGHUP through ExecReload: the tenants file is read again.
	sed 's/per_minute: 80/per_minute: 90/' /etc/wadispatch/tenants.yaml >/etc/wadispatch/tenants.yaml.new &&
		mv /etc/wadispatch/tenants.yaml.new /etc/wadispatch/tenants.yaml
	systemctl reload wadispatch.service || bad "systemctl reload"
	if wait_for 15 journal_has '"event":"config_reloaded".*"trigger":"sighup"'; then
		ok "systemctl reload -> config_reloaded (trigger sighup)"
	else
		bad "no config_reloaded event after systemctl reload"
	fi
else
	probe --ready && bad "ready without a broker" || ok "probe --ready answers 1 without a broker"
	systemctl reload wadispatch.service && ok "systemctl reload (no broker: queued until connected)" || bad "systemctl reload"
fi
[[ $(prop MainPID) == "$pid" ]] && ok "same process after the reload" || bad "the process changed on reload"

# Graceful stop.
t0=$SECONDS
systemctl stop wadispatch.service || bad "systemctl stop"
[[ $(prop Result) == success && $(prop ExecMainStatus) == 0 ]] &&
	ok "systemctl stop -> exit 0, Result=success ($((SECONDS - t0))s)" ||
	bad "stop: Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus)"

# A crash is restarted (Restart=on-failure) ...
systemctl reset-failed wadispatch.service 2>/dev/null
systemctl start wadispatch.service && wait_for 15 probe
pid="$(prop MainPID)"
kill -KILL "$pid"
if wait_for 15 bash -c '[[ $(systemctl show -p NRestarts --value wadispatch.service) == 1 ]] && /usr/local/bin/wadispatch probe --addr 127.0.0.1:9090 >/dev/null 2>&1'; then
	ok "killed with SIGKILL -> restarted once (NRestarts=1) and alive again"
else
	bad "after SIGKILL: NRestarts=$(prop NRestarts) state $(prop ActiveState)/$(prop SubState)"
fi
systemctl stop wadispatch.service

# ... a configuration error (exit 2) is not.
mkdir -p /run/systemd/system/wadispatch.service.d
printf '[Service]\nEnvironment=TENANTS_FILE=/etc/wadispatch/missing.yaml\n' >/run/systemd/system/wadispatch.service.d/broken.conf
systemctl daemon-reload
systemctl reset-failed wadispatch.service 2>/dev/null
systemctl start wadispatch.service
sleep 8 # RestartSec=5s has passed
if [[ $(prop ExecMainStatus) == 2 && $(prop ActiveState) == failed && $(prop NRestarts) == 0 ]]; then
	ok "configuration error -> exit 2, failed, not restarted (RestartPreventExitStatus=2)"
else
	bad "config error: ExecMainStatus=$(prop ExecMainStatus) ActiveState=$(prop ActiveState) NRestarts=$(prop NRestarts)"
fi
rm -f /run/systemd/system/wadispatch.service.d/broken.conf
systemctl daemon-reload

finish
