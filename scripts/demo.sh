#!/usr/bin/env bash
# The demo: installs what is missing, builds the host and the guest examples,
# then
#  1. runs the `uppercase` processor over a few events in this process and
#     shows its outputs;
#  2. starts `leat serve`, applies the business topology examples/orders.toml
#     (router, filter and materialize) from the file, sends it order events,
#     and shows what each processor wrote, the processors' status and metrics;
#  3. deploys `enrich`, which looks each French order's customer up in a
#     small local HTTP service (examples/lookup_service.py) it declares with
#     --call, and a copy that declares nothing, whose calls are refused.
#  4. event schemas, on a second data directory: the typed `orders`
#     processor's JSON Schemas from `leat build --schemas` guard its two
#     streams; a malformed order is refused at the door, and so is an
#     incompatible schema change.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-guests.sh
cargo build -p leat --bin leat
leat=target/debug/leat
data=$(mktemp -d)
server_pid=
service_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  [ -z "$service_pid" ] || kill "$service_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
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

echo
echo "== a business topology on a server: examples/orders.toml"
$leat serve --data-dir "$data/server" --listen 127.0.0.1:0 --token demo-token \
  >"$data/serve.out" 2>"$data/serve.err" &
server_pid=$!
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's|.*listening on http://||p' "$data/serve.out")
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$data/serve.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "demo: leat serve did not start" >&2; exit 1; }
echo "leat serve listening on $addr"
export LEAT_SERVER=$addr LEAT_TOKEN=demo-token
$leat topology apply examples/orders.toml
echo "== apply it again: nothing changes"
$leat topology apply examples/orders.toml
$leat topology show orders --format text

echo
echo "== produce order events (JSON lines: key, value)"
orders=$(cat examples/orders.jsonl)
echo "$orders"
echo "$orders" | $leat produce orders --format json

# Wait until every processor has caught up (at most 60 s).
count() { $leat consume "$1" | wc -l; }
for _ in $(seq 1 600); do
  if [ "$(count orders-fr)" -ge 2 ] && [ "$(count paid-orders)" -ge 2 ] &&
    [ "$(count order-shipped)" -ge 1 ] && [ "$(count router.errors)" -ge 1 ]; then
    break
  fi
  sleep 0.1
done
echo "== order-created (router)"
$leat consume order-created
echo "== orders-fr (french-orders: the new orders from France)"
$leat consume orders-fr
echo "== paid-orders (paid-table: one entry per order, the repeated payment changed nothing)"
$leat consume paid-orders
echo "== order-shipped (router)"
$leat consume order-shipped
echo "== router.errors (on_error = record: the event and why it failed)"
$leat consume router.errors --headers
echo
echo "== processors"
$leat processor list
$leat processor status router

echo
echo "== external services: enrich looks each French order up in a local HTTP service"
python3 examples/lookup_service.py --port 0 >"$data/service.out" 2>&1 &
service_pid=$!
service=
for _ in $(seq 1 100); do
  service=$(sed -n 's|^listening on ||p' "$data/service.out")
  [ -n "$service" ] && break
  sleep 0.1
done
[ -n "$service" ] || { echo "demo: the lookup service did not start" >&2; exit 1; }
echo "lookup service on $service"
$leat stream create orders-fr-enriched --partitions 3
$leat deploy guest-examples/out/enrich.wasm --name enrich --input orders-fr --output orders-fr-enriched \
  --call "$service" --config service="$service"
for _ in $(seq 1 300); do
  [ "$(count orders-fr-enriched)" -ge 2 ] && break
  sleep 0.1
done
echo "== orders-fr-enriched (each order with what the service knows of its key)"
$leat consume orders-fr-enriched
echo "== the same processor without --call: its calls are refused, the partition stops"
$leat stream create orders-fr-undeclared --partitions 3
$leat deploy guest-examples/out/enrich.wasm --name enrich-undeclared --input orders-fr \
  --output orders-fr-undeclared --config service="$service"
for _ in $(seq 1 300); do
  $leat processor status enrich-undeclared | grep -q "stopped" && break
  sleep 0.1
done
$leat processor status enrich-undeclared | grep -m1 -E "is not declared" || true
$leat processor status enrich | grep -E "^  calls "
if command -v curl >/dev/null 2>&1; then
  echo "== some of /metrics"
  curl -s -H "Authorization: Bearer $LEAT_TOKEN" "http://$addr/metrics" | grep -E '^leat_processor_(events_in_total|traps_total|batch_latency_seconds_count|http_calls_total)'
fi
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
echo "== leat serve stopped (SIGTERM: in-flight batches committed)"

echo
echo "== event schemas: the JSON Schemas of guest-examples/orders' stream types (leat build --schemas)"
$leat build guest-examples/orders --schemas --target-dir guest-examples/target | tail -n 1
schemas=guest-examples/orders/out/schemas
export LEAT_DATA_DIR="$data/shop"
unset LEAT_SERVER LEAT_TOKEN
$leat stream create orders
$leat stream create orders.priced
$leat schema set orders "$schemas/orders.json"
$leat schema set orders.priced "$schemas/orders.priced.json"
echo "== a malformed order (qty is not a number) is refused, with where and why"
echo '{"id":"o-9","customer":"c-1","lines":[{"sku":"tea","qty":"two","unit_price_cents":450}]}' |
  $leat produce orders || true
echo "== valid orders"
printf '%s\n' \
  '{"id":"o-1","customer":"c-7","lines":[{"sku":"tea","qty":2,"unit_price_cents":450},{"sku":"pot","qty":1,"unit_price_cents":1200}]}' \
  '{"id":"o-2","customer":"c-3","lines":[{"sku":"cup","qty":4,"unit_price_cents":300}]}' |
  $leat produce orders
$leat process guest-examples/out/orders.wasm --name pricer --input orders --output orders.priced
echo "== orders.priced: each output checked against its stream's schema (leat.schema-version)"
$leat consume orders.priced --headers
echo "== an incompatible change: a new required field, which the events written so far lack"
python3 - "$schemas/orders.json" >"$data/orders-v2.json" <<'EOF'
import json, sys
schema = json.load(open(sys.argv[1]))
schema["properties"]["coupon"] = {"type": "string"}
schema["required"].append("coupon")
print(json.dumps(schema, indent=2))
EOF
$leat schema check orders "$data/orders-v2.json" || true
$leat schema set orders "$data/orders-v2.json" || true
$leat schema history orders
