//! Event schemas with real clients: confluent-kafka's Schema Registry client
//! and its Avro and JSON serializers against Leat's Confluent-compatible
//! registry and its Kafka listener; Leat's Avro compatibility against the
//! Avro reference implementation in Python as the oracle; JSON Schema
//! compatibility modes through the registry's REST API.

use std::collections::HashMap;
use std::time::Duration;

use leat_tests::Server;
use serde_json::{json, Value};

use super::{python_ok, start, TOKEN};

const MINUTE: Duration = Duration::from_secs(60);

/// One request to the server's HTTP API with the token; the status and the
/// JSON body (`Value::Null` when there is none).
fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        server.addr,
        TOKEN,
        body.len()
    );
    let (status, answer) = leat_tests::http_request(&server.addr, request.as_bytes());
    let answer = serde_json::from_str(&answer).unwrap_or(Value::Null);
    (status, answer)
}

/// [`call`], asserting a 200.
fn call_ok(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (status, answer) = call(server, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

/// A script's `STEP REST...` lines, by step (the last one wins).
fn steps(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of header `key` of one event of a `GET .../events` answer.
fn header<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event["headers"]
        .as_array()?
        .iter()
        .find(|h| h["key"] == key)
        .and_then(|h| h["value"].as_str())
}

#[test]
fn confluent_serializers_round_trip_through_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "sr-avro"], "");
    server.leat_ok(&["stream", "create", "sr-json"], "");
    let out = python_ok(
        "schema_serializers.py",
        &[&addr, TOKEN, &server.addr, "sr-avro", "sr-json"],
        Duration::from_secs(90),
    );
    let lines: Vec<&str> = out.lines().collect();
    // The serializers registered one version each: ids 1 and 2.
    assert!(lines.contains(&"registered sr-avro-value 1 1"), "{out}");
    assert!(lines.contains(&"registered sr-json-value 2 1"), "{out}");
    assert!(lines.contains(&"avro 6"), "{out}");
    assert!(lines.contains(&"json 6"), "{out}");
    let step = steps(&out);
    let incompatible = &step["incompatible"];
    assert!(
        incompatible.starts_with("409 409 ") && incompatible.contains("customer"),
        "the refusal should be a 409 naming the new field: {incompatible}"
    );
    let refused = &step["refused"];
    assert!(
        refused.starts_with("INVALID_RECORD 87 "),
        "librdkafka's delivery error: {refused}"
    );
    assert_eq!(lines.last(), Some(&"ok"), "{out}");
    // librdkafka reports only the code; the server says which event and why.
    let logs = server.logs();
    assert!(
        logs.contains("produce to sr-json/0 refused: event 0 does not match the value schema of stream sr-json (version 1, JSON): /qty: "),
        "{logs}"
    );

    // What the registry holds, as Confluent's REST API shows it.
    let subjects = call_ok(&server, "GET", "/subjects", None);
    for s in ["sr-avro-value", "sr-json-value"] {
        assert!(
            subjects.as_array().unwrap().contains(&json!(s)),
            "{subjects}"
        );
        assert_eq!(
            call_ok(&server, "GET", &format!("/subjects/{s}/versions"), None),
            json!([1]),
            "{s}: the refused schema wrote nothing"
        );
    }
    let v1 = call_ok(&server, "GET", "/subjects/sr-avro-value/versions/1", None);
    assert_eq!(
        (v1["id"].as_u64(), v1["version"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v1["schemaType"], "AVRO", "{v1}");
    assert!(v1["schema"].as_str().unwrap().contains("\"Order\""), "{v1}");
    let by_id = call_ok(&server, "GET", "/schemas/ids/2", None);
    assert_eq!(by_id["schemaType"], "JSON", "{by_id}");
    let latest = call_ok(
        &server,
        "GET",
        "/subjects/sr-json-value/versions/latest",
        None,
    );
    assert_eq!(latest["id"], 2, "{latest}");

    // The streams hold only the valid events, each stamped with its version.
    for (stream, first) in [("sr-avro", "a-0"), ("sr-json", "j-0")] {
        let read = call_ok(
            &server,
            "GET",
            &format!("/v1/streams/{stream}/events?partition=0&from=0"),
            None,
        );
        let events = read["events"].as_array().unwrap();
        assert_eq!(events.len(), 6, "{stream}: {read}");
        for e in events {
            assert_eq!(header(e, "leat.schema-version"), Some("1"), "{stream}: {e}");
        }
        let value = events[0]["value"].as_str().unwrap_or_default();
        assert!(value.contains(first), "{stream}: {}", events[0]);
    }
    let json_events = call_ok(
        &server,
        "GET",
        "/v1/streams/sr-json/events?partition=0&from=0",
        None,
    );
    for e in json_events["events"].as_array().unwrap() {
        let value = e["value"].as_str().unwrap();
        // Confluent's wire format: magic byte 0, schema id 2, then the JSON.
        assert!(value.starts_with("\0\0\0\0\u{2}{"), "{e}");
        assert!(!value.contains("three"), "the refused event is in: {e}");
    }
}

#[test]
fn avro_compatibility_agrees_with_the_reference_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _addr) = start(dir.path(), &[]);
    let out = python_ok(
        "schema_avro_oracle.py",
        &[&server.addr, TOKEN],
        Duration::from_secs(90),
    );
    println!("{out}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("agree "))
        .unwrap_or_else(|| panic!("no summary in:\n{out}"));
    let counts: Vec<u32> = summary
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [agree, disagree, known] = counts[..] else {
        panic!("{summary}")
    };
    assert_eq!(disagree, 0, "{out}");
    assert!(agree + known >= 25, "too small a matrix: {summary}");
    // Both verdicts occur: the matrix tells compatible from incompatible.
    let rows: Vec<&str> = out.lines().filter(|l| l.contains('\t')).collect();
    assert_eq!(rows.len() as u32, agree + known, "{out}");
    for verdict in ["\tcompatible\t", "\tincompatible\t"] {
        assert!(
            rows.iter().filter(|r| r.contains(verdict)).count() >= 10,
            "{verdict}: {out}"
        );
    }
    // Well-known rules, spelled out (N, name, oracle, Leat, verdict).
    for row in [
        "\tint to long\tcompatible\tcompatible\tagree",
        "\tlong to int\tincompatible\tincompatible\tagree",
        "\tadd field without default\tincompatible\tincompatible\tagree",
        "\tunion widened\tcompatible\tcompatible\tagree",
        "\tfixed size change\tincompatible\tincompatible\tagree",
    ] {
        assert!(out.contains(&format!("{row}\n")), "{row:?} in:\n{out}");
    }
    // The differences of apache-avro from the specification, listed in the
    // script with their reasons: both make Leat refuse what Avro allows.
    let mut known_rows: Vec<&str> = rows
        .iter()
        .filter(|r| r.contains("\tKNOWN: "))
        .map(|r| r.split('\t').nth(1).unwrap())
        .collect();
    known_rows.sort();
    assert_eq!(
        known_rows,
        [
            "enum symbol removed, reader default",
            "record renamed with alias"
        ],
        "{out}"
    );
    for r in rows.iter().filter(|r| r.contains("\tKNOWN: ")) {
        assert!(r.contains("\tcompatible\tincompatible\t"), "{r}");
    }
    // The pairs registered as the script says: each writer is version 1.
    let v = call_ok(&server, "GET", "/subjects/oracle-0-value/versions", None);
    assert_eq!(v, json!([1]));
    let mode = call_ok(&server, "GET", "/config/oracle-0-value", None);
    assert_eq!(mode["compatibilityLevel"], "BACKWARD", "{mode}");
}

#[test]
fn json_schema_compatibility_modes_through_the_confluent_api() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _addr) = start(dir.path(), &[]);
    let out = python_ok("schema_json_registry.py", &[&server.addr, TOKEN], MINUTE);
    let step = steps(&out);
    let get = |k: &str| {
        step.get(k)
            .unwrap_or_else(|| panic!("no `{k}` in:\n{out}"))
            .as_str()
    };
    // BACKWARD: a new required property is refused, naming it.
    let refused = get("backward-required");
    assert!(refused.starts_with("409 409 "), "{refused}");
    assert!(refused.contains("email"), "{refused}");
    assert_eq!(get("backward-optional"), "2");
    // FORWARD: the old version reads the new; dropping a requirement breaks it.
    assert_eq!(get("forward-check"), "True");
    assert_eq!(get("forward-required"), "2");
    let refused = get("forward-unrequire");
    assert!(refused.starts_with("409 409 "), "{refused}");
    assert!(refused.contains("`id`"), "{refused}");
    // FULL: widening `id` is backward compatible, but not forward.
    assert_eq!(get("full-check"), "False");
    let refused = get("full-widen");
    assert!(
        refused.starts_with("409 409 ") && refused.contains("FULL"),
        "{refused}"
    );
    assert_eq!(get("full-description"), "3");
    // Malformed schemas: 422 with Confluent's code 42201.
    for k in ["malformed-json", "malformed-schema"] {
        assert!(get(k).starts_with("422 42201 "), "{k}: {}", get(k));
    }
    assert!(out.contains("versions jsr-closed-value 1,2\n"), "{out}");
    assert!(out.contains("versions jsr-open-value 1,2,3\n"), "{out}");
    assert_eq!(get("mode"), "jsr-open-value FULL");
    assert!(out.ends_with("ok\n"), "{out}");

    // The same through raw requests: the reasons and codes themselves.
    let (status, answer) = call(
        &server,
        "POST",
        "/subjects/jsr-closed-value/versions",
        Some(&json!({"schemaType": "JSON", "schema": "{\"type\": 7}"})),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error_code"], 42201, "{answer}");
    let (status, answer) = call(
        &server,
        "POST",
        "/compatibility/subjects/jsr-closed-value/versions/latest",
        Some(&json!({
            "schemaType": "JSON",
            "schema": json!({"type": "object", "additionalProperties": false,
                "properties": {"id": {"type": "string"}, "note": {"type": "string"},
                    "phone": {"type": "string"}},
                "required": ["id", "phone"]}).to_string()
        })),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["is_compatible"], false, "{answer}");
    let messages = answer["messages"].to_string();
    assert!(messages.contains("phone"), "{answer}");
    // Nothing refused was written: the modes and versions are as set.
    assert_eq!(
        call_ok(&server, "GET", "/config/jsr-open-value", None)["compatibilityLevel"],
        "FULL"
    );
    assert_eq!(
        call_ok(&server, "GET", "/config", None)["compatibilityLevel"],
        "BACKWARD"
    );
    let (status, answer) = call(&server, "GET", "/subjects/jsr-bad-value/versions", None);
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error_code"], 40401, "{answer}");
}
