#!/usr/bin/env bash
# check-image.sh builds the runtime image (deploy/image/Containerfile) offline
# with buildah and checks it, leaving nothing behind: no daemon, a private
# vfs storage root under a temporary folder, removed at the end.
#
# What it asserts (each printed as "ok: ..."; any failure exits non-zero):
#   1. the static binary builds (CGO_ENABLED=0, -trimpath, version stamped)
#      and is statically linked;
#   2. the image builds from the staged context without pulling anything
#      (FROM scratch, --pull=never);
#   3. the image config: User 65532:65532, Entrypoint exec form
#      ["/usr/local/bin/wadispatch"], Cmd ["run"], ports 8081 and 9090,
#      StopSignal SIGTERM, the org.opencontainers.image.* labels (version
#      = the stamped version);
#   4. the image's files: the binary, the CA bundle, /etc/passwd and
#      /etc/group naming wadispatch 65532, and nothing else (no shell);
#   5. inside the image: `wadispatch version` prints the stamped version,
#      `wadispatch run --help` exits 0 and mentions AMQP_URL, `wadispatch
#      check` accepts the sample tenants file of deploy/compose mounted at
#      /etc/wadispatch (read as the image's user, token files included), and
#      exits 2 with "permission denied" when the token files are root-only
#      (so the image does not run as root);
#   6. the worker itself runs from the image: `wadispatch run` (broker
#      unreachable on purpose) runs as uid/gid 65532, answers /healthz 200
#      and /readyz 503 ("connecting to the broker") through `wadispatch
#      probe` run inside the image, and stops on SIGTERM with exit code 0;
#   7. only with MULTISTAGE=1: Containerfile.multistage builds, with a
#      stand-in for its golang builder image made from this host's Go (no
#      registry is reachable here), into an image with the same config and
#      files as the single-stage one (a few minutes: go mod download + build).
#
# Needs root (buildah with chroot isolation) and installs buildah with
# apt-get when it is missing. Usage: deploy/check-image.sh (from anywhere).
# KEEP=1 keeps the temporary folder for a look afterwards.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
start_s=$SECONDS

say() { printf 'check-image: %s\n' "$*"; }
ok() { printf 'check-image: ok: %s\n' "$*"; }
fail() {
	printf 'check-image: FAIL: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || fail "needs root (buildah --isolation chroot with its own storage root)"

# shellcheck source=check/need.sh
source "$repo/deploy/check/need.sh"
need buildah buildah
need jq jq
say "$(buildah --version)"

tmp="$(mktemp -d /tmp/wadispatch-check-image.XXXXXX)"
ctx="$tmp/context"
cfg="$tmp/etc-wadispatch"
bad="$tmp/etc-wadispatch-bad"
mkdir -p "$ctx" "$cfg" "$bad" "$tmp/tmp"
# Everything buildah writes goes below $tmp: its storage, its run state and
# its temporary files.
export TMPDIR="$tmp/tmp"
B=(buildah --storage-driver vfs --root "$tmp/root" --runroot "$tmp/runroot")
image=localhost/wadispatch:test
ctr=""
worker_pid=""

cleanup() {
	local rc=$?
	set +e
	if [[ -n $worker_pid ]] && kill -0 "$worker_pid" 2>/dev/null; then
		kill -KILL "$worker_pid" 2>/dev/null
	fi
	if [[ -d $tmp/root ]]; then
		"${B[@]}" rm --all >/dev/null 2>&1
		"${B[@]}" rmi --all --force >/dev/null 2>&1
	fi
	if [[ ${KEEP:-} == 1 ]]; then
		say "kept $tmp"
	else
		# Nothing of ours may stay mounted below $tmp before it goes.
		if grep -q " $tmp/" /proc/self/mounts; then
			grep " $tmp/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r umount -l
		fi
		rm -rf "$tmp"
	fi
	say "took $((SECONDS - start_s))s"
	exit "$rc"
}
trap cleanup EXIT

# 1. The binary, as the README and Taskfile build it.
version="$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)"
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
t=$SECONDS
(cd "$repo" && CGO_ENABLED=0 GOWORK=off go build -trimpath \
	-ldflags "-s -w -X main.version=$version" -o "$ctx/wadispatch" ./cmd/wadispatch) ||
	fail "go build ./cmd/wadispatch"
if command -v file >/dev/null 2>&1; then
	file -b "$ctx/wadispatch" | grep -q 'statically linked' ||
		fail "the binary is not statically linked: $(file -b "$ctx/wadispatch")"
fi
# A dynamically linked binary has an interpreter (PT_INTERP); a static one not.
if od -An -c -N 4096 "$ctx/wadispatch" | tr -d ' \n' | grep -q 'ld-linux'; then
	fail "the binary names a dynamic loader"
fi
ok "binary built in $((SECONDS - t))s, static, version $version"

# 2. The context and the image.
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt" ||
	fail "no CA bundle at /etc/ssl/certs/ca-certificates.crt on the build host"
cp "$repo/deploy/image/passwd" "$repo/deploy/image/group" "$ctx/"
chmod 0555 "$ctx/wadispatch"
chmod 0444 "$ctx/ca-certificates.crt" "$ctx/passwd" "$ctx/group"
t=$SECONDS
"${B[@]}" build --isolation chroot --pull=never --layers=false -q \
	-f "$repo/deploy/image/Containerfile" \
	--build-arg VERSION="$version" --build-arg REVISION="$revision" \
	--build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-t "$image" "$ctx" >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log" >&2; fail "buildah build"; }
ok "image built offline in $((SECONDS - t))s ($image, binary $(($(stat -c %s "$ctx/wadispatch") / 1024 / 1024)) MiB)"

# 3. The image config.
"${B[@]}" inspect --type image "$image" >"$tmp/inspect.json" || fail "buildah inspect"
conf() { jq -c "$1" "$tmp/inspect.json"; }
expect_conf() { # expect_conf JQ WANT WHAT
	local got
	got="$(conf "$1")"
	[[ $got == "$2" ]] || fail "$3: got $got, want $2"
	ok "$3: $got"
}
expect_conf '.OCIv1.config.User' '"65532:65532"' "user"
expect_conf '.OCIv1.config.Entrypoint' '["/usr/local/bin/wadispatch"]' "entrypoint (exec form)"
expect_conf '.OCIv1.config.Cmd' '["run"]' "cmd"
expect_conf '.OCIv1.config.ExposedPorts | keys' '["8081/tcp","9090/tcp"]' "exposed ports"
expect_conf '.OCIv1.config.StopSignal' '"SIGTERM"' "stop signal"
expect_conf '.OCIv1.config.Labels["org.opencontainers.image.version"]' "\"$version\"" "label version"
expect_conf '.OCIv1.config.Labels["org.opencontainers.image.revision"]' "\"$revision\"" "label revision"
expect_conf '.OCIv1.config.Labels["org.opencontainers.image.source"]' '"https://github.com/wadispatch/wadispatch"' "label source"
expect_conf '.OCIv1.config.Labels["org.opencontainers.image.title"]' '"wadispatch"' "label title"
expect_conf '[.OCIv1.rootfs.diff_ids[]] | length' '1' "layers (scratch + one)"

# 4. The files in the image: exactly what the Containerfile copies.
ctr="$("${B[@]}" from --pull-never "$image")" || fail "buildah from $image"
mnt="$("${B[@]}" mount "$ctr")" || fail "buildah mount"
files="$(cd "$mnt" && find . -type f -o -type l | sort | tr '\n' ' ')"
want_files="./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/wadispatch "
[[ $files == "$want_files" ]] || fail "files in the image: got [$files], want [$want_files]"
ok "files: $files(no shell)"
grep -qx 'wadispatch:x:65532:65532:wadispatch:/nonexistent:/sbin/nologin' "$mnt/etc/passwd" ||
	fail "/etc/passwd has no wadispatch 65532"
grep -qx 'wadispatch:x:65532:' "$mnt/etc/group" || fail "/etc/group has no wadispatch 65532"
ok "/etc/passwd and /etc/group: wadispatch 65532:65532"
cmp -s "$mnt/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt ||
	fail "the CA bundle differs from the build host's"
ok "CA bundle: $(grep -c 'BEGIN CERTIFICATE' "$mnt/etc/ssl/certs/ca-certificates.crt") certificates"
"${B[@]}" umount "$ctr" >/dev/null

# 5. Commands inside the image (as the image's user, from its config).
run_in() { "${B[@]}" run --isolation chroot "$@"; }
out="$(run_in "$ctr" -- /usr/local/bin/wadispatch version 2>&1)" || fail "wadispatch version: $out"
[[ $out == "wadispatch $version" ]] || fail "wadispatch version printed [$out], want [wadispatch $version]"
ok "in the image: wadispatch version -> $out"
out="$(run_in "$ctr" -- /usr/local/bin/wadispatch run --help 2>&1)" || fail "wadispatch run --help exited non-zero"
grep -q 'AMQP_URL' <<<"$out" || fail "wadispatch run --help does not mention AMQP_URL"
grep -q 'SHUTDOWN_TIMEOUT' <<<"$out" || fail "wadispatch run --help does not mention SHUTDOWN_TIMEOUT"
ok "in the image: wadispatch run --help exits 0 and mentions AMQP_URL ($(wc -l <<<"$out") lines)"

# The sample configuration of the local stack, mounted read-only where the
# image looks for it (TENANTS_FILE=/etc/wadispatch/tenants.yaml).
cp "$repo"/deploy/compose/wadispatch/* "$cfg/"
chmod 0755 "$cfg"
chmod 0644 "$cfg"/*
out="$(run_in -v "$cfg:/etc/wadispatch:ro" "$ctr" -- /usr/local/bin/wadispatch check 2>&1)" ||
	fail "wadispatch check of the mounted sample tenants file: $out"
ok "in the image: wadispatch check (mounted /etc/wadispatch, tokens read as 65532) -> $out"
# The same file, its token readable by root only: the image's user must fail.
cp "$cfg"/* "$bad/"
chmod 0755 "$bad"
chmod 0600 "$bad"/*.token
rc=0
out="$(run_in -v "$bad:/etc/wadispatch:ro" "$ctr" -- /usr/local/bin/wadispatch check 2>&1)" || rc=$?
[[ $rc -eq 2 ]] || fail "check with a token readable by root only: exit $rc, want 2 (runs as root?): $out"
grep -q 'permission denied' <<<"$out" || fail "check with a root-only token: want 'permission denied', got: $out"
ok "in the image: a token file readable by root only -> exit 2, permission denied (not root)"

# 6. The worker from the image. chroot isolation keeps the host's network,
# so a free loopback port is chosen; the broker address is a closed port, so
# the worker stays alive and not ready, which is what the probes must say.
port=""
for p in $(shuf -i 20000-29999 -n 20); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		port=$p
		break
	fi
done
[[ -n $port ]] || fail "no free loopback port found"
run_in -v "$cfg:/etc/wadispatch:ro" \
	-e AMQP_URL=amqp://guest:guest@127.0.0.1:1/ -e ADMIN_ADDR=off \
	-e METRICS_ADDR="127.0.0.1:$port" -e SHUTDOWN_TIMEOUT=5s \
	"$ctr" -- /usr/local/bin/wadispatch run >"$tmp/run.log" 2>&1 &
run_pid=$!
# worker_pid_of PORT: the pid of the image's worker serving METRICS_ADDR
# 127.0.0.1:PORT (buildah run puts it a few processes below $run_pid).
worker_pid_of() {
	local d
	for d in /proc/[0-9]*; do
		[[ $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) == "/usr/local/bin/wadispatch run " ]] || continue
		tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx "METRICS_ADDR=127.0.0.1:$1" || continue
		echo "${d#/proc/}"
		return 0
	done
	return 1
}
for _ in $(seq 1 100); do
	if "$ctx/wadispatch" probe --addr "127.0.0.1:$port" --timeout 200ms >/dev/null 2>&1; then
		worker_pid="$(worker_pid_of "$port" || true)"
		break
	fi
	kill -0 "$run_pid" 2>/dev/null || { cat "$tmp/run.log" >&2; fail "wadispatch run exited at start"; }
	sleep 0.1
done
[[ -n $worker_pid ]] || { cat "$tmp/run.log" >&2; fail "the worker from the image did not answer on 127.0.0.1:$port"; }
ids="$(awk '/^Uid:/ { u = $2 } /^Gid:/ { g = $2 } END { print u, g }' "/proc/$worker_pid/status")"
[[ $ids == "65532 65532" ]] || fail "the worker runs as uid/gid [$ids], want [65532 65532]"
ok "worker from the image runs as uid/gid $ids (pid $worker_pid, metrics on 127.0.0.1:$port)"
out="$(run_in -e METRICS_ADDR="127.0.0.1:$port" "$ctr" -- /usr/local/bin/wadispatch probe 2>&1)" ||
	fail "wadispatch probe (alive) in the image: $out"
ok "in the image: wadispatch probe -> 0 ($out)"
rc=0
out="$(run_in -e METRICS_ADDR="127.0.0.1:$port" "$ctr" -- /usr/local/bin/wadispatch probe --ready 2>&1)" || rc=$?
{ [[ $rc -eq 1 ]] && grep -q 'connecting to the broker' <<<"$out"; } ||
	fail "wadispatch probe --ready without a broker: exit $rc, want 1 saying 'connecting to the broker': $out"
ok "in the image: wadispatch probe --ready -> 1 while the broker is unreachable"
kill -TERM "$worker_pid"
rc=0
wait "$run_pid" || rc=$?
worker_pid=""
[[ $rc -eq 0 ]] || { tail -5 "$tmp/run.log" >&2; fail "wadispatch run exited $rc on SIGTERM, want 0"; }
grep -q '"event":"broker_unreachable"' "$tmp/run.log" || fail "no broker_unreachable event in the worker's log"
ok "worker stopped on SIGTERM with exit code 0"

# 7. Optional (MULTISTAGE=1): Containerfile.multistage, whose builder image
# cannot be pulled here. A stand-in for golang:${GO_VERSION}-bookworm is
# assembled from this host's Go (/usr/local/go, /bin/sh and libc, the CA
# bundle), tagged golang:standin-bookworm in the private storage only, and
# the file is built with it from the repository root (go mod download goes to
# the Go module proxy). The result must match the single-stage image.
if [[ ${MULTISTAGE:-} == 1 ]]; then
	t=$SECONDS
	goroot="$(go env GOROOT)"
	sc="$("${B[@]}" from scratch)"
	sm="$("${B[@]}" mount "$sc")"
	mkdir -p "$sm/usr/local" "$sm/bin" "$sm/etc/ssl/certs" "$sm/root" "$sm/tmp" "$sm/go"
	cp -a "$goroot" "$sm/usr/local/go"
	cp "$(readlink -f /bin/sh)" "$sm/bin/sh"
	for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do
		mkdir -p "$sm$(dirname "$lib")"
		cp "$(readlink -f "$lib")" "$sm$lib"
	done
	cp /etc/ssl/certs/ca-certificates.crt "$sm/etc/ssl/certs/"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$sm/etc/passwd"
	printf 'root:x:0:\n' >"$sm/etc/group"
	chmod 1777 "$sm/tmp"
	"${B[@]}" umount "$sc" >/dev/null
	"${B[@]}" config --workingdir /go --env GOPATH=/go --env GOTOOLCHAIN=local \
		--env GOPROXY="$(go env GOPROXY)" --env GOSUMDB="$(go env GOSUMDB)" \
		--env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$sc"
	"${B[@]}" commit -q "$sc" docker.io/library/golang:standin-bookworm >/dev/null || fail "commit of the stand-in builder"
	"${B[@]}" rm "$sc" >/dev/null
	ok "stand-in builder golang:standin-bookworm from $("$goroot/bin/go" version | cut -d' ' -f3) ($((SECONDS - t))s)"
	t=$SECONDS
	"${B[@]}" build --isolation chroot --pull=never --layers=false \
		-f "$repo/deploy/image/Containerfile.multistage" \
		--ignorefile "$repo/deploy/image/Containerfile.multistage.dockerignore" \
		--build-arg GO_VERSION=standin --build-arg VERSION="$version" --build-arg REVISION="$revision" \
		-t localhost/wadispatch:multistage "$repo" >"$tmp/build-multistage.log" 2>&1 ||
		{ tail -30 "$tmp/build-multistage.log" >&2; fail "buildah build -f Containerfile.multistage"; }
	ok "Containerfile.multistage built with the stand-in builder in $((SECONDS - t))s"
	"${B[@]}" inspect --type image localhost/wadispatch:multistage >"$tmp/inspect-multi.json"
	for q in .OCIv1.config.User .OCIv1.config.Entrypoint .OCIv1.config.Cmd '.OCIv1.config.ExposedPorts | keys' \
		.OCIv1.config.StopSignal .OCIv1.config.Env '.OCIv1.config.Labels | del(.["org.opencontainers.image.created"])'; do
		[[ $(jq -c "$q" "$tmp/inspect-multi.json") == "$(jq -c "$q" "$tmp/inspect.json")" ]] ||
			fail "multistage image: $q is $(jq -c "$q" "$tmp/inspect-multi.json"), the single-stage one $(jq -c "$q" "$tmp/inspect.json")"
	done
	ok "multistage image config = single-stage image config (user, entrypoint, cmd, ports, env, labels)"
	mc="$("${B[@]}" from --pull-never localhost/wadispatch:multistage)"
	mm="$("${B[@]}" mount "$mc")"
	mfiles="$(cd "$mm" && find . -type f -o -type l | sort | tr '\n' ' ')"
	[[ $mfiles == "$want_files" ]] || fail "files in the multistage image: [$mfiles], want [$want_files]"
	"${B[@]}" umount "$mc" >/dev/null
	out="$(run_in "$mc" -- /usr/local/bin/wadispatch version 2>&1)" || fail "multistage: wadispatch version: $out"
	[[ $out == "wadispatch $version" ]] || fail "multistage: version printed [$out], want [wadispatch $version]"
	ok "multistage image: same files; wadispatch version -> $out"
else
	say "skipped: Containerfile.multistage (MULTISTAGE=1 builds it with a stand-in golang builder, a few minutes)"
fi

say "all checks passed ($((SECONDS - start_s))s)"
