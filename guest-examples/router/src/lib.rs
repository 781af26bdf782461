//! `router`: splits keyed events into one stream per event type.
//!
//! Each event's value is JSON; its field `type` (configuration `type-field`
//! overrides the name) names the event type. The event is emitted, whole
//! (key, value, headers), to the output stream `<prefix><type>` where
//! `prefix` is the configuration `prefix` (default empty). A string type is
//! used as is, a number or a boolean by its JSON text. An event whose value
//! is not JSON, has no usable type, or whose target stream is not one of the
//! declared outputs, fails (for that event).

use leat_sdk::{Config, Context, Error, Event, Output, Processor};
use serde_json::Value;

/// The processor: where to read the type, and the stream name prefix.
pub struct Router {
    type_field: String,
    prefix: String,
}

impl Router {
    fn target(&self, event: &Event) -> Result<String, Error> {
        let doc: Value = event.json()?;
        let kind = match doc.get(&self.type_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => {
                return Err(Error::new(format!(
                    "event {event} has no event type: field `{}` must be a non-empty string",
                    self.type_field
                )))
            }
        };
        Ok(format!("{}{kind}", self.prefix))
    }
}

impl Processor for Router {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("router needs at least one output stream"));
        }
        Ok(Router {
            type_field: config.get_or("type-field", "type").to_owned(),
            prefix: config.get_or("prefix", "").to_owned(),
        })
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let target = self.target(event)?;
        if !ctx.is_output(&target) {
            return Err(Error::new(format!(
                "event {event} goes to stream `{target}`, which is not a declared output (declared: {})",
                ctx.outputs().join(", ")
            )));
        }
        ctx.emit(Output::to(target).with_event(event))
    }
}

leat_sdk::export!(Router);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    fn order(key: &str, kind: &str) -> Event {
        Event::new("orders")
            .with_key(key)
            .with_value(format!(r#"{{"type":"{kind}","id":"{key}"}}"#))
            .with_header("h", "v")
    }

    #[test]
    fn events_go_to_the_stream_of_their_type() {
        let mut host = TestHost::new().with_outputs(["orders.created", "orders.paid"]);
        let mut p: Router = host.init(&[("prefix", "orders.")]).unwrap();
        let out = host
            .run(
                &mut p,
                &[
                    order("o1", "created"),
                    order("o2", "paid"),
                    order("o1", "paid"),
                ],
            )
            .unwrap();
        let routed: Vec<(&str, &str)> = out
            .iter()
            .map(|o| (o.stream(), o.key_str().unwrap()))
            .collect();
        assert_eq!(
            routed,
            [
                ("orders.created", "o1"),
                ("orders.paid", "o2"),
                ("orders.paid", "o1")
            ]
        );
        assert_eq!(out[0].header_str("h"), Some("v"));
        assert_eq!(out[0].value_str(), order("o1", "created").value_str());
    }

    #[test]
    fn the_type_field_is_configurable_and_the_prefix_optional() {
        let mut host = TestHost::new().with_outputs(["click", "7"]);
        let mut p: Router = host.init(&[("type-field", "kind")]).unwrap();
        let click = Event::new("in").with_value(r#"{"kind":"click"}"#);
        let seven = Event::new("in").with_value(r#"{"kind":7}"#);
        let out = host.run(&mut p, &[click, seven]).unwrap();
        assert_eq!(out[0].stream(), "click");
        assert_eq!(out[1].stream(), "7");
    }

    #[test]
    fn an_undeclared_target_fails_that_event() {
        let mut host = TestHost::new().with_outputs(["created"]);
        let mut p: Router = host.init(&[]).unwrap();
        let failure = host
            .run(&mut p, &[order("o1", "created"), order("o2", "refunded")])
            .unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert!(
            failure.message.contains("`refunded`"),
            "{}",
            failure.message
        );
        assert!(host.emitted().is_empty(), "the batch was rolled back");
    }

    #[test]
    fn events_without_a_usable_type_fail() {
        let mut host = TestHost::new().with_outputs(["x"]);
        let mut p: Router = host.init(&[]).unwrap();
        for value in [
            None,
            Some("not json"),
            Some(r#"{"id":1}"#),
            Some(r#"{"type":""}"#),
            Some(r#"{"type":{}}"#),
        ] {
            let mut e = Event::new("in").with_key("k");
            if let Some(v) = value {
                e = e.with_value(v);
            }
            let failure = host.run(&mut p, &[e]).unwrap_err();
            assert_eq!(failure.event_index, Some(0), "{value:?}");
        }
    }
}
