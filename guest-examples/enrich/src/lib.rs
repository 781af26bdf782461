//! `enrich`: looks each event's key up in an HTTP service and emits the
//! event with what the service knows about that key.
//!
//! Configuration: `service`, the service's base URL (its origin must be
//! declared: `leat deploy --call http://127.0.0.1:8080 ...`), and `path`,
//! what comes before the key (default `/lookup/`). For each keyed event it
//! calls `GET {service}{path}{key}` (the key percent-encoded) and emits to
//! the first declared output, under the same key:
//!
//! ```json
//! {"value": <the event's value: its JSON, or its text>, "found": <the service's JSON answer, or null on 404>}
//! ```
//!
//! Any other status, or no answer, fails the event: the batch is retried,
//! then the deployment's error policy applies. Unkeyed events and
//! tombstones are forwarded unchanged. A batch's lookups go out together
//! (`send-all`), as many at once as the deployment allows.
//!
//! Every call carries the `Idempotency-Key` the host derives from the event
//! (a lookup is safe to repeat anyway; a service with side effects would
//! deduplicate with it).

use leat_sdk::http::{CallError, Request, Response};
use leat_sdk::{Config, Context, Error, Event, Failure, Output, Processor};
use serde_json::{json, Value};

/// The processor: where to look keys up.
pub struct Enrich {
    service: String,
    path: String,
}

impl Enrich {
    fn request(&self, key: &[u8], index: u32) -> Request {
        Request::get(format!("{}{}{}", self.service, self.path, encode(key)))
            .header("accept", "application/json")
            .cause(index)
    }
}

/// The event's output given the service's answer.
fn enriched(event: &Event, answer: Result<Response, CallError>) -> Result<Output, Error> {
    let response = answer?;
    let found = match response.status() {
        404 => Value::Null,
        _ => response.error_for_status()?.json::<Value>()?,
    };
    let value = event.value().map_or(Value::Null, |v| {
        serde_json::from_slice(v)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(v).into()))
    });
    Output::from_event(event).json(&json!({ "value": value, "found": found }))
}

/// `key` percent-encoded for a URL path segment (RFC 3986 unreserved
/// characters kept).
fn encode(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Processor for Enrich {
    fn init(config: &Config) -> Result<Self, Error> {
        let service = config.require("service")?.trim_end_matches('/').to_string();
        if !(service.starts_with("http://") || service.starts_with("https://")) {
            return Err(Error::new(format!(
                "`service` must be an http:// or https:// URL (not `{service}`)"
            )));
        }
        if config.outputs().is_empty() {
            return Err(Error::new("enrich needs an output stream"));
        }
        let path = config.get("path").unwrap_or("/lookup/").to_string();
        Ok(Enrich { service, path })
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        match (event.key(), event.value()) {
            (Some(key), Some(_)) => {
                let index = ctx.current_index().unwrap_or(0);
                let answer = ctx.http().send(self.request(key, index));
                ctx.emit(enriched(event, answer)?)
            }
            _ => ctx.forward(event),
        }
    }

    fn process_batch(&mut self, ctx: &mut Context<'_>, events: &[Event]) -> Result<(), Failure> {
        let mut lookups = Vec::new();
        let mut looked_up = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let (Some(key), Some(_)) = (e.key(), e.value()) {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                lookups.push(self.request(key, index));
                looked_up.push(i);
            }
        }
        let mut answers = ctx.http().send_all(lookups).into_iter();
        let mut next = looked_up.into_iter().peekable();
        for (i, event) in events.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            ctx.set_current(index, event);
            let result = if next.peek() == Some(&i) {
                next.next();
                let answer = answers
                    .next()
                    .unwrap_or_else(|| Err(CallError::Failed("no answer from the host".into())));
                enriched(event, answer).and_then(|out| ctx.emit(out))
            } else {
                ctx.forward(event)
            };
            if let Err(error) = result {
                ctx.clear_current();
                return Err(Failure::at(index, error));
            }
        }
        ctx.clear_current();
        Ok(())
    }
}

leat_sdk::export!(Enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    const SERVICE: &str = "http://127.0.0.1:8080";

    fn host() -> TestHost {
        TestHost::new()
            .with_outputs(["enriched"])
            .with_response(
                "http://127.0.0.1:8080/lookup/alice",
                Ok(Response::new(200, r#"{"tier":"gold"}"#)),
            )
            .with_response(
                "http://127.0.0.1:8080/lookup/b%20b",
                Ok(Response::new(404, "not found")),
            )
            .with_response(
                "http://127.0.0.1:8080/lookup/down",
                Ok(Response::new(503, "try later")),
            )
    }

    fn keyed(key: &str, value: &str) -> Event {
        Event::new("orders").with_key(key).with_value(value)
    }

    #[test]
    fn each_keyed_event_gets_what_the_service_knows() {
        let mut host = host();
        let mut p: Enrich = host.init(&[("service", SERVICE)]).unwrap();
        let out = host
            .run(
                &mut p,
                &[
                    keyed("alice", r#"{"amount":3}"#),
                    keyed("b b", "plain text"),
                    Event::new("orders").with_value("unkeyed"),
                ],
            )
            .unwrap();
        let values: Vec<Value> = out
            .iter()
            .map(|o| serde_json::from_str(o.value_str().unwrap()).unwrap_or(Value::Null))
            .collect();
        assert_eq!(
            values[0],
            json!({"value": {"amount": 3}, "found": {"tier": "gold"}})
        );
        assert_eq!(values[1], json!({"value": "plain text", "found": null}));
        assert_eq!(out[2].value_str(), Some("unkeyed"));
        assert_eq!(out[0].key_str(), Some("alice"));
        // One lookup per keyed event, each made for its event.
        let causes: Vec<Option<u32>> = host.requests().iter().map(Request::cause_index).collect();
        assert_eq!(causes, [Some(0), Some(1)]);
    }

    #[test]
    fn a_failing_service_fails_the_event() {
        let mut host = host();
        let mut p: Enrich = host.init(&[("service", SERVICE)]).unwrap();
        let err = host
            .run(&mut p, &[keyed("alice", "1"), keyed("down", "2")])
            .unwrap_err();
        assert_eq!(err.event_index, Some(1), "{err:?}");
        assert!(err.message.contains("503"), "{err:?}");
        // An undeclared URL: refused, and the event fails with the reason.
        let err = host.run(&mut p, &[keyed("nobody", "1")]).unwrap_err();
        assert!(err.message.contains("is not declared"), "{err:?}");
    }

    #[test]
    fn config_is_checked() {
        let host = host();
        assert!(host.init::<Enrich>(&[]).is_err());
        let e = host
            .init::<Enrich>(&[("service", "ftp://x")])
            .err()
            .unwrap();
        assert!(e.message().contains("http://"), "{e}");
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode(b"a/b c?\xff"), "a%2Fb%20c%3F%FF");
    }
}
