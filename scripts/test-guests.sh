#!/usr/bin/env bash
# Runs the guest examples' native unit tests (through leat_sdk::testing: no
# Wasm involved), with the toolchain scripts/build-guests.sh builds them with:
# Debian's rustc-web/cargo-web when scripts/setup.sh installed them, rustup's
# cargo when rustup has the wasm32 target and wasm-tools is on PATH
# (LEAT_GUEST_TOOLCHAIN=rustup|debian forces one). Also checks their format
# when rustfmt is available.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ws=$root/guest-examples
export CARGO_TARGET_DIR=$ws/target
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET

rustup_ready() {
  command -v cargo >/dev/null 2>&1 && command -v wasm-tools >/dev/null 2>&1 || return 1
  local sysroot
  sysroot=$(rustc --print sysroot 2>/dev/null) || return 1
  [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" ]
}

choice=${LEAT_GUEST_TOOLCHAIN:-auto}
if [ "$choice" = auto ]; then
  if rustup_ready; then
    choice=rustup
  elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ]; then
    choice=debian
  elif command -v cargo >/dev/null 2>&1; then
    choice=rustup
  else
    echo "test-guests: error: no cargo found. Run scripts/setup.sh (as root) first." >&2
    exit 1
  fi
fi

echo "test-guests: $choice toolchain"
if [ "$choice" = debian ]; then
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc /usr/bin/cargo test \
    --manifest-path "$ws/Cargo.toml" --workspace
else
  cargo test --manifest-path "$ws/Cargo.toml" --workspace
fi

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --manifest-path "$ws/Cargo.toml" --all -- --check
  echo "test-guests: format ok"
fi
echo "test-guests: ok"
