//! Messages: `send` delivers a value to a workflow, optionally under a topic; the workflow
//! `recv`s them one at a time, oldest first, waiting up to a durable timeout.
//!
//! Invariants: inside a workflow a send is recorded as its step in the statement that stores
//! the message, so a replay never sends twice; a receive marks the message consumed in the
//! statement that records it, so a message is received exactly once even across crashes; the
//! timeout is a recorded `DBOS.sleep` (the ID right after the receive's), so after a crash a
//! `recv` waits only what was left. Messages are DBOS `notifications` rows: DBOS's clients can
//! send to mainstay workflows and the reverse.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::model::clock::now_ms;
use crate::model::error::{Error, Result};
use crate::model::names::{NOTIFICATIONS_CHANNEL, NULL_TOPIC, RECV_OPERATION, SEND_OPERATION};
use crate::model::serialization::{decode, encode};
use crate::runtime::context::{self};
use crate::runtime::sleep::durable_deadline;
use crate::runtime::spans::{self, Operation};
use crate::runtime::step::recorded_result;
use crate::runtime::wakeup::{self, next_wait};
use crate::sysdb::{OpWrite, Received, SystemDatabase};

/// The stored topic: DBOS stores a missing topic as a reserved name.
pub(crate) fn stored_topic(topic: Option<&str>) -> String {
    topic.unwrap_or(NULL_TOPIC).to_string()
}

/// Encodes a message for `destination`, of at most `limit` bytes.
pub(crate) fn encode_message<T: Serialize + ?Sized>(destination: &str, message: &T, limit: usize) -> Result<String> {
    encode(message, &format!("a message to workflow {destination}"), limit)
}

/// Sends an encoded message from outside a workflow, under its stored topic; with an
/// idempotency key, sending again with the same key delivers nothing more.
pub(crate) async fn send_outside(
    db: &SystemDatabase,
    destination: &str,
    message: &str,
    stored_topic: &str,
    idempotency_key: Option<&str>,
) -> Result<()> {
    // Time-ordered IDs: receivers take the oldest first by (created_at_epoch_ms, message_uuid), so
    // messages sent within one millisecond still arrive in the order they were sent.
    let id = idempotency_key.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    db.send(destination, stored_topic, message, &id).await
}

/// Sends `message` to workflow `destination_id` under `topic`. Inside a workflow the send is
/// a step (a replay does not send again); outside one it goes through the launched runtime
/// (see [`Client::send`](crate::Client::send) for processes that run no workflows).
pub fn send<T: Serialize + ?Sized>(
    destination_id: impl Into<String>,
    message: &T,
    topic: Option<&str>,
) -> impl Future<Output = Result<()>> + Send {
    let position = context::position();
    let destination = destination_id.into();
    let topic = stored_topic(topic);
    let encoded = encode_message(&destination, message, context::payload_limit());
    let span = spans::operation(Operation::Send, SEND_OPERATION, position.as_ref());
    async move {
        let message = encoded?;
        let Some((ctx, function_id)) = position else {
            return send_outside(&crate::runtime::app::global()?.db, &destination, &message, &topic, None).await;
        };
        if ctx.replayed(function_id, SEND_OPERATION)?.is_some() {
            return Ok(());
        }
        ctx.check_interrupted()?;
        let id = uuid::Uuid::now_v7().to_string();
        let written = ctx.rt.db.send_from_workflow(&ctx.workflow_id, &ctx.owner, function_id, &destination, &topic, &message, &id).await?;
        match written {
            OpWrite::Recorded | OpWrite::AlreadyRecorded => Ok(()),
            OpWrite::NotOwner => Err(ctx.lost_ownership().await),
        }
    }
    .instrument(span)
}

/// Receives the oldest message sent to the calling workflow under `topic`, waiting up to
/// `timeout` for one; `None` if none came. Only inside a workflow.
pub fn recv<T: DeserializeOwned>(topic: Option<&str>, timeout: Duration) -> impl Future<Output = Result<Option<T>>> + Send {
    let position = context::position_with_timeout();
    let topic = stored_topic(topic);
    let span = spans::operation(Operation::Recv, RECV_OPERATION, position.as_ref());
    async move {
        let Some((ctx, function_id)) = position else {
            return Err(Error::OutsideWorkflow(format!(
                "recv was called {}; only a workflow has messages to receive \
                 (call it from a #[mainstay::workflow] function)",
                context::not_in_workflow()
            )));
        };
        let what = format!("the message received by workflow {} (topic {topic})", ctx.workflow_id);
        if let Some(op) = ctx.replayed(function_id, RECV_OPERATION)? {
            return recorded_result::<Option<T>>(op, &ctx.workflow_id);
        }
        ctx.check_interrupted()?;
        let started = now_ms();
        let deadline = durable_deadline(&ctx, function_id + 1, timeout).await?;
        let mut woken = ctx.rt.wakeups.subscribe(NOTIFICATIONS_CHANNEL, wakeup::payload(&ctx.workflow_id, &topic));
        loop {
            match ctx.rt.db.receive(&ctx.workflow_id, &ctx.owner, function_id, &topic, started).await? {
                Received::Value(v) => return decode(Some(&v.value), v.serialization.as_deref(), &what),
                Received::NotOwner => return Err(ctx.lost_ownership().await),
                Received::Nothing => {}
            }
            match next_wait(deadline, ctx.rt.config.polling_interval) {
                Some(wait) => ctx.interruptible(woken.wait(wait)).await?,
                None => return ctx.record_or_replay(function_id, RECV_OPERATION, "null".into(), started, || None).await,
            }
        }
    }
    .instrument(span)
}
