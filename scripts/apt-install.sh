#!/usr/bin/env bash
# Installs Debian packages with apt-get (through sudo when not root), for the
# setup scripts (setup-kafka-clients.sh, setup-browser.sh):
#
#   apt-install.sh PACKAGE...
set -euo pipefail

die() {
  echo "apt-install: error: $*" >&2
  exit 1
}

[ $# -gt 0 ] || die "usage: apt-install.sh PACKAGE..."
command -v apt-get >/dev/null 2>&1 || die "$* missing and there is no apt-get here: install them"
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "installing $* needs root: run this as root"
  as_root=(sudo)
fi
echo "apt-install: apt-get install $*"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "$@" || die "apt-get install $* failed"
