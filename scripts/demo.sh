#!/usr/bin/env bash
# The demo: installs what is missing, builds the host and the guest examples,
# then runs the `uppercase` processor over a few events and shows its outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-guests.sh
cargo build -p leat-runtime --bin leat
leat=target/debug/leat
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
export LEAT_DATA_DIR="$data"

echo
echo "== streams"
$leat stream create greetings --partitions 3
$leat stream create greetings-upper --partitions 3

echo
echo "== produce (key<TAB>value)"
printf 'alice\thello from alice\nbob\tbonjour de bob\ncarol\thola de carol\nalice\talice again\n' |
  $leat produce greetings --format kv
echo "== input events (partition:offset, key, value)"
$leat consume greetings

echo
echo "== run the uppercase processor"
$leat process guest-examples/out/uppercase.wasm --name uppercase \
  --input greetings --output greetings-upper
echo "== its outputs, with provenance headers"
$leat consume greetings-upper --headers

echo
echo "== run it again: it resumes at its committed offsets, nothing is reprocessed"
$leat process guest-examples/out/uppercase.wasm --name uppercase \
  --input greetings --output greetings-upper
printf 'dave\tand one more\n' | $leat produce greetings --format kv
$leat process guest-examples/out/uppercase.wasm --name uppercase \
  --input greetings --output greetings-upper
$leat consume greetings-upper
