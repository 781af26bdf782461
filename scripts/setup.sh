#!/usr/bin/env bash
# Installs what building Leat's guest components needs, idempotently: it only
# installs what is missing, and says what it does.
#
# Two ways to build a guest (scripts/build-guests.sh picks the same one):
#  - rustup: a rustup toolchain with the `wasm32-unknown-unknown` target and
#    `wasm-tools` on PATH. Nothing to install then.
#  - Debian 12 (the default here: rustup cannot download the wasm32 target on
#    these machines). As root, apt-get installs what is missing of
#      rustc-web     /usr/bin/rustc and rustdoc (sysroot /usr)
#      cargo-web     /usr/bin/cargo
#      rust-web-src  std sources, for -Zbuild-std
#      rust-web-llvm wasm-component-ld, a wasm-ld wrapper that writes components
#      lld-NN        /usr/bin/wasm-ld-NN, NN = the LLVM major of /usr/bin/rustc
#    running `apt-get update` first only when something is missing.
#
# LEAT_GUEST_TOOLCHAIN=rustup|debian forces a way (default: auto).
set -euo pipefail

say() { echo "setup: $*"; }
die() {
  echo "setup: error: $*" >&2
  exit 1
}

rustup_ready() {
  command -v cargo >/dev/null 2>&1 && command -v wasm-tools >/dev/null 2>&1 || return 1
  local sysroot
  sysroot=$(rustc --print sysroot 2>/dev/null) || return 1
  [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" ]
}

choice=${LEAT_GUEST_TOOLCHAIN:-auto}
case "$choice" in
  auto | rustup | debian) ;;
  *) die "LEAT_GUEST_TOOLCHAIN must be auto, rustup or debian (not '$choice')" ;;
esac

if [ "$choice" != debian ] && rustup_ready; then
  say "rustup has the wasm32-unknown-unknown target and wasm-tools is on PATH: no Debian packages needed"
  say "ok"
  exit 0
fi
if [ "$choice" = rustup ]; then
  die "LEAT_GUEST_TOOLCHAIN=rustup needs the wasm32-unknown-unknown target and wasm-tools on PATH: rustup target add wasm32-unknown-unknown && cargo install --locked wasm-tools"
fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 ||
  die "no apt-get here: install rustup's wasm32-unknown-unknown target and wasm-tools instead (rustup target add wasm32-unknown-unknown; cargo install --locked wasm-tools)"

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "installing packages needs root: run this script as root"
  as_root=(sudo)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

updated=0
# Installs those of the packages given that are missing.
install_missing() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then
    say "already installed: $*"
    return 0
  fi
  if [ $updated -eq 0 ]; then
    say "apt-get update"
    "${as_root[@]}" apt-get update -qq
    updated=1
  fi
  say "apt-get install ${missing[*]}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed (rustc-web and friends come from bookworm-security: is it in the apt sources?)"
}

t0=$SECONDS
install_missing rustc-web cargo-web rust-web-src rust-web-llvm
llvm=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm" ] || die "cannot read the LLVM version of /usr/bin/rustc"
install_missing "lld-$llvm"
say "packages took $((SECONDS - t0))s"

# What scripts/build-guests.sh relies on.
linker=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld
[ -x "$linker" ] || die "$linker is missing (package rust-web-llvm)"
[ -x "/usr/bin/wasm-ld-$llvm" ] || die "/usr/bin/wasm-ld-$llvm is missing (package lld-$llvm)"
[ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ] || die "the std sources are missing (package rust-web-src)"
say "$(/usr/bin/rustc --version), LLVM $llvm"
say "$(/usr/bin/cargo --version)"
say "$("$linker" --version), $("/usr/bin/wasm-ld-$llvm" --version)"
say "ok"
