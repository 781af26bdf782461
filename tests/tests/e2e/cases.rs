//! The inputs and expected outputs of the examples' tests that run on both
//! the embedded log (examples.rs) and Kafka (on_kafka.rs): one case, two
//! hosts of it, the same assertions.

use std::collections::BTreeMap;

/// What a stream holds: the values of each key, in offset order (a key
/// lives in one partition); `None`: a tombstone.
pub type PerKey = BTreeMap<String, Vec<Option<String>>>;

/// `entries` as [`PerKey`].
fn per_key(entries: &[(&str, &[Option<&str>])]) -> PerKey {
    entries
        .iter()
        .map(|(k, vs)| {
            (
                k.to_string(),
                vs.iter().map(|v| v.map(str::to_owned)).collect(),
            )
        })
        .collect()
}

/// materialize's input, in order: (key, value); no key: not an entity
/// event, no value: a tombstone.
pub const MATERIALIZE_IN: [(Option<&str>, Option<&str>); 11] = [
    (Some("alice"), Some("v1")),
    (Some("bob"), Some("b1")),
    (Some("alice"), Some("v1")), // No change: nothing emitted.
    (Some("alice"), Some("v2")),
    (Some("bob"), None),
    (Some("carol"), None),   // Not in the table: nothing emitted.
    (None, Some("unkeyed")), // Not an entity event: skipped.
    (Some("carol"), Some("c1")),
    (Some("dave"), Some("d1")),
    (Some("dave"), Some("d2")),
    (Some("dave"), None),
];

/// The changes materialize emits for [`MATERIALIZE_IN`].
pub fn materialize_changes() -> PerKey {
    per_key(&[
        ("alice", &[Some("v1"), Some("v2")]),
        ("bob", &[Some("b1"), None]),
        ("carol", &[Some("c1")]),
        ("dave", &[Some("d1"), Some("d2"), None]),
    ])
}

/// The table after [`MATERIALIZE_IN`]: the latest value per key, deleted
/// keys gone.
pub fn materialize_table() -> BTreeMap<String, String> {
    [("alice", "v2"), ("carol", "c1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// materialize's second input: a value equal to the stored one changes
/// nothing, a tombstone deletes; alice's changes after it.
pub const MATERIALIZE_MORE: [(Option<&str>, Option<&str>); 2] =
    [(Some("alice"), Some("v2")), (Some("alice"), None)];
pub const ALICE_CHANGES: [Option<&str>; 3] = [Some("v1"), Some("v2"), None];

/// router's input, in order: (order id = key, type, n), each event's value
/// [`order_value`] with a header `trace` = `<id>-<n>`. `refunded` is not a
/// declared output.
pub const ORDERS: [(&str, &str, u32); 8] = [
    ("o1", "created", 1),
    ("o2", "created", 2),
    ("o1", "paid", 3),
    ("o3", "created", 4),
    ("o1", "shipped", 5),
    ("o2", "paid", 6),
    ("o3", "refunded", 7),
    ("o3", "paid", 8),
];

/// The declared types: the router's outputs are `<prefix><type>`.
pub const ORDER_TYPES: [&str; 3] = ["created", "paid", "shipped"];

pub fn order_value(kind: &str, n: u32) -> String {
    format!(r#"{{"type":"{kind}","n":{n}}}"#)
}

/// What each output of [`ORDER_TYPES`] holds after [`ORDERS`], in order.
pub fn routed() -> [PerKey; 3] {
    let v = |kind, n| Some(order_value(kind, n));
    let entries = |e: Vec<(&str, Vec<Option<String>>)>| -> PerKey {
        e.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    [
        entries(vec![
            ("o1", vec![v("created", 1)]),
            ("o2", vec![v("created", 2)]),
            ("o3", vec![v("created", 4)]),
        ]),
        entries(vec![
            ("o1", vec![v("paid", 3)]),
            ("o2", vec![v("paid", 6)]),
            ("o3", vec![v("paid", 8)]),
        ]),
        entries(vec![("o1", vec![v("shipped", 5)])]),
    ]
}

/// The one event router records on its error stream: (key, value).
pub fn order_error() -> (Option<String>, Option<String>) {
    (Some("o3".into()), Some(order_value("refunded", 7)))
}
