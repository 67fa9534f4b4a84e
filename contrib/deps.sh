#!/bin/sh
# Installs the Debian 12 packages stepsync builds, tests and benchmarks with.
# Does nothing when they are all present; needs root (or sudo) otherwise.
set -e
PKGS="build-essential pkgconf clang libclang-rt-14-dev libjansson-dev libsqlite3-dev libssl-dev
libcmocka-dev libinih-dev openssl python3 rsync restic sqlite3 iproute2 nftables procps psmisc clang-format
libpq-dev postgresql haproxy"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
