//! Queue groups in the API's terms: acquire events under locks, settle and
//! renew them, a group's status, settings and resets (see the broker's
//! `queue_ops` for what is guaranteed).

use std::future::Future;
use std::time::Duration;

use leat_api as api;
use leat_broker::{Ack, QueueStart, Waiter};

use crate::error::ControlError;
use crate::log::{event_view, Log};

impl Log {
    /// Locks up to `req.max` events of `req.stream` for `group`, waiting up
    /// to `req.wait_ms` while none is available (blocking: an async caller
    /// passes 0 and waits with [`Log::queue_arrival`]).
    pub fn queue_acquire(
        &self,
        group: &str,
        req: &api::QueueAcquire,
    ) -> Result<api::QueueAcquired, ControlError> {
        self.here()?;
        let lock = Duration::from_millis(req.lock_ms);
        let got = if req.wait_ms == 0 {
            self.broker()
                .queue_acquire(group, &req.stream, req.max, lock)?
        } else {
            self.broker().queue_acquire_wait(
                group,
                &req.stream,
                req.max,
                lock,
                Duration::from_millis(req.wait_ms),
                &mut Waiter::new(),
            )?
        };
        Ok(api::QueueAcquired {
            events: got
                .iter()
                .map(|a| api::QueueEventView {
                    lock: a.lock,
                    delivery_count: a.delivery_count,
                    event: event_view(&a.event),
                })
                .collect(),
        })
    }

    /// A future that completes once `group` may find an event of `stream`
    /// (appended or released), and how long until its first lock on it
    /// expires (which also makes one available): an async caller waits for
    /// the first of both, then acquires again.
    pub fn queue_arrival(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<(impl Future<Output = ()> + Send + 'static, Option<Duration>), ControlError> {
        self.here()?;
        let broker = self.broker();
        Ok((
            broker.queue_arrival(group, stream)?,
            broker.queue_next_expiry(group, stream)?,
        ))
    }

    /// Accepts, releases, rejects or renews events by their locks, all or none.
    pub fn queue_act(
        &self,
        group: &str,
        action: api::QueueAction,
        req: &api::QueueLocks,
    ) -> Result<api::Done, ControlError> {
        self.here()?;
        let broker = self.broker();
        let ack = match action {
            api::QueueAction::Accept => Ack::Accept,
            api::QueueAction::Release => Ack::Release,
            api::QueueAction::Reject => Ack::Reject,
            api::QueueAction::Renew => {
                broker.queue_renew(group, &req.locks, Duration::from_millis(req.lock_ms))?;
                return Ok(api::Done {
                    message: format!("renewed {} lock(s) of queue group {group}", req.locks.len()),
                });
            }
        };
        broker.queue_settle(group, &req.locks, ack)?;
        let done = match ack {
            Ack::Accept => "accepted",
            Ack::Release => "released",
            Ack::Reject => "rejected",
        };
        Ok(api::Done {
            message: format!("{done} {} event(s) of queue group {group}", req.locks.len()),
        })
    }

    /// Where a queue group stands.
    pub fn queue_status(&self, group: &str) -> Result<api::QueueStatusView, ControlError> {
        self.here()?;
        let status = self.broker().queue_status(group)?;
        Ok(api::QueueStatusView {
            group: status.group,
            settings: status.config,
            partitions: status
                .partitions
                .into_iter()
                .map(|p| api::QueuePartitionView {
                    stream: p.stream,
                    partition: p.partition,
                    start: p.start,
                    in_flight: p.in_flight,
                    accepted: p.accepted,
                    rejected: p.rejected,
                    oldest_lock_ms: p
                        .oldest_lock
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    lag: p.lag,
                })
                .collect(),
        })
    }

    /// Changes a queue group's settings: what `change` leaves out stays as
    /// it was. (A read, then a write: of two changes to one group at once,
    /// the later write holds both its own fields and what it read.)
    pub fn queue_configure(
        &self,
        group: &str,
        change: api::QueueSettingsChange,
    ) -> Result<api::Done, ControlError> {
        self.here()?;
        let settings = change.applied_to(self.broker().queue_config(group)?);
        self.broker().queue_configure(group, settings)?;
        Ok(api::Done {
            message: api::queue_settings_line(group, &settings),
        })
    }

    /// Moves a queue group on a stream: every event from `req.to` on is
    /// handed out again.
    pub fn queue_reset(
        &self,
        group: &str,
        req: &api::QueueReset,
    ) -> Result<api::Done, ControlError> {
        self.here()?;
        let to = match req.to {
            api::Position::Beginning => QueueStart::Earliest,
            api::Position::End => QueueStart::Latest,
            api::Position::Offset(o) => QueueStart::Offset(o),
            api::Position::Timestamp(ts) => QueueStart::Timestamp(ts),
        };
        self.broker().queue_reset(group, &req.stream, to)?;
        Ok(api::Done {
            message: format!("queue group {group} on {} reset to {}", req.stream, req.to),
        })
    }
}
