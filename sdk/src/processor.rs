//! [`Processor`]: the trait a processor implements.

use crate::{Config, Context, Error, Event, Failure};

/// A Leat processor. Implement it, then export it with
/// [`export!`](crate::export).
///
/// The host creates an instance with [`Processor::init`], then calls
/// [`Processor::process_batch`] once per batch of events of one partition
/// index of the processor's inputs, in offset order per stream. The default
/// `process_batch` calls [`Processor::process`] for each event.
pub trait Processor: Sized {
    /// Creates the processor from its configuration. An error refuses the
    /// deployment.
    fn init(config: &Config) -> Result<Self, Error>;

    /// Processes one event. An error fails the batch, blaming this event:
    /// the host rolls back the batch and applies its error policy.
    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error>;

    /// Processes one batch. The default calls [`Processor::process`] for
    /// each event in order (marking it with [`Context::set_current`]) and
    /// stops at the first error, returning a [`Failure`] that carries that
    /// event's index.
    fn process_batch(&mut self, ctx: &mut Context<'_>, events: &[Event]) -> Result<(), Failure> {
        for (i, event) in events.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            ctx.set_current(index, event);
            let result = self.process(ctx, event);
            if let Err(error) = result {
                ctx.clear_current();
                return Err(Failure::at(index, error));
            }
        }
        ctx.clear_current();
        Ok(())
    }

    /// The instance now owns these partitions (by index). Does nothing by
    /// default.
    fn on_assigned(&mut self, partitions: &[u32]) {
        let _ = partitions;
    }

    /// The instance no longer owns these partitions. Does nothing by default.
    fn on_revoked(&mut self, partitions: &[u32]) {
        let _ = partitions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    /// Fails on values equal to "bad"; counts what it saw.
    struct Picky {
        seen: usize,
        times: Vec<i64>,
    }

    impl Processor for Picky {
        fn init(_config: &Config) -> Result<Self, Error> {
            Ok(Picky {
                seen: 0,
                times: Vec::new(),
            })
        }

        fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
            self.seen += 1;
            self.times.push(ctx.now());
            if event.value_str() == Some("bad") {
                return Err(Error::new("bad value"));
            }
            ctx.forward(event)
        }
    }

    fn ev(value: &str, ts: i64) -> Event {
        Event::new("in").with_value(value).with_timestamp(ts)
    }

    #[test]
    fn the_default_batch_loop_blames_the_failing_event_and_stops() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut p: Picky = host.init(&[]).unwrap();
        let failure = host
            .run(&mut p, &[ev("a", 1), ev("bad", 2), ev("c", 3)])
            .unwrap_err();
        assert_eq!(failure, Failure::at(1, Error::new("bad value")));
        assert_eq!(p.seen, 2, "stops at the first error");
    }

    #[test]
    fn the_default_batch_loop_marks_each_event() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut p: Picky = host.init(&[]).unwrap();
        let out = host.run(&mut p, &[ev("a", 10), ev("b", 20)]).unwrap();
        let causes: Vec<Option<u32>> = out.iter().map(Output::caused_by).collect();
        assert_eq!(causes, [Some(0), Some(1)]);
        assert_eq!(p.times, [10, 20], "now() is each event's time");
        assert_eq!(host.context().current_index(), None);
    }

    use crate::Output;

    #[test]
    fn partition_callbacks_default_to_nothing() {
        let mut p = Picky::init(&Config::default()).unwrap();
        p.on_assigned(&[1, 2]);
        p.on_revoked(&[1]);
        assert_eq!(p.seen, 0);
    }
}
