//! Event schemas end to end (issue 14): `leat schema` on a server and on a
//! data directory, validation at the HTTP and command-line doors and of a
//! processor's outputs, the version header on replay, topologies' `schema`
//! files. The Kafka door and Confluent's clients: tests/tests/e2e/kafka/schemas.rs.

use std::path::Path;
use std::time::{Duration, Instant};

use leat_tests::{guest, http_request, leat, leat_ok, Server};

const TOKEN: &str = "schemas-token-1234";

/// Orders: `id` required, nothing else allowed but an optional `note`.
const ORDER_V1: &str = r#"{
  "type": "object",
  "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
  "required": ["id", "qty"],
  "additionalProperties": false
}"#;
/// V1 plus an optional `note`: backward compatible (the content model is closed).
const ORDER_V2: &str = r#"{
  "type": "object",
  "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                 "note": {"type": "string"}},
  "required": ["id", "qty"],
  "additionalProperties": false
}"#;
/// V2 with `email` required: events written with V2 may lack it.
const ORDER_V3_BREAKS: &str = r#"{
  "type": "object",
  "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                 "note": {"type": "string"}, "email": {"type": "string"}},
  "required": ["id", "qty", "email"],
  "additionalProperties": false
}"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a schema file");
    path.to_str().expect("UTF-8").to_string()
}

/// `METHOD path` with a JSON body and the server's token.
fn send(server: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        server.token,
        body.len()
    );
    http_request(&server.addr, request.as_bytes())
}

/// Every event of partition 0 of `stream`: (value, schema version header).
fn events(server: &Server, stream: &str) -> Vec<(String, Option<String>)> {
    let (status, body) = server.get(&format!(
        "/v1/streams/{stream}/events?partition=0&from=0&max=1000"
    ));
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    view["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let version = e["headers"].as_array().and_then(|hs| {
                hs.iter()
                    .find(|h| h["key"] == "leat.schema-version")
                    .map(|h| h["value"].as_str().unwrap_or_default().to_string())
            });
            (e["value"].as_str().unwrap_or_default().to_string(), version)
        })
        .collect()
}

/// A server with a stream `orders`, and the path of `ORDER_V1` written in
/// `files` (not yet set).
fn orders_server(dir: &Path, files: &Path) -> (Server, String) {
    let server = Server::start(dir, TOKEN);
    server.leat_ok(&["stream", "create", "orders"], "");
    (server, write(files, "v1.json", ORDER_V1))
}

/// `leat produce` sends a request while it reads the next: a refusal after
/// whole requests were appended keeps them, stops the command, and names the
/// line and how many events went before it.
#[test]
fn produce_stops_at_the_first_refused_request_and_keeps_those_before() {
    let (dir, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, v1) = orders_server(dir.path(), files.path());
    server.leat_ok(&["schema", "set", "orders", &v1], "");
    // Two requests of 5,000 (leat's batch), the third refused at its
    // first line, a fourth never sent.
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!("{{\"id\":\"o{i}\",\"qty\":1}}\n"));
    }
    input.push_str("{\"id\":\"bad\",\"qty\":0}\n");
    for i in 0..6_000 {
        input.push_str(&format!("{{\"id\":\"later{i}\",\"qty\":1}}\n"));
    }
    let out = server.leat(&["produce", "orders"], &input);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lines 10001 to 15000 of standard input were refused"),
        "{err}"
    );
    assert!(err.contains("(10000 event(s) before them were)"), "{err}");
    let describe = server.leat_ok(&["stream", "describe", "orders"], "");
    let total: u64 = describe
        .lines()
        .filter_map(|l| l.split("offsets 0..").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 10_000, "{describe}");
    // With an empty line skipped, the error lists the lines of the events.
    let out = server.leat(
        &["produce", "orders"],
        "{\"id\":\"a\",\"qty\":1}\r\n\nnot json\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("its events are lines [1, 3]"), "{err}");
    assert!(err.contains("event 1 does not match"), "{err}");
}

#[test]
fn produced_events_are_checked_against_the_current_version_and_carry_it() {
    let (dir, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, v1) = orders_server(dir.path(), files.path());
    let out = server.leat_ok(&["schema", "set", "orders", &v1], "");
    assert!(out.contains("orders-value version 1 registered"), "{out}");
    let again = server.leat_ok(&["schema", "set", "orders", &v1], "");
    assert!(again.contains("nothing changed"), "{again}");

    // The HTTP door: the whole request is refused, naming the event and the field.
    let (status, body) = send(
        &server,
        "POST",
        "/v1/streams/orders/events",
        r#"{"events":[{"value":"{\"id\":\"a\",\"qty\":1}"},{"value":"{\"id\":\"b\",\"qty\":0}"}]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("event 1 does not match"), "{body}");
    assert!(body.contains("/qty"), "{body}");
    assert!(events(&server, "orders").is_empty(), "nothing appended");

    // The command line, through the server: the refused batch names its lines.
    let out = server.leat(
        &["produce", "orders"],
        "{\"id\":\"a\",\"qty\":1}\nnot json\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lines 1 to 2"), "{err}");
    assert!(err.contains("event 1 does not match"), "{err}");
    assert!(err.contains("not JSON"), "{err}");
    server.leat_ok(
        &["produce", "orders"],
        "{\"id\":\"a\",\"qty\":1}\n{\"id\":\"b\",\"qty\":2}\n",
    );

    // A compatible new version: events written from now on carry version 2.
    let v2 = write(files.path(), "v2.json", ORDER_V2);
    server.leat_ok(&["schema", "set", "orders", &v2], "");
    server.leat_ok(
        &["produce", "orders"],
        "{\"id\":\"c\",\"qty\":3,\"note\":\"gift\"}\n",
    );
    // A producer cannot forge the header: the registry sets it.
    let (status, body) = send(
        &server,
        "POST",
        "/v1/streams/orders/events",
        r#"{"events":[{"value":"{\"id\":\"d\",\"qty\":4}","headers":{"leat.schema-version":"7"}}]}"#,
    );
    assert_eq!(status, 200, "{body}");

    // Replay: each event says which version it was checked against.
    let replay = events(&server, "orders");
    let versions: Vec<_> = replay.iter().map(|(_, v)| v.as_deref()).collect();
    assert_eq!(
        versions,
        [Some("1"), Some("1"), Some("2"), Some("2")],
        "{replay:?}"
    );
    assert!(replay[2].0.contains("gift"));

    // The registry outlives the server.
    drop(server);
    let server = Server::start(dir.path(), TOKEN);
    let history = server.leat_ok(&["schema", "history", "orders"], "");
    assert!(history.contains("orders-value (BACKWARD)"), "{history}");
    assert!(
        history.contains("version 2: schema id 2, JSON"),
        "{history}"
    );
    let shown = server.leat_ok(&["schema", "show", "orders", "--version", "1"], "");
    assert!(
        shown.starts_with("# orders-value version 1 (schema id 1, JSON)"),
        "{shown}"
    );
    assert!(!shown.contains("note"), "{shown}");
    let out = server.leat(&["produce", "orders"], "{\"id\":\"e\"}\n");
    assert!(!out.status.success(), "still checked after a restart");
}

#[test]
fn an_incompatible_version_is_refused_with_each_field_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let data = dir.path();
    // On a data directory, without a server.
    leat_ok(data, &["stream", "create", "orders"], "");
    leat_ok(
        data,
        &[
            "schema",
            "set",
            "orders",
            &write(files.path(), "v2.json", ORDER_V2),
        ],
        "",
    );
    let v3 = write(files.path(), "v3.json", ORDER_V3_BREAKS);

    let check = leat(data, &["schema", "check", "orders", &v3], "");
    assert!(
        !check.status.success(),
        "check says no with a failing status"
    );
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("#/email"), "{said}");
    assert!(said.contains("required"), "{said}");

    let set = leat(data, &["schema", "set", "orders", &v3], "");
    assert!(!set.status.success());
    let err = String::from_utf8_lossy(&set.stderr);
    assert!(
        err.contains("incompatible with orders-value under BACKWARD"),
        "{err}"
    );
    assert!(err.contains("#/email"), "{err}");
    assert!(
        err.contains("leat schema compatibility"),
        "says what to do: {err}"
    );
    let history = leat_ok(data, &["schema", "history", "orders"], "");
    assert_eq!(history.matches("version ").count(), 1, "{history}");

    // FORWARD: the old version must read the new one's events; closed, it
    // cannot take their `email`.
    leat_ok(data, &["schema", "compatibility", "orders", "FORWARD"], "");
    let forward = leat(data, &["schema", "check", "orders", &v3], "");
    assert!(!forward.status.success());
    let said = String::from_utf8_lossy(&forward.stdout);
    assert!(said.contains("#/email"), "{said}");
    assert!(said.contains("closed content model"), "{said}");
    assert!(
        said.contains("version 1 cannot read events written with the new schema"),
        "{said}"
    );
    // Dropping the optional `note` is forward compatible: the old version
    // reads events without it.
    let fewer = write(files.path(), "fewer.json", ORDER_V1);
    let forward = leat_ok(data, &["schema", "check", "orders", &fewer], "");
    assert!(forward.starts_with("compatible"), "{forward}");
    // NONE takes anything.
    leat_ok(data, &["schema", "compatibility", "orders", "none"], "");
    leat_ok(data, &["schema", "set", "orders", &v3], "");

    // Malformed schemas: refused with what is wrong.
    let bad = leat(
        data,
        &[
            "schema",
            "set",
            "orders",
            &write(files.path(), "bad.json", r#"{"type": "strnig"}"#),
        ],
        "",
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a valid JSON Schema"), "{err}");
    let bad = leat(
        data,
        &[
            "schema",
            "set",
            "orders",
            &write(files.path(), "bad.avsc", r#"{"type": "record"}"#),
        ],
        "",
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a valid Avro schema"), "{err}");
    let unknown = leat(data, &["schema", "show", "nowhere"], "");
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("nowhere-value has no schema: set one with `leat schema set nowhere FILE`"),
        "{err}"
    );
    // The registry's own stream is not for producers.
    let internal = leat(data, &["produce", "_schemas"], "x\n");
    let err = String::from_utf8_lossy(&internal.stderr);
    assert!(err.contains("holds the schema registry"), "{err}");
}

#[test]
fn avro_streams_take_json_at_the_text_doors_and_store_confluent_datums() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let data = dir.path();
    leat_ok(data, &["stream", "create", "payments"], "");
    let avsc = write(
        files.path(),
        "payment.avsc",
        r#"{"type":"record","name":"Payment","fields":[
             {"name":"id","type":"string"},{"name":"cents","type":"long"}]}"#,
    );
    let set = leat_ok(data, &["schema", "set", "payments", &avsc], "");
    assert!(set.contains("AVRO"), "{set}");
    leat_ok(
        data,
        &["produce", "payments"],
        "{\"id\":\"p1\",\"cents\":250}\n",
    );
    let bad = leat(
        data,
        &["produce", "payments"],
        "{\"id\":\"p2\",\"cents\":\"many\"}\n",
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("does not fit the Avro schema"), "{err}");

    let broker = leat_broker::Broker::open(data.join("log.redb")).expect("open the log");
    let stored = leat_tests::read_stream(&broker, "payments");
    assert_eq!(stored.len(), 1);
    let value = stored[0].value.as_deref().expect("a value");
    // Magic byte, schema id 1, then the datum: "p1" (zigzag length 2) and 250 (zigzag 500).
    assert_eq!(value, [0, 0, 0, 0, 1, 4, b'p', b'1', 0xf4, 0x03]);
}

#[test]
fn a_processor_output_that_breaks_its_stream_schema_fails_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "in"], "");
    server.leat_ok(&["stream", "create", "loud"], "");
    // `uppercase` uppercases whole values: {"id":"a"} becomes {"ID":"A"}.
    let schema = write(
        files.path(),
        "loud.json",
        r#"{"type":"object","required":["ID"],"properties":{"ID":{"type":"string"}}}"#,
    );
    server.leat_ok(&["schema", "set", "loud", &schema], "");
    let out = server.deploy(
        &guest("uppercase"),
        "shout",
        ("in", "loud"),
        &["--on-error", "record"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.leat_ok(
        &["produce", "in"],
        "{\"id\":\"a\"}\n{\"name\":\"b\"}\n{\"id\":\"c\"}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let errors = loop {
        let errors = server.get("/v1/streams/shout.errors/events?partition=0&from=0");
        let loud = events(&server, "loud");
        if errors.0 == 200 && errors.1.contains("leat.error") && loud.len() == 2 {
            break errors.1;
        }
        assert!(
            Instant::now() < deadline,
            "{errors:?} {loud:?}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let loud = events(&server, "loud");
    assert_eq!(
        loud,
        [
            ("{\"ID\":\"A\"}".to_string(), Some("1".to_string())),
            ("{\"ID\":\"C\"}".to_string(), Some("1".to_string())),
        ]
    );
    let view: serde_json::Value = serde_json::from_str(&errors).unwrap();
    let failed = &view["events"][0];
    assert_eq!(
        failed["value"], "{\"name\":\"b\"}",
        "the input event that failed"
    );
    let reason = failed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["key"] == "leat.error")
        .map(|h| h["value"].as_str().unwrap().to_string())
        .unwrap();
    assert!(
        reason.contains("does not match the stream's value schema (version 1"),
        "{reason}"
    );
    assert!(reason.contains("ID"), "{reason}");
}

#[test]
fn a_topology_registers_its_schema_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    write(files.path(), "order.json", ORDER_V1);
    write(
        files.path(),
        "order-key.json",
        r#"{"type":"string","pattern":"^o-"}"#,
    );
    let component = guest("uppercase");
    let topology = write(
        files.path(),
        "topology.toml",
        &format!(
            r#"name = "shop"

[[streams]]
name = "orders"
schema = "order.json"
key_schema = "order-key.json"

[[streams]]
name = "shouted"

[[processors]]
name = "shout"
component = "{}"
inputs = ["orders"]
outputs = ["shouted"]
"#,
            component.display()
        ),
    );
    let out = server.leat_ok(&["topology", "apply", &topology], "");
    assert!(out.contains("orders-value: version 1"), "{out}");
    assert!(out.contains("orders-key: version 1"), "{out}");
    let again = server.leat_ok(&["topology", "apply", &topology], "");
    assert!(
        !again.contains("version 1"),
        "unchanged files register nothing: {again}"
    );
    // The key schema holds: a key that does not start with o- is refused.
    let (status, body) = send(
        &server,
        "POST",
        "/v1/streams/orders/events",
        r#"{"events":[{"key":"\"x-1\"","value":"{\"id\":\"x\",\"qty\":1}"}]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("key schema"), "{body}");
    // A topology whose schema breaks the stream's mode applies nothing.
    write(files.path(), "order.json", ORDER_V3_BREAKS);
    let out = server.leat(&["topology", "apply", &topology], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stream orders: schema"), "{err}");
    assert!(err.contains("#/email"), "{err}");
}

/// The typed example end to end: `leat build --schemas` writes the JSON
/// Schemas of `guest-examples/orders`' stream types, the registry takes
/// them, the door refuses an order that is not one, and the processor's
/// outputs are checked against `orders.priced`'s schema.
#[test]
fn typed_orders_emit_their_schemas_which_guard_both_streams() {
    let root = leat_tests::repo_root();
    let crate_dir = root.join("guest-examples/orders");
    let target = root.join("guest-examples/target");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let built = leat_ok(
        data,
        &[
            "build",
            crate_dir.to_str().unwrap(),
            "--target-dir",
            target.to_str().unwrap(),
            "--schemas",
        ],
        "",
    );
    assert!(built.contains("built "), "{built}");
    let schemas = crate_dir.join("out/schemas");
    let orders = schemas.join("orders.json");
    let priced = schemas.join("orders.priced.json");
    let text = std::fs::read_to_string(&orders).expect("orders.json written");
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        schema["required"],
        serde_json::json!(["id", "customer", "lines"])
    );

    for s in ["orders", "orders.priced"] {
        leat_ok(data, &["stream", "create", s], "");
    }
    leat_ok(
        data,
        &["schema", "set", "orders", orders.to_str().unwrap()],
        "",
    );
    leat_ok(
        data,
        &["schema", "set", "orders.priced", priced.to_str().unwrap()],
        "",
    );
    let refused = leat(
        data,
        &["produce", "orders"],
        "{\"id\":\"o-2\",\"customer\":\"c-1\",\"lines\":[{\"sku\":\"tea\",\"qty\":-1,\"unit_price_cents\":450}]}\n",
    );
    assert!(!refused.status.success(), "a negative quantity is no u32");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("/lines/0/qty"), "{err}");
    leat_ok(
        data,
        &["produce", "orders"],
        "{\"id\":\"o-1\",\"customer\":\"c-7\",\"lines\":[{\"sku\":\"tea\",\"qty\":2,\"unit_price_cents\":450},{\"sku\":\"pot\",\"qty\":1,\"unit_price_cents\":1200}]}\n",
    );
    let component = leat_tests::guest("orders");
    leat_ok(
        data,
        &[
            "process",
            component.to_str().unwrap(),
            "--name",
            "pricer",
            "--input",
            "orders",
            "--output",
            "orders.priced",
        ],
        "",
    );
    let broker = leat_broker::Broker::open(data.join("log.redb")).expect("open the log");
    let out = leat_tests::read_stream(&broker, "orders.priced");
    assert_eq!(out.len(), 1);
    let value: serde_json::Value =
        serde_json::from_slice(out[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"id": "o-1", "customer": "c-7", "total_cents": 2100, "items": 3})
    );
    let version = out[0]
        .headers
        .iter()
        .find(|h| h.key == "leat.schema-version")
        .map(|h| h.value.to_vec());
    assert_eq!(
        version.as_deref(),
        Some(&b"1"[..]),
        "checked against orders.priced version 1"
    );
}
