#!/usr/bin/env bash
# Builds processors into WebAssembly components (release profile).
#
#   build-guests.sh                 every processor of guest-examples/, in one
#                                   cargo invocation, into guest-examples/out/<name>.wasm
#                                   (target dir: guest-examples/target)
#   build-guests.sh --crate DIR     the processor crate in DIR (what `leat build`
#                                   runs: the binary embeds this script), into
#                                   DIR/out/<name>.wasm (target dir: DIR/target)
#
# LEAT_GUEST_TARGET_DIR sets the cargo target dir: share one between crates,
# std for wasm32 is then built only once.
#
# Toolchain (as scripts/setup.sh installs it; LEAT_GUEST_TOOLCHAIN=rustup|debian
# forces one):
#  - rustup, when it has the wasm32-unknown-unknown target and wasm-tools is on
#    PATH: `cargo build`, then `wasm-tools component new`.
#  - Debian's rustc-web/cargo-web: std rebuilt for wasm32 with -Zbuild-std (once:
#    the flags below never change, so cargo reuses it), linked straight into a
#    component by wasm-component-ld driving wasm-ld-NN.
#
# Both build with Wasm SIMD (simd128), which wasmtime runs on every x86-64 and
# aarch64 host: byte loops (text case mapping, copies, scans) then take 16
# bytes at a time (the pipeline bench: 9% fewer instructions per event).
set -euo pipefail

me=$(basename "$0" .sh)
target=wasm32-unknown-unknown
t0=$SECONDS

die() {
  echo "$me: error: $*" >&2
  exit 1
}

crate=
case "${1:-}" in
  "") ;;
  --crate)
    [ $# -eq 2 ] || die "usage: $me [--crate DIR]"
    crate=$(cd "$2" 2>/dev/null && pwd) || die "$2 is not a directory"
    [ -f "$crate/Cargo.toml" ] || die "$crate has no Cargo.toml: is it a processor crate (see \`leat new\`)?"
    ;;
  *) die "usage: $me [--crate DIR]" ;;
esac

if [ -n "$crate" ]; then
  root=$crate
  ws=$crate
else
  root=$(cd "$(dirname "$0")/.." && pwd)
  ws=$root/guest-examples
fi
out=$ws/out
export CARGO_TARGET_DIR=${LEAT_GUEST_TARGET_DIR:-$ws/target}

# Flags from the environment would change std's fingerprint (a full rebuild)
# or the components: the build sets its own.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS CARGO_BUILD_TARGET

rustup_ready() {
  command -v cargo >/dev/null 2>&1 && command -v wasm-tools >/dev/null 2>&1 || return 1
  local sysroot
  sysroot=$(rustc --print sysroot 2>/dev/null) || return 1
  [ -d "$sysroot/lib/rustlib/$target/lib" ]
}

debian_linker=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld
debian_missing() {
  [ -x /usr/bin/rustc ] || { echo "/usr/bin/rustc (package rustc-web)"; return; }
  [ -x /usr/bin/cargo ] || { echo "/usr/bin/cargo (package cargo-web)"; return; }
  [ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ] || { echo "the std sources (package rust-web-src)"; return; }
  [ -x $debian_linker ] || { echo "$debian_linker (package rust-web-llvm)"; return; }
  local llvm
  llvm=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  [ -x "/usr/bin/wasm-ld-$llvm" ] || { echo "/usr/bin/wasm-ld-$llvm (package lld-$llvm)"; return; }
}

choice=${LEAT_GUEST_TOOLCHAIN:-auto}
case "$choice" in
  auto)
    if rustup_ready; then
      choice=rustup
    elif [ -z "$(debian_missing)" ]; then
      choice=debian
    else
      die "no toolchain to build Wasm guests: $(debian_missing) is missing. Run scripts/setup.sh (as root) first."
    fi
    ;;
  rustup)
    rustup_ready || die "LEAT_GUEST_TOOLCHAIN=rustup needs the $target target (rustup target add $target) and wasm-tools on PATH. Or run scripts/setup.sh."
    ;;
  debian)
    [ -z "$(debian_missing)" ] || die "$(debian_missing) is missing. Run scripts/setup.sh (as root) first."
    ;;
  *) die "LEAT_GUEST_TOOLCHAIN must be auto, rustup or debian (not '$choice')" ;;
esac

if [ -n "$crate" ]; then
  # One package: the crate itself.
  members=.
  which=()
else
  # The workspace members, from `members = [...]` in guest-examples/Cargo.toml.
  members=$(awk '/^members *=/ { on = 1 } on { print } on && /\]/ { exit }' "$ws/Cargo.toml" |
    grep -o '"[^"]*"' | tr -d '"')
  [ -n "$members" ] || die "no members in $ws/Cargo.toml"
  which=(--workspace)
fi

simd="-C target-feature=+simd128"
echo "$me: $choice toolchain, target dir ${CARGO_TARGET_DIR#"$root"/}"
if [ "$choice" = debian ]; then
  llvm=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=$debian_linker \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$simd -C link-arg=--wasm-ld-path=/usr/bin/wasm-ld-$llvm" \
    /usr/bin/cargo build --manifest-path "$ws/Cargo.toml" "${which[@]}" --release \
    --target $target -Zbuild-std=std,panic_abort
else
  unset RUSTC RUSTDOC
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$simd" cargo build --manifest-path "$ws/Cargo.toml" "${which[@]}" --release --target $target
fi

mkdir -p "$out"
for member in $members; do
  name=$(sed -n '/^\[package\]/,/^\[/ s/^name *= *"\(.*\)"/\1/p' "$ws/$member/Cargo.toml" | head -1)
  [ -n "$name" ] || die "no package name in $ws/$member/Cargo.toml"
  built=$CARGO_TARGET_DIR/$target/release/${name//-/_}.wasm
  [ -f "$built" ] || die "$built was not built (is $ws/$member a cdylib? its Cargo.toml needs crate-type = [\"cdylib\"] under [lib])"
  dest=$out/$name.wasm
  tmp=$dest.tmp
  if [ "$choice" = debian ]; then
    cp "$built" "$tmp"
  else
    wasm-tools component new "$built" -o "$tmp"
  fi
  header=$(head -c 8 "$tmp" | od -An -tx1 | tr -d ' \n')
  if [ "$header" != 0061736d0d000100 ]; then
    rm -f "$tmp"
    die "$built is not a WebAssembly component (header $header, expected 0061736d0d000100)"
  fi
  # Replace only what changed, atomically: a running host never reads half a file.
  if cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$dest"
  fi
  echo "component: ${dest#"$root"/} ($(stat -c %s "$dest") bytes)"
done
echo "$me: ok ($((SECONDS - t0))s)"
