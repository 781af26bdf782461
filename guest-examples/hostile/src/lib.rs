//! `hostile`: a processor that misbehaves on purpose, to check that the host
//! contains it. Not an example to follow.
//!
//! For every event it first does what a well-behaved processor would: it
//! emits the value uppercased (key and headers kept) to its first declared
//! output and records `seen/<value>` in its state. Then, when the event is a
//! target, it misbehaves as configuration `mode` says:
//!
//! - `loop`: spins forever (the host must interrupt it at its time limit);
//! - `memory`: allocates without bound (the host must stop it at its memory cap);
//! - `trap-on`: panics with a message naming the value (the SDK's panic hook
//!   logs it, then the instance traps);
//! - `undeclared`: emits to stream `stream` (default `not-declared`), which is
//!   not among its outputs, straight through the host import, and ignores the
//!   error the host returns;
//! - `garbled`: hands the host outputs that do not follow the WIT's encoded
//!   layout, straight through the `emit-encoded` import, and ignores the
//!   error the host returns;
//! - `init-loop`: spins forever in `init`, so the deployment never starts;
//! - `assign-loop`: spins forever in `on-assigned`;
//! - `assign-trap`: panics in `on-assigned`;
//! - `flood`: emits `count` (default 1,000,000) small outputs;
//! - `emit-loop`: emits one output of `mib` MiB (default 60) through the raw
//!   `emit-encoded` import, again and again, ignoring the host's answers;
//! - `state-bomb`: writes 1 MiB state values under new keys without end;
//! - `log-flood`: logs lines of 64 KiB without end;
//! - `stack`: recurses until its stack overflows;
//! - `call-then-trap`: calls `GET url`, then panics if the answer's body is
//!   `trap` (a service answers `trap` to a key it has not seen: the retry,
//!   with the same idempotency key, goes through);
//! - `call-flood`: calls `GET url` `count` times, ignoring the answers;
//! - `none`: never misbehaves.
//!
//! The targets are the events whose value equals configuration `value`, or
//! every event when `value` is not set. Whatever the outputs and state writes
//! made before the misbehaviour, the host must throw them away with the batch.

use std::hint::black_box;

use leat_sdk::{Config, Context, Error, Event, Output, Processor};

/// What the processor does to a target event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never misbehaves.
    None,
    /// Spins forever.
    Loop,
    /// Allocates until the host stops it.
    Memory,
    /// Panics.
    TrapOn,
    /// Emits to a stream that is not a declared output.
    Undeclared,
    /// Hands over malformed encoded outputs.
    Garbled,
    /// Spins in `on-assigned`.
    AssignLoop,
    /// Panics in `on-assigned`.
    AssignTrap,
    /// Emits `count` outputs.
    Flood,
    /// Emits one big output in a loop.
    EmitLoop,
    /// Writes state without end.
    StateBomb,
    /// Logs without end.
    LogFlood,
    /// Overflows its stack.
    Stack,
    /// Calls `url`, then panics if the answer says `trap`.
    CallThenTrap,
    /// Calls `url` `count` times.
    CallFlood,
}

/// The processor: its misbehaviour and its targets.
pub struct Hostile {
    mode: Mode,
    value: Option<String>,
    stream: String,
    count: u64,
    mib: usize,
    url: String,
}

impl Hostile {
    fn is_target(&self, event: &Event) -> bool {
        match &self.value {
            None => true,
            Some(v) => event.value_str() == Some(v.as_str()),
        }
    }
}

/// Spins forever; `black_box` keeps the optimizer from reasoning about it.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Keeps allocating (and touching) 1 MiB chunks until the host stops it.
fn hoard() -> Result<(), Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let chunk = vec![0xa5u8; 1 << 20];
        hoard.push(black_box(chunk));
        if black_box(hoard.len()) == usize::MAX {
            return Err(Error::new("unreachable: memory is not infinite"));
        }
    }
}

fn unknown_mode(mode: &str) -> Error {
    Error::new(format!(
        "unknown mode `{mode}`: use none, loop, memory, trap-on, undeclared, garbled, init-loop, \
         assign-loop, assign-trap, flood, emit-loop, state-bomb, log-flood, stack, call-then-trap \
         or call-flood"
    ))
}

/// Recurses without end; `black_box` keeps it from becoming a loop.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    black_box(recurse(black_box(depth + 1))).wrapping_add(frame[7])
}

/// Writes 1 MiB values under new keys until the host stops it.
fn state_bomb(ctx: &mut Context<'_>) -> Result<(), Error> {
    let value = vec![0x5au8; 1 << 20];
    for i in 0u64.. {
        ctx.put(format!("bomb/{i}"), &value);
    }
    Err(Error::new("unreachable: keys are not infinite"))
}

/// Logs 64 KiB lines until the host stops it.
fn log_flood(ctx: &mut Context<'_>) -> Result<(), Error> {
    let line = "x".repeat(64 << 10);
    loop {
        ctx.warn(black_box(&line));
    }
}

impl Processor for Hostile {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("hostile needs an output stream"));
        }
        let mode = match config.require("mode")? {
            "none" => Mode::None,
            "loop" => Mode::Loop,
            "memory" => Mode::Memory,
            "trap-on" => Mode::TrapOn,
            "undeclared" => Mode::Undeclared,
            "garbled" => Mode::Garbled,
            "assign-loop" => Mode::AssignLoop,
            "assign-trap" => Mode::AssignTrap,
            "flood" => Mode::Flood,
            "emit-loop" => Mode::EmitLoop,
            "state-bomb" => Mode::StateBomb,
            "log-flood" => Mode::LogFlood,
            "stack" => Mode::Stack,
            "call-then-trap" => Mode::CallThenTrap,
            "call-flood" => Mode::CallFlood,
            "init-loop" => spin(),
            other => return Err(unknown_mode(other)),
        };
        if mode == Mode::TrapOn && config.get("value").is_none() {
            return Err(Error::new("mode `trap-on` needs a `value`"));
        }
        let number = |key: &str, default: u64| -> Result<u64, Error> {
            config.get(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| Error::new(format!("`{key}` must be a whole number, not `{v}`")))
            })
        };
        Ok(Hostile {
            mode,
            value: config.get("value").map(String::from),
            stream: config.get_or("stream", "not-declared").to_owned(),
            count: number("count", 1_000_000)?,
            mib: number("mib", 60)? as usize,
            url: config.get_or("url", "").to_owned(),
        })
    }

    fn on_assigned(&mut self, _partitions: &[u32]) {
        match self.mode {
            Mode::AssignLoop => spin(),
            Mode::AssignTrap => panic!("hostile guest refuses its partitions"),
            _ => {}
        }
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let output = Output::from_event(event);
        let output = match event.value_str() {
            Some(text) => output.value(text.to_uppercase()),
            None => output,
        };
        ctx.emit(output)?;
        let mut seen = b"seen/".to_vec();
        seen.extend_from_slice(event.value().unwrap_or_default());
        ctx.put(seen, "1");
        if !self.is_target(event) {
            return Ok(());
        }
        match self.mode {
            Mode::None => Ok(()),
            Mode::Loop => spin(),
            Mode::Memory => hoard(),
            Mode::TrapOn => panic!(
                "hostile guest poisoned by value {:?}",
                event.value_str().unwrap_or_default()
            ),
            Mode::Undeclared => {
                emit_undeclared(&self.stream, ctx.current_index(), event);
                Ok(())
            }
            Mode::Garbled => {
                emit_garbled();
                Ok(())
            }
            Mode::AssignLoop | Mode::AssignTrap => Ok(()),
            Mode::Flood => {
                for i in 0..self.count {
                    ctx.emit(Output::new().value(i.to_string()))?;
                }
                Ok(())
            }
            Mode::EmitLoop => {
                emit_big_in_a_loop(self.mib << 20);
                Ok(())
            }
            Mode::StateBomb => state_bomb(ctx),
            Mode::LogFlood => log_flood(ctx),
            Mode::Stack => {
                black_box(recurse(0));
                Ok(())
            }
            Mode::CallThenTrap => {
                let answer = ctx.http().get(self.url.as_str())?;
                if answer.body() == b"trap" {
                    panic!("hostile guest told to trap after its call");
                }
                Ok(())
            }
            Mode::CallFlood => {
                for _ in 0..self.count {
                    let _ = black_box(ctx.http().get(self.url.as_str()));
                }
                Ok(())
            }
        }
    }
}

/// Emits `event` to `stream` through the raw host import, bypassing the
/// SDK's checks, and ignores the host's answer.
#[cfg(target_arch = "wasm32")]
fn emit_undeclared(stream: &str, cause: Option<u32>, event: &Event) {
    use leat_sdk::bindings::leat::processor::{host, types};
    let output = types::Output {
        stream: stream.to_owned(),
        key: event.key().map(<[u8]>::to_vec),
        value: event.value().map(<[u8]>::to_vec),
        headers: Vec::new(),
        cause,
    };
    let _ignored = host::emit(&output);
}

/// Natively (tests) there is no host import to call.
#[cfg(not(target_arch = "wasm32"))]
fn emit_undeclared(_stream: &str, _cause: Option<u32>, _event: &Event) {}

/// Hands the host an output whose stream name claims more bytes than
/// follow, through the raw import, and ignores the host's answer.
#[cfg(target_arch = "wasm32")]
fn emit_garbled() {
    let _ignored = leat_sdk::bindings::leat::processor::host::emit_encoded(&[200, 0, 0, 0, b'o']);
}

#[cfg(not(target_arch = "wasm32"))]
fn emit_garbled() {}

/// Builds one encoded output (empty stream: the first declared output, no
/// key, a value of `size` bytes, no headers, no cause) and hands the same
/// buffer to the host again and again, ignoring its answers.
#[cfg(target_arch = "wasm32")]
fn emit_big_in_a_loop(size: usize) {
    let mut buf = Vec::with_capacity(size + 32);
    buf.extend_from_slice(&0u32.to_le_bytes()); // stream: empty
    buf.extend_from_slice(&u32::MAX.to_le_bytes()); // key: none
    buf.extend_from_slice(&(size as u32).to_le_bytes()); // value length
    buf.resize(buf.len() + size, b'v');
    buf.extend_from_slice(&0u32.to_le_bytes()); // no headers
    buf.extend_from_slice(&u32::MAX.to_le_bytes()); // no cause
    loop {
        let _ignored = leat_sdk::bindings::leat::processor::host::emit_encoded(black_box(&buf));
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn emit_big_in_a_loop(_size: usize) {}

leat_sdk::export!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    fn host() -> TestHost {
        TestHost::new().with_inputs(["in"]).with_outputs(["out"])
    }

    #[test]
    fn configuration_picks_the_mode_and_refuses_nonsense() {
        let host = host();
        let p: Hostile = host.init(&[("mode", "loop"), ("value", "x")]).unwrap();
        assert_eq!((p.mode, p.value.as_deref()), (Mode::Loop, Some("x")));
        let err = host.init::<Hostile>(&[("mode", "dance")]).err().unwrap();
        assert!(err.message().contains("unknown mode `dance`"), "{err}");
        let err = host.init::<Hostile>(&[]).err().unwrap();
        assert_eq!(err.message(), "missing configuration `mode`");
        let err = host.init::<Hostile>(&[("mode", "trap-on")]).err().unwrap();
        assert!(err.message().contains("needs a `value`"), "{err}");
    }

    #[test]
    fn events_that_are_not_targets_are_uppercased_and_remembered() {
        let mut host = host();
        let mut p: Hostile = host.init(&[("mode", "trap-on"), ("value", "bad")]).unwrap();
        let out = host
            .run(
                &mut p,
                &[
                    Event::new("in").with_key("k").with_value("good"),
                    Event::new("in").with_value("fine"),
                ],
            )
            .unwrap();
        let values: Vec<_> = out.iter().map(|o| o.value_str()).collect();
        assert_eq!(values, [Some("GOOD"), Some("FINE")]);
        assert_eq!(out[0].key_str(), Some("k"));
        assert_eq!(host.state_value("seen/good"), Some(&b"1"[..]));
    }

    #[test]
    #[should_panic(expected = "hostile guest poisoned by value \"bad\"")]
    fn trap_on_panics_on_its_value() {
        let mut host = host();
        let mut p: Hostile = host.init(&[("mode", "trap-on"), ("value", "bad")]).unwrap();
        let _ = host.run(&mut p, &[Event::new("in").with_value("bad")]);
    }
}
