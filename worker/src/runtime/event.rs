//! Events: key-value pairs a workflow publishes about itself (progress, a payment link, an
//! intermediate result) that anyone can read while it runs or after it finished.
//!
//! Invariants: `set_event` is a step of the workflow that sets it (a replay does not set it
//! again) and also appends to the event history; the last value set wins. `get_event` waits
//! for the key to be set, woken by the writer's notification; inside a workflow it is a step
//! whose recorded value (or recorded timeout, a `DBOS.sleep` right after it) a replay returns.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::clock::now_ms;
use crate::model::error::{Error, Result};
use crate::model::names::{EVENTS_CHANNEL, GET_EVENT_OPERATION, SET_EVENT_OPERATION};
use crate::model::serialization::{decode, encode};
use crate::runtime::context::{self};
use crate::runtime::sleep::durable_deadline;
use crate::runtime::step::recorded_result;
use crate::runtime::wakeup::{self, deadline_after, next_wait, Waiter};
use crate::sysdb::{OpWrite, StoredValue};

/// Sets event `key` of the calling workflow to `value`. Only inside a workflow.
pub fn set_event<T: Serialize + ?Sized>(key: &str, value: &T) -> impl Future<Output = Result<()>> + Send {
    let position = context::position();
    let key = key.to_string();
    let encoded = encode(value, &format!("the value of event {key}"), context::payload_limit());
    async move {
        let value = encoded?;
        let Some((ctx, function_id)) = position else {
            return Err(Error::OutsideWorkflow(format!(
                "set_event({key}) was called {}; events belong to the workflow that sets them \
                 (call it from a #[mainstay::workflow] function)",
                context::not_in_workflow()
            )));
        };
        if ctx.replayed(function_id, SET_EVENT_OPERATION)?.is_some() {
            return Ok(());
        }
        ctx.check_interrupted()?;
        match ctx.rt.db.set_event(&ctx.workflow_id, &ctx.owner, function_id, &key, &value).await? {
            OpWrite::Recorded | OpWrite::AlreadyRecorded => Ok(()),
            OpWrite::NotOwner => Err(ctx.lost_ownership().await),
        }
    }
}

/// The value of event `key` of workflow `workflow_id`, waiting up to `timeout` for it to be
/// set; `None` if it was not. Inside a workflow the result is recorded as a step.
pub fn get_event<T: DeserializeOwned + Send>(
    workflow_id: impl Into<String>,
    key: &str,
    timeout: Duration,
) -> impl Future<Output = Result<Option<T>>> + Send {
    let position = context::position_with_timeout();
    let (target, key) = (workflow_id.into(), key.to_string());
    async move {
        let Some((ctx, function_id)) = position else {
            let rt = crate::runtime::app::global()?;
            return wait_for_event(&rt.waiter(), &target, &key, timeout).await;
        };
        if let Some(op) = ctx.replayed(function_id, GET_EVENT_OPERATION)? {
            return recorded_result::<Option<T>>(op, &ctx.workflow_id);
        }
        ctx.check_interrupted()?;
        let started = now_ms();
        let deadline = durable_deadline(&ctx, function_id + 1, timeout).await?;
        let mut woken = ctx.rt.wakeups.subscribe(EVENTS_CHANNEL, wakeup::payload(&target, &key));
        loop {
            if let Some(stored) = ctx.rt.db.get_event(&target, &key).await? {
                let value: T = decode_event(&stored, &target, &key)?;
                return ctx.record_or_replay(function_id, GET_EVENT_OPERATION, stored.value, started, move || Some(value)).await;
            }
            match next_wait(deadline, ctx.rt.config.polling_interval) {
                Some(wait) => ctx.interruptible(woken.wait(wait)).await?,
                None => return ctx.record_or_replay(function_id, GET_EVENT_OPERATION, "null".into(), started, || None).await,
            }
        }
    }
}

fn decode_event<T: DeserializeOwned>(stored: &StoredValue, workflow_id: &str, key: &str) -> Result<T> {
    decode(Some(&stored.value), stored.serialization.as_deref(), &format!("event {key} of workflow {workflow_id}"))
}

/// Waits outside a workflow for event `key` of `workflow_id`.
pub(crate) async fn wait_for_event<T: DeserializeOwned>(
    waiter: &Waiter,
    workflow_id: &str,
    key: &str,
    timeout: Duration,
) -> Result<Option<T>> {
    let deadline = deadline_after(timeout);
    let mut woken = waiter.wakeups.subscribe(EVENTS_CHANNEL, wakeup::payload(workflow_id, key));
    loop {
        if let Some(stored) = waiter.db.get_event(workflow_id, key).await? {
            return decode_event(&stored, workflow_id, key).map(Some);
        }
        match next_wait(deadline, waiter.poll) {
            Some(wait) => woken.wait(wait).await,
            None => return Ok(None),
        }
    }
}
