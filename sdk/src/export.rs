//! The glue between the generated WIT exports and a [`Processor`]: the
//! per-instance storage that [`export!`](crate::export) declares, and the
//! panic hook.

use std::cell::RefCell;

use crate::bindings::leat::processor::types as wit;
use crate::encoded;
use crate::host::WasmHost;
use crate::{Config, Context, Event, Failure, Host, Processor};

/// One instance's processor and the host it talks to, created by `init`.
struct Instance<P, H> {
    processor: P,
    host: H,
}

/// The storage of one component instance (a `thread_local` declared by
/// [`export!`](crate::export)): empty until `init` succeeds.
pub struct Slot<P, H = WasmHost> {
    instance: RefCell<Option<Instance<P, H>>>,
    make_host: fn(&Config) -> H,
}

impl<P: Processor> Slot<P, WasmHost> {
    /// An empty slot whose processor will talk to the runtime.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Slot<P, WasmHost> {
        Slot::with_host(|config| WasmHost::new(config.outputs().to_vec()))
    }
}

impl<P: Processor, H: Host> Slot<P, H> {
    /// An empty slot whose processor will talk to the host `make_host`
    /// builds from the configuration.
    pub const fn with_host(make_host: fn(&Config) -> H) -> Slot<P, H> {
        Slot {
            instance: RefCell::new(None),
            make_host,
        }
    }

    /// The `init` export: installs the panic hook, then creates the
    /// processor. Calling it again replaces the processor.
    pub fn init(&self, config: Vec<(String, String)>) -> Result<(), String> {
        install_panic_hook();
        let config = Config::new(config);
        let processor = P::init(&config).map_err(|e| e.to_string())?;
        let host = (self.make_host)(&config);
        let mut slot = self
            .instance
            .try_borrow_mut()
            .map_err(|_| String::from("init called while the processor is busy"))?;
        *slot = Some(Instance { processor, host });
        Ok(())
    }

    /// The `process` export. Before a successful `init` it fails the batch.
    pub fn process(&self, events: Vec<wit::Event>) -> Result<(), wit::Failure> {
        let events: Vec<Event> = events.into_iter().map(Event::from_wit).collect();
        self.process_events(&events)
    }

    /// The `process-encoded` export: [`Slot::process`] for a batch in the
    /// WIT's encoded layout. A batch it cannot decode fails.
    pub fn process_encoded(&self, batch: Vec<u8>) -> Result<(), wit::Failure> {
        let events = encoded::decode_batch(batch).map_err(|e| Failure::new(e).into_wit())?;
        self.process_events(&events)
    }

    /// Runs the processor over `events` and hands over the outputs kept
    /// back. Before a successful `init` it fails the batch.
    fn process_events(&self, events: &[Event]) -> Result<(), wit::Failure> {
        let mut slot = self
            .instance
            .try_borrow_mut()
            .map_err(|_| Failure::new("process called while the processor is busy").into_wit())?;
        let Some(Instance { processor, host }) = slot.as_mut() else {
            return Err(Failure::new("process called before a successful init").into_wit());
        };
        let mut ctx = Context::new(host);
        let processed = processor.process_batch(&mut ctx, events);
        // Even after a failure: the host throws the batch's outputs away, and
        // nothing kept back may leak into the next batch.
        let flushed = host.flush();
        processed
            .and(flushed.map_err(Failure::from))
            .map_err(Failure::into_wit)
    }

    /// The `on-assigned` export (ignored before `init`).
    pub fn on_assigned(&self, partitions: Vec<u32>) {
        if let Ok(mut slot) = self.instance.try_borrow_mut() {
            if let Some(instance) = slot.as_mut() {
                instance.processor.on_assigned(&partitions);
            }
        }
    }

    /// The `on-revoked` export (ignored before `init`).
    pub fn on_revoked(&self, partitions: Vec<u32>) {
        if let Ok(mut slot) = self.instance.try_borrow_mut() {
            if let Some(instance) = slot.as_mut() {
                instance.processor.on_revoked(&partitions);
            }
        }
    }

    /// Runs `f` on the host of the initialized instance.
    #[cfg(test)]
    fn with_host_of<R>(&self, f: impl FnOnce(&mut H) -> R) -> Option<R> {
        let mut slot = self.instance.borrow_mut();
        slot.as_mut().map(|i| f(&mut i.host))
    }
}

/// A panic traps the instance and its message would be lost (a component
/// has no stderr): send it to the host's log at error level first.
#[cfg(target_arch = "wasm32")]
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("(no message)");
            let line = match info.location() {
                Some(at) => format!(
                    "processor panicked at {}:{}:{}: {message}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => format!("processor panicked: {message}"),
            };
            crate::host::log_error(&line);
        }));
    });
}

/// Native code (tests) keeps the default hook.
#[cfg(not(target_arch = "wasm32"))]
fn install_panic_hook() {}

/// Exports a [`Processor`] as the component's `leat:processor/guest`
/// implementation. Use it once, in the processor's crate:
///
/// ```
/// # use leat_sdk::{Config, Context, Error, Event, Processor};
/// struct Echo;
/// impl Processor for Echo {
///     fn init(_: &Config) -> Result<Self, Error> { Ok(Echo) }
///     fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
///         ctx.forward(event)
///     }
/// }
/// leat_sdk::export!(Echo);
/// ```
///
/// Each component instance keeps its processor in a `thread_local`, created
/// by `init`. `init` also installs a panic hook that sends the panic message
/// and location to the host's log, so that a trap is explained. `process`
/// before a successful `init` fails the batch instead of trapping.
///
/// On other targets than wasm32 (native tests) it exports nothing.
#[macro_export]
macro_rules! export {
    ($processor:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct __LeatGuest;

            ::std::thread_local! {
                #[allow(dead_code)]
                static __LEAT_SLOT: $crate::__private::Slot<$processor> =
                    const { $crate::__private::Slot::new() };
            }

            impl $crate::bindings::exports::leat::processor::guest::Guest for __LeatGuest {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    __LEAT_SLOT.with(|slot| slot.init(config))
                }

                fn process(
                    events: ::std::vec::Vec<$crate::bindings::leat::processor::types::Event>,
                ) -> ::core::result::Result<(), $crate::bindings::leat::processor::types::Failure>
                {
                    __LEAT_SLOT.with(|slot| slot.process(events))
                }

                fn on_assigned(partitions: ::std::vec::Vec<u32>) {
                    __LEAT_SLOT.with(|slot| slot.on_assigned(partitions))
                }

                fn on_revoked(partitions: ::std::vec::Vec<u32>) {
                    __LEAT_SLOT.with(|slot| slot.on_revoked(partitions))
                }
            }

            impl $crate::bindings::exports::leat::processor::encoded_guest::Guest for __LeatGuest {
                fn process_encoded(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), $crate::bindings::leat::processor::types::Failure>
                {
                    __LEAT_SLOT.with(|slot| slot.process_encoded(batch))
                }
            }

            // Only a Wasm component exports the symbols: natively, a cdylib
            // exporting names such as `leat:processor/guest@0.1.2#init` does
            // not even link (GNU ld rejects them in its version script).
            #[cfg(target_arch = "wasm32")]
            $crate::__private::export_guest!(__LeatGuest);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;
    use crate::Error;

    /// Uppercases values; counts partition callbacks; refuses `fail=yes`.
    struct Upper {
        assigned: Vec<u32>,
    }

    impl Processor for Upper {
        fn init(config: &Config) -> Result<Self, Error> {
            if config.get("fail") == Some("yes") {
                return Err(Error::new("refused"));
            }
            Ok(Upper {
                assigned: Vec::new(),
            })
        }

        fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
            let v = event.value_str().ok_or_else(|| Error::new("no text"))?;
            ctx.emit(crate::Output::from_event(event).value(v.to_uppercase()))
        }

        fn on_assigned(&mut self, partitions: &[u32]) {
            self.assigned.extend_from_slice(partitions);
        }

        fn on_revoked(&mut self, partitions: &[u32]) {
            self.assigned.retain(|p| !partitions.contains(p));
        }
    }

    fn slot() -> Slot<Upper, TestHost> {
        Slot::with_host(|config| TestHost::new().with_outputs(config.outputs().iter().cloned()))
    }

    fn wit_event(value: &str) -> wit::Event {
        wit::Event {
            stream: "in".into(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    fn config(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut c = vec![("leat.outputs".to_string(), "out".to_string())];
        c.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        c
    }

    #[test]
    fn an_encoded_batch_runs_as_the_same_list_of_events_does() {
        let events = [
            Event::new("in").with_value("a").with_key("k"),
            Event::new("in").with_value("b").with_position(1, 9),
        ];
        let s = slot();
        s.init(config(&[])).unwrap();
        s.process_encoded(crate::encoded::batch_for_tests(&events))
            .unwrap();
        let emitted = |s: &Slot<Upper, TestHost>| {
            s.with_host_of(|h| {
                h.emitted()
                    .iter()
                    .map(|o| {
                        (
                            o.key_str().map(String::from),
                            o.value_str().map(String::from),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap()
        };
        assert_eq!(
            emitted(&s),
            [
                (Some("k".into()), Some("A".into())),
                (None, Some("B".into()))
            ]
        );
        let failure = s.process_encoded(vec![1, 0, 0]).unwrap_err();
        assert!(
            failure.message.contains("malformed encoded batch"),
            "{}",
            failure.message
        );
        assert_eq!(
            emitted(&s).len(),
            2,
            "a batch it cannot decode emits nothing"
        );
    }

    #[test]
    fn process_before_init_fails_instead_of_trapping() {
        let s = slot();
        let failure = s.process(vec![wit_event("a")]).unwrap_err();
        assert!(failure.message.contains("before a successful init"));
        assert_eq!(failure.event_index, None);
        s.on_assigned(vec![1]);
        s.on_revoked(vec![1]);
    }

    #[test]
    fn a_failed_init_is_reported_and_leaves_the_slot_empty() {
        let s = slot();
        assert_eq!(s.init(config(&[("fail", "yes")])), Err("refused".into()));
        assert!(s.process(vec![]).is_err());
    }

    #[test]
    fn process_runs_the_processor_against_the_host_from_the_config() {
        let s = slot();
        s.init(config(&[])).unwrap();
        s.process(vec![wit_event("a"), wit_event("b")]).unwrap();
        let values = s
            .with_host_of(|h| {
                h.emitted()
                    .iter()
                    .map(|o| (o.stream().to_string(), o.value_str().map(String::from)))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(
            values,
            [
                ("out".to_string(), Some("A".to_string())),
                ("out".to_string(), Some("B".to_string()))
            ]
        );
        let failure = s
            .process(vec![wit_event("c"), {
                let mut e = wit_event("");
                e.value = None;
                e
            }])
            .unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert_eq!(failure.message, "no text");
    }

    /// A [`TestHost`] that keeps outputs back until `flush`, as `WasmHost` does.
    struct KeepsBack {
        inner: TestHost,
        kept: Vec<crate::Output>,
        flushes: usize,
    }

    impl Host for KeepsBack {
        fn log(&mut self, level: crate::Level, message: &str) {
            self.inner.log(level, message);
        }
        fn now(&self) -> i64 {
            self.inner.now()
        }
        fn emit(&mut self, output: crate::Output) -> Result<(), Error> {
            self.kept.push(output);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), Error> {
            self.flushes += 1;
            self.kept.drain(..).try_for_each(|o| self.inner.emit(o))
        }
        fn state_get(&self, key: &[u8]) -> Option<Vec<u8>> {
            self.inner.state_get(key)
        }
        fn state_put(&mut self, key: &[u8], value: &[u8]) {
            self.inner.state_put(key, value);
        }
        fn state_delete(&mut self, key: &[u8]) {
            self.inner.state_delete(key);
        }
        fn state_range(
            &self,
            start: &[u8],
            end: Option<&[u8]>,
            limit: u32,
        ) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.inner.state_range(start, end, limit)
        }
        fn outputs(&self) -> &[String] {
            self.inner.outputs()
        }
    }

    #[test]
    fn what_the_host_kept_back_is_flushed_at_the_end_of_every_batch() {
        let s: Slot<Upper, KeepsBack> = Slot::with_host(|config| KeepsBack {
            inner: TestHost::new().with_outputs(config.outputs().iter().cloned()),
            kept: Vec::new(),
            flushes: 0,
        });
        s.init(config(&[])).unwrap();
        s.process(vec![wit_event("a"), wit_event("b")]).unwrap();
        let seen = |s: &Slot<Upper, KeepsBack>| {
            s.with_host_of(|h| (h.flushes, h.kept.len(), h.inner.emitted().len()))
                .unwrap()
        };
        assert_eq!(seen(&s), (1, 0, 2));
        // A failed batch is flushed too (the host throws it away), so that
        // nothing it kept back is handed over with the next batch.
        let mut tombstone = wit_event("");
        tombstone.value = None;
        assert!(s.process(vec![wit_event("c"), tombstone]).is_err());
        assert_eq!(seen(&s), (2, 0, 3));
    }

    #[test]
    fn partition_callbacks_reach_the_processor() {
        let s = slot();
        s.init(config(&[])).unwrap();
        s.on_assigned(vec![0, 1, 2]);
        s.on_revoked(vec![1]);
        let assigned = s
            .instance
            .borrow()
            .as_ref()
            .map(|i| i.processor.assigned.clone());
        assert_eq!(assigned, Some(vec![0, 2]));
    }
}
