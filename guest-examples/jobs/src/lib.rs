//! `jobs`: a worker for queue mode (`leat deploy --mode queue`). Each event
//! is a job whose value names it; running it emits `done <job>` (key and
//! headers kept) to the first declared output. Any number of instances share
//! the jobs, whatever the input's partition count.
//!
//! Configuration, to show (and test) what a queue worker may meet:
//! - `reject`: a job of this value is rejected, with a reason
//!   ([`Context::reject`]): never delivered again, and dead-lettered;
//! - `fail`: a job of this value fails its batch: it is delivered again,
//!   up to the queue group's `max_deliveries`, then dead-lettered;
//! - `state = "count"`: counts the jobs in the state, which queue mode does
//!   not have: every batch then fails with an error that says so.

use leat_sdk::{Config, Context, Error, Event, Output, Processor};

/// The processor: what it rejects or fails.
pub struct Jobs {
    reject: Option<String>,
    fail: Option<String>,
    count_in_state: bool,
}

impl Processor for Jobs {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("jobs needs an output stream"));
        }
        let count_in_state = match config.get("state") {
            None => false,
            Some("count") => true,
            Some(other) => {
                return Err(Error::new(format!(
                    "unknown `state = {other}`: the only one is `count`"
                )))
            }
        };
        Ok(Jobs {
            reject: config.get("reject").map(String::from),
            fail: config.get("fail").map(String::from),
            count_in_state,
        })
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let job = event.value_str().unwrap_or_default();
        if self.reject.as_deref() == Some(job) {
            return ctx.reject(format!("job `{job}` is not a job this worker runs"));
        }
        if self.fail.as_deref() == Some(job) {
            return Err(Error::new(format!("job `{job}` failed")));
        }
        if self.count_in_state {
            let n = ctx.get_json::<u64>("jobs")?.unwrap_or(0) + 1;
            ctx.put_json("jobs", &n)?;
        }
        ctx.emit(Output::from_event_with_value(event, format!("done {job}")))
    }
}

leat_sdk::export!(Jobs);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    fn setup(config: &[(&str, &str)]) -> (TestHost, Jobs) {
        let host = TestHost::new().with_inputs(["jobs"]).with_outputs(["done"]);
        let p = host.init(config).unwrap();
        (host, p)
    }

    #[test]
    fn jobs_run_and_the_configured_ones_are_rejected() {
        let (mut host, mut p) = setup(&[("reject", "bad")]);
        let batch = [
            Event::new("jobs").with_key("1").with_value("a"),
            Event::new("jobs").with_key("2").with_value("bad"),
            Event::new("jobs").with_key("3").with_value("c"),
        ];
        let out = host.run(&mut p, &batch).unwrap();
        let done: Vec<_> = out.iter().map(|o| o.value_str().unwrap()).collect();
        assert_eq!(done, ["done a", "done c"]);
        assert_eq!(out[1].caused_by(), Some(2));
        assert_eq!(
            host.rejected(),
            [(
                Some(1),
                "job `bad` is not a job this worker runs".to_string()
            )]
        );
    }

    #[test]
    fn a_failing_job_fails_its_batch_blaming_it() {
        let (mut host, mut p) = setup(&[("fail", "boom")]);
        let batch = [
            Event::new("jobs").with_value("a"),
            Event::new("jobs").with_value("boom"),
        ];
        let failure = host.run(&mut p, &batch).unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert!(failure.message.contains("job `boom` failed"), "{failure:?}");
        assert!(host.emitted().is_empty(), "rolled back");
    }

    #[test]
    fn unknown_configuration_is_refused() {
        let host = TestHost::new().with_outputs(["done"]);
        assert!(host.init::<Jobs>(&[("state", "keep")]).is_err());
        assert!(TestHost::new().init::<Jobs>(&[]).is_err());
    }
}
