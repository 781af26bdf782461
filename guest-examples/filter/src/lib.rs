//! `filter`: forwards an event to the first declared output iff its JSON
//! value's field `field` (configuration) equals `equals` (configuration).
//!
//! The field's value is compared as a string: a JSON string by its content,
//! anything else by its compact JSON text (`42`, `true`, `null`,
//! `{"a":1}`). A `field` starting with `/` is a JSON pointer into nested
//! objects (`/customer/country`). An event without the field is dropped; an
//! event whose value is not JSON fails (for that event). A tombstone carries
//! no value to test: it is forwarded, so that deletions reach downstream
//! tables.

use std::borrow::Cow;

use leat_sdk::{Config, Context, Error, Event, Processor};
use serde_json::Value;

/// The processor: what it compares.
pub struct Filter {
    field: String,
    equals: String,
}

impl Filter {
    fn matches(&self, doc: &Value) -> bool {
        let found = if self.field.starts_with('/') {
            doc.pointer(&self.field)
        } else {
            doc.get(&self.field)
        };
        found.is_some_and(|v| rendered(v) == self.equals)
    }
}

/// A JSON value as the string it is compared with: a string's content, the
/// compact JSON text of anything else.
fn rendered(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

impl Processor for Filter {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("filter needs an output stream"));
        }
        Ok(Filter {
            field: config.require("field")?.to_owned(),
            equals: config.require("equals")?.to_owned(),
        })
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        if event.is_tombstone() {
            return ctx.forward(event);
        }
        let doc: Value = event.json()?;
        if self.matches(&doc) {
            ctx.forward(event)?;
        }
        Ok(())
    }
}

leat_sdk::export!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    fn run(field: &str, equals: &str, values: &[&str]) -> Vec<String> {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut p: Filter = host.init(&[("field", field), ("equals", equals)]).unwrap();
        let events: Vec<Event> = values
            .iter()
            .map(|v| Event::new("in").with_key("k").with_value(*v))
            .collect();
        host.run(&mut p, &events)
            .unwrap()
            .iter()
            .map(|o| o.value_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn forwards_only_matching_string_fields() {
        let kept = run(
            "country",
            "FR",
            &[
                r#"{"country":"FR","n":1}"#,
                r#"{"country":"DE","n":2}"#,
                r#"{"n":3}"#,
                r#"{"country":"FR","n":4}"#,
                r#"[1,2]"#,
            ],
        );
        assert_eq!(
            kept,
            [r#"{"country":"FR","n":1}"#, r#"{"country":"FR","n":4}"#]
        );
    }

    #[test]
    fn non_strings_compare_by_their_json_text() {
        let values = [
            r#"{"v":42}"#,
            r#"{"v":"42"}"#,
            r#"{"v":42.5}"#,
            r#"{"v":true}"#,
            r#"{"v":null}"#,
        ];
        assert_eq!(run("v", "42", &values), [values[0], values[1]]);
        assert_eq!(run("v", "true", &values), [values[3]]);
        assert_eq!(run("v", "null", &values), [values[4]]);
    }

    #[test]
    fn a_pointer_reaches_nested_fields() {
        let values = [r#"{"c":{"country":"FR"}}"#, r#"{"c":{"country":"IT"}}"#];
        assert_eq!(run("/c/country", "FR", &values), [values[0]]);
    }

    #[test]
    fn the_event_is_forwarded_whole() {
        let mut host = TestHost::new().with_outputs(["out", "other"]);
        let mut p: Filter = host.init(&[("field", "a"), ("equals", "1")]).unwrap();
        let e = Event::new("in")
            .with_key("k")
            .with_value(r#"{"a":1}"#)
            .with_header("h", "v");
        let out = host.run(&mut p, &[e]).unwrap();
        assert_eq!(out[0].stream(), "out");
        assert_eq!(out[0].key_str(), Some("k"));
        assert_eq!(out[0].header_str("h"), Some("v"));
    }

    #[test]
    fn bad_json_fails_that_event_and_tombstones_pass() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut p: Filter = host.init(&[("field", "a"), ("equals", "1")]).unwrap();
        let ok = Event::new("in").with_value(r#"{"a":1}"#);
        let tombstone = Event::new("in").with_key("gone");
        let out = host.run(&mut p, &[ok.clone(), tombstone]).unwrap();
        assert!(out[1].is_tombstone());
        let bad = Event::new("in").with_value("not json").with_position(0, 9);
        let failure = host.run(&mut p, &[ok, bad]).unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert!(failure.message.contains("in/0@9"), "{}", failure.message);
        assert_eq!(host.emitted().len(), 2, "the failed batch emitted nothing");
    }

    #[test]
    fn field_and_equals_are_required() {
        let host = TestHost::new().with_outputs(["out"]);
        let err = host.init::<Filter>(&[("field", "a")]).err().unwrap();
        assert_eq!(err.message(), "missing configuration `equals`");
        let err = host.init::<Filter>(&[("equals", "a")]).err().unwrap();
        assert_eq!(err.message(), "missing configuration `field`");
    }
}
