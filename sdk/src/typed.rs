//! Typed streams: [`Stream<T>`] ties a stream name to the Rust type of its
//! events, and [`streams!`](crate::streams) declares a processor's streams
//! (and, with the `schema` feature, lets `leat build --schemas` write their
//! JSON Schemas).

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{confluent, Error, Event, Output};

/// A stream whose event values are `T`, as JSON.
///
/// Declare one with [`streams!`](crate::streams) (or `Stream::new` in a
/// `const`), then decode events and build outputs through it:
///
/// ```
/// # use leat_sdk::{Event, Stream};
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Order { id: String, total: u64 }
///
/// const ORDERS: Stream<Order> = Stream::new("orders");
///
/// let event = Event::new("orders").with_value(r#"{"id":"o-1","total":12}"#);
/// let order = ORDERS.decode(&event).unwrap();
/// assert_eq!(order, Order { id: "o-1".into(), total: 12 });
///
/// let out = ORDERS.output(&order).unwrap().key("o-1");
/// assert_eq!(out.stream(), "orders");
/// assert_eq!(out.value_str(), Some(r#"{"id":"o-1","total":12}"#));
/// ```
pub struct Stream<T> {
    name: &'static str,
    of: PhantomData<fn() -> T>,
}

impl<T> Stream<T> {
    /// The stream named `name`, whose values are `T`.
    pub const fn new(name: &'static str) -> Stream<T> {
        Stream {
            name,
            of: PhantomData,
        }
    }

    /// The stream's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether `event` was read from this stream (to route the events of a
    /// processor with several inputs).
    pub fn is(&self, event: &Event) -> bool {
        event.stream() == self.name
    }
}

impl<T: DeserializeOwned> Stream<T> {
    /// The event's value decoded as a `T` from JSON. A value in Confluent's
    /// wire format (byte 0, a 4-byte schema id, then the JSON) is accepted
    /// too: JSON never starts with byte 0.
    ///
    /// A tombstone or a value that is not a `T` is an error naming the
    /// event and the type (the host then applies its error policy); never a
    /// panic.
    pub fn decode(&self, event: &Event) -> Result<T, Error> {
        let Some(value) = event.value() else {
            return Err(Error::new(format!(
                "event {event} is a tombstone: it holds no {}",
                short_type_name::<T>()
            )));
        };
        let json = confluent::strip(value).map_or(value, |(_, payload)| payload);
        serde_json::from_slice(json).map_err(|e| {
            Error::new(format!(
                "event {event} is not a valid {} (stream `{}`): {e}",
                short_type_name::<T>(),
                self.name
            ))
        })
    }
}

impl<T: Serialize> Stream<T> {
    /// An output to this stream with `value` as JSON (no key: add one with
    /// [`Output::key`]).
    pub fn output(&self, value: &T) -> Result<Output, Error> {
        Output::to(self.name).json(value)
    }

    /// An output to this stream with `event`'s key and headers (but not the
    /// host's `leat.*` provenance headers) and `value` as JSON: what a typed
    /// map emits.
    pub fn output_from(&self, event: &Event, value: &T) -> Result<Output, Error> {
        let bytes = serde_json::to_vec(value)?;
        let mut out = Output::from_event_with_value(event, bytes);
        out.set_stream(self.name);
        Ok(out)
    }
}

#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema> Stream<T> {
    /// The JSON Schema (draft 2020-12) of this stream's values, as schemars
    /// generates it for `T`. What `leat build --schemas` writes to
    /// `out/schemas/<stream>.json`.
    pub fn json_schema(&self) -> serde_json::Value {
        schemars::schema_for!(T).to_value()
    }

    /// The stream's name and schema, for [`streams!`](crate::streams).
    #[doc(hidden)]
    pub fn schema_entry(&self) -> (&'static str, serde_json::Value) {
        (self.name, self.json_schema())
    }
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Stream<T> {
        *self
    }
}

impl<T> Copy for Stream<T> {}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stream<{}>({:?})", short_type_name::<T>(), self.name)
    }
}

/// `T`'s name without its module path (`Order`, `Vec<Line>`).
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or_default());
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or_default());
    out
}

/// The environment variable naming the folder `leat build --schemas` wants
/// the schemas in.
pub const SCHEMAS_DIR_ENV: &str = "LEAT_SCHEMAS_DIR";

/// What the test [`streams!`](crate::streams) generates runs: checks the
/// declared stream names, then, when [`SCHEMAS_DIR_ENV`] is set, writes
/// each schema to `<dir>/<stream>.json`. Panics (it runs in a test) with
/// what to fix.
#[cfg(feature = "schema")]
#[doc(hidden)]
pub fn write_schemas(entries: &[(&'static str, serde_json::Value)]) {
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in entries {
        assert!(
            is_file_name(name),
            "stream `{name}` cannot name a schema file: use letters, digits, `.`, `-` and `_`"
        );
        assert!(
            seen.insert(*name),
            "stream `{name}` is declared twice in leat_sdk::streams!"
        );
    }
    let Some(dir) = std::env::var_os(SCHEMAS_DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    for (name, schema) in entries {
        let path = dir.join(format!("{name}.json"));
        let mut text = serde_json::to_string_pretty(schema).expect("a JSON value serializes");
        text.push('\n');
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// What the test [`streams!`](crate::streams) generates runs when the SDK
/// is built without its `schema` feature: tells `leat build --schemas` (in
/// `<dir>/error.txt`) how to turn it on.
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
pub fn write_schemas_unavailable() {
    let Some(dir) = std::env::var_os(SCHEMAS_DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let message = "the streams are declared, but leat-sdk is built without its `schema` \
                   feature: add `features = [\"schema\"]` to the leat-sdk dependency in \
                   Cargo.toml, and derive `JsonSchema` on the stream types \
                   (`#[derive(leat_sdk::JsonSchema)]` with \
                   `#[schemars(crate = \"leat_sdk::schemars\")]`)";
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("error.txt"), message))
        .unwrap_or_else(|e| panic!("writing to {}: {e}", dir.display()));
}

/// Whether `name` is safe as a file name: not empty, not `.` or `..`, made
/// of letters, digits, `.`, `-` and `_`.
#[cfg(feature = "schema")]
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Declares the streams a processor reads and writes, each with the Rust
/// type of its values: one [`Stream`] constant per stream.
///
/// ```
/// # use leat_sdk::Stream;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// # #[cfg_attr(feature = "schema", derive(leat_sdk::JsonSchema))]
/// # #[cfg_attr(feature = "schema", schemars(crate = "leat_sdk::schemars"))]
/// pub struct Order { pub id: String }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// # #[cfg_attr(feature = "schema", derive(leat_sdk::JsonSchema))]
/// # #[cfg_attr(feature = "schema", schemars(crate = "leat_sdk::schemars"))]
/// pub struct Shipped { pub id: String, pub carrier: String }
///
/// leat_sdk::streams! {
///     /// What it reads.
///     pub ORDERS: Order = "orders";
///     /// What it writes.
///     pub SHIPPED: Shipped = "orders.shipped";
/// }
///
/// assert_eq!(SHIPPED.name(), "orders.shipped");
/// ```
///
/// With the SDK's `schema` feature, every type must implement
/// `JsonSchema` (derive it), and the macro also
/// generates, in the crate's native tests only, a test
/// (`__leat_schemas::write`) that checks the schemas can be generated; with
/// `LEAT_SCHEMAS_DIR` set, it writes each to `<dir>/<stream>.json`. That is
/// what `leat build --schemas` runs. Use the macro once per module.
#[macro_export]
macro_rules! streams {
    ($($(#[$meta:meta])* $vis:vis $name:ident : $ty:ty = $stream:literal;)+) => {
        $(
            $(#[$meta])*
            $vis const $name: $crate::Stream<$ty> = $crate::Stream::new($stream);
        )+
        $crate::__private::schema_test!($($name),+);
    };
}

/// The test [`streams!`] generates, with the `schema` feature.
#[cfg(feature = "schema")]
#[macro_export]
#[doc(hidden)]
macro_rules! __leat_schema_test {
    ($($name:ident),+) => {
        #[cfg(all(test, not(target_arch = "wasm32")))]
        #[doc(hidden)]
        mod __leat_schemas {
            #[test]
            fn write() {
                $crate::__private::write_schemas(&[$(super::$name.schema_entry()),+]);
            }
        }
    };
}

/// The test [`streams!`] generates, without the `schema` feature.
#[cfg(not(feature = "schema"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __leat_schema_test {
    ($($name:ident),+) => {
        #[cfg(all(test, not(target_arch = "wasm32")))]
        #[doc(hidden)]
        mod __leat_schemas {
            #[test]
            fn write() {
                $(let _ = super::$name;)+
                $crate::__private::write_schemas_unavailable();
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
    struct Order {
        id: String,
        qty: u32,
    }

    const ORDERS: Stream<Order> = Stream::new("orders");

    #[test]
    fn decode_reads_json_and_confluent_framed_json() {
        let plain = Event::new("orders").with_value(r#"{"id":"o-1","qty":2}"#);
        let want = Order {
            id: "o-1".into(),
            qty: 2,
        };
        assert_eq!(ORDERS.decode(&plain).unwrap(), want);
        let framed =
            Event::new("orders").with_value(confluent::frame(7, br#"{"id":"o-1","qty":2}"#));
        assert_eq!(ORDERS.decode(&framed).unwrap(), want);
        assert!(ORDERS.is(&plain));
        assert!(!ORDERS.is(&Event::new("other")));
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_an_error_naming_the_event_and_the_type() {
        let bad = Event::new("orders")
            .with_value(r#"{"id":"o-1","qty":-1}"#)
            .with_position(2, 9);
        let err = ORDERS.decode(&bad).unwrap_err();
        assert!(
            err.message()
                .starts_with("event orders/2@9 is not a valid Order (stream `orders`)"),
            "{err}"
        );
        let tombstone = Event::new("orders").with_position(0, 3);
        let err = ORDERS.decode(&tombstone).unwrap_err();
        assert_eq!(
            err.message(),
            "event orders/0@3 is a tombstone: it holds no Order"
        );
    }

    #[test]
    fn outputs_go_to_the_stream_as_json() {
        let order = Order {
            id: "o-1".into(),
            qty: 2,
        };
        let out = ORDERS.output(&order).unwrap();
        assert_eq!(out.stream(), "orders");
        assert_eq!(out.key_str(), None);
        assert_eq!(out.read_json::<Order>().unwrap(), order);

        let event = Event::new("in")
            .with_key("k")
            .with_header("trace", "t")
            .with_header("leat.source", "x");
        let out = ORDERS.output_from(&event, &order).unwrap();
        assert_eq!(out.stream(), "orders");
        assert_eq!(out.key_str(), Some("k"));
        assert_eq!(out.header_str("trace"), Some("t"));
        assert_eq!(out.header_str("leat.source"), None);
    }

    #[test]
    fn type_names_are_short() {
        assert_eq!(short_type_name::<Order>(), "Order");
        assert_eq!(short_type_name::<Vec<Order>>(), "Vec<Order>");
        assert_eq!(format!("{ORDERS:?}"), r#"Stream<Order>("orders")"#);
    }

    #[cfg(feature = "schema")]
    #[test]
    fn the_schema_is_draft_2020_12_with_the_fields() {
        let schema = ORDERS.json_schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["title"], "Order");
        assert_eq!(schema["properties"]["qty"]["type"], "integer");
        assert_eq!(schema["required"], serde_json::json!(["id", "qty"]));
    }

    #[cfg(feature = "schema")]
    #[test]
    fn file_names_are_checked() {
        for good in ["orders", "orders.priced", "a-b_c"] {
            assert!(is_file_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }
}
