# Sourced by the deploy/check-*.sh scripts, after they define say and fail.
#
# need COMMAND PACKAGE installs Debian's PACKAGE when COMMAND is missing:
# with the package lists as they are, then after an apt-get update. On
# failure it shows the end of the apt log and stops the check.
need() {
	local cmd=$1 pkg=$2 log=/tmp/wadispatch-apt-$2.log
	command -v "$cmd" >/dev/null 2>&1 && return 0
	say "$cmd is missing: apt-get install -y $pkg"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "$pkg" >"$log" 2>&1 ||
		{ apt-get update -qq >>"$log" 2>&1 && apt-get install -y -qq "$pkg" >>"$log" 2>&1; } ||
		{ tail -20 "$log" >&2; fail "could not install $pkg (log: $log)"; }
}
