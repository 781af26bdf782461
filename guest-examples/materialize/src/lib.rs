//! `materialize`: an entity stream to a table, and the table's changes back
//! to an entity stream.
//!
//! The state is the table: key = the entity's key, value = its latest value.
//! For each keyed input event, a value different from the stored one
//! replaces it and a tombstone deletes it; each such change is emitted to
//! the first declared output as an entity event (the key with its new
//! value, or a tombstone). An event that changes nothing (same value, or a
//! tombstone for a key not in the table) emits nothing. Unkeyed events are
//! not entity events: they are skipped (logged at debug level).

use leat_sdk::{Config, Context, Error, Event, Output, Processor};

/// The processor. The table lives in the state.
pub struct Materialize;

impl Processor for Materialize {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("materialize needs an output stream"));
        }
        Ok(Materialize)
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let Some(key) = event.key() else {
            ctx.debug(format!("skipping unkeyed event {event}"));
            return Ok(());
        };
        let stored = ctx.get(key);
        match event.value() {
            None => {
                if stored.is_some() {
                    ctx.delete(key);
                    ctx.emit(Output::new().key(key).tombstone())?;
                }
            }
            Some(value) => {
                if stored.as_deref() != Some(value) {
                    ctx.put(key, value);
                    ctx.emit(Output::new().key(key).value(value))?;
                }
            }
        }
        Ok(())
    }
}

leat_sdk::export!(Materialize);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;
    use leat_sdk::Level;

    fn setup() -> (TestHost, Materialize) {
        let host = TestHost::new().with_outputs(["table-changes"]);
        let p = host.init(&[]).unwrap();
        (host, p)
    }

    fn put(key: &str, value: &str) -> Event {
        Event::new("entities").with_key(key).with_value(value)
    }

    fn delete(key: &str) -> Event {
        Event::new("entities").with_key(key)
    }

    fn changes(out: &[Output]) -> Vec<(&str, Option<&str>)> {
        out.iter()
            .map(|o| (o.key_str().unwrap(), o.value_str()))
            .collect()
    }

    #[test]
    fn the_table_keeps_the_latest_value_and_emits_changes() {
        let (mut host, mut p) = setup();
        let out = host
            .run(&mut p, &[put("a", "1"), put("b", "1"), put("a", "2")])
            .unwrap();
        assert_eq!(
            changes(&out),
            [("a", Some("1")), ("b", Some("1")), ("a", Some("2"))]
        );
        assert_eq!(out[0].stream(), "table-changes");
        assert_eq!(host.state_value("a"), Some(&b"2"[..]));
        assert_eq!(host.state_value("b"), Some(&b"1"[..]));
    }

    #[test]
    fn unchanged_values_emit_nothing() {
        let (mut host, mut p) = setup();
        host.run(&mut p, &[put("a", "1")]).unwrap();
        let out = host.run(&mut p, &[put("a", "1"), delete("zzz")]).unwrap();
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn tombstones_delete_and_are_emitted() {
        let (mut host, mut p) = setup();
        let out = host
            .run(
                &mut p,
                &[put("a", "1"), delete("a"), delete("a"), put("a", "1")],
            )
            .unwrap();
        assert_eq!(
            changes(&out),
            [("a", Some("1")), ("a", None), ("a", Some("1"))]
        );
        assert!(out[1].is_tombstone());
        assert_eq!(out[1].caused_by(), Some(1));
    }

    #[test]
    fn unkeyed_events_are_skipped() {
        let (mut host, mut p) = setup();
        let e = Event::new("entities").with_value("x").with_position(2, 5);
        let out = host.run(&mut p, &[e]).unwrap();
        assert!(out.is_empty());
        assert!(host.state().is_empty());
        assert_eq!(
            host.logs(),
            [(
                Level::Debug,
                "skipping unkeyed event entities/2@5".to_string()
            )]
        );
    }

    #[test]
    fn binary_keys_and_values_are_kept_as_is() {
        let (mut host, mut p) = setup();
        let e = Event::new("entities")
            .with_key(vec![0, 0xff])
            .with_value(vec![1, 2, 3]);
        let out = host.run(&mut p, &[e]).unwrap();
        assert_eq!(out[0].key_bytes(), Some(&[0, 0xff][..]));
        assert_eq!(host.state_value([0, 0xff]), Some(&[1, 2, 3][..]));
    }
}
