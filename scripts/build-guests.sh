#!/usr/bin/env bash
# Builds every processor of guest-examples/ into a WebAssembly component,
# guest-examples/out/<name>.wasm, in one cargo invocation (release profile,
# one shared target dir: guest-examples/target).
#
# Toolchain (as scripts/setup.sh installs it; LEAT_GUEST_TOOLCHAIN=rustup|debian
# forces one):
#  - rustup, when it has the wasm32-unknown-unknown target and wasm-tools is on
#    PATH: `cargo build`, then `wasm-tools component new`.
#  - Debian's rustc-web/cargo-web: std rebuilt for wasm32 with -Zbuild-std (once:
#    the flags below never change, so cargo reuses it), linked straight into a
#    component by wasm-component-ld driving wasm-ld-NN.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ws=$root/guest-examples
target=wasm32-unknown-unknown
export CARGO_TARGET_DIR=$ws/target
out=$ws/out
t0=$SECONDS

die() {
  echo "build-guests: error: $*" >&2
  exit 1
}

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

# The workspace members, from `members = [...]` in guest-examples/Cargo.toml.
members=$(awk '/^members *=/ { on = 1 } on { print } on && /\]/ { exit }' "$ws/Cargo.toml" |
  grep -o '"[^"]*"' | tr -d '"')
[ -n "$members" ] || die "no members in $ws/Cargo.toml"

echo "build-guests: $choice toolchain, target dir ${CARGO_TARGET_DIR#"$root"/}"
if [ "$choice" = debian ]; then
  llvm=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=$debian_linker \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--wasm-ld-path=/usr/bin/wasm-ld-$llvm" \
    /usr/bin/cargo build --manifest-path "$ws/Cargo.toml" --workspace --release \
    --target $target -Zbuild-std=std,panic_abort
else
  unset RUSTC RUSTDOC
  cargo build --manifest-path "$ws/Cargo.toml" --workspace --release --target $target
fi

mkdir -p "$out"
for member in $members; do
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$ws/$member/Cargo.toml" | head -1)
  [ -n "$name" ] || die "no package name in $ws/$member/Cargo.toml"
  built=$CARGO_TARGET_DIR/$target/release/${name//-/_}.wasm
  [ -f "$built" ] || die "$built was not built (is $member a cdylib?)"
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
echo "build-guests: ok ($((SECONDS - t0))s)"
