//! Streams: ordered values a workflow appends under a key (tokens of an LLM answer, progress
//! lines, partial results) and anyone reads, live or afterwards, from the first value on.
//!
//! Invariants: each write is a step of the writing workflow (a replay does not append again)
//! and gets the next offset of its stream; a reader sees values in offset order, each once,
//! and its stream ends when the writer closes it or once the writer has finished and every
//! value it wrote has been read. Rows are DBOS's `streams`, closed with DBOS's sentinel value,
//! so DBOS clients read mainstay streams and the reverse.

use std::collections::VecDeque;
use std::future::Future;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::error::{Error, Result};
use crate::model::names::{CLOSE_STREAM_OPERATION, STREAMS_CHANNEL, STREAM_CLOSED, WRITE_STREAM_OPERATION};
use crate::model::serialization::{decode, encode};
use crate::model::status::Status;
use crate::runtime::context;
use crate::runtime::wakeup::{self, Subscription, Waiter};
use crate::sysdb::{OpWrite, StreamEntry};

/// Appends `value` to stream `key` of the calling workflow. Only inside a workflow.
pub fn write_stream<T: Serialize + ?Sized>(key: &str, value: &T) -> impl Future<Output = Result<()>> + Send {
    let encoded = encode(value, &format!("a value of stream {key}"), context::payload_limit());
    append(key.to_string(), encoded, WRITE_STREAM_OPERATION)
}

/// Closes stream `key` of the calling workflow: readers end after the values written so far.
/// A workflow's streams also end for readers when it finishes.
pub fn close_stream(key: &str) -> impl Future<Output = Result<()>> + Send {
    append(key.to_string(), encode(STREAM_CLOSED, "the stream-closed marker", context::payload_limit()), CLOSE_STREAM_OPERATION)
}

fn append(key: String, encoded: Result<String>, operation: &'static str) -> impl Future<Output = Result<()>> + Send {
    let position = context::position();
    async move {
        let value = encoded?;
        let Some((ctx, function_id)) = position else {
            return Err(Error::OutsideWorkflow(format!(
                "stream {key} was written {}; a stream belongs to the workflow that writes it \
                 (call it from a #[mainstay::workflow] function)",
                context::not_in_workflow()
            )));
        };
        if ctx.replayed(function_id, operation)?.is_some() {
            return Ok(());
        }
        ctx.check_interrupted()?;
        match ctx.rt.db.write_stream(&ctx.workflow_id, &ctx.owner, function_id, &key, &value, operation).await? {
            OpWrite::Recorded | OpWrite::AlreadyRecorded => Ok(()),
            OpWrite::NotOwner => Err(ctx.lost_ownership().await),
        }
    }
}

/// The values of stream `key` of workflow `workflow_id`, from the first, as they are written.
/// Reads through the launched runtime (see [`Client::read_stream`](crate::Client::read_stream)
/// for processes that run no workflows).
pub fn read_stream<T: DeserializeOwned + Send + 'static>(workflow_id: impl Into<String>, key: &str) -> BoxStream<'static, Result<T>> {
    values(crate::runtime::app::global().map(|rt| rt.waiter()), workflow_id.into(), key.to_string())
}

struct Reader {
    waiter: Waiter,
    workflow_id: String,
    key: String,
    next_offset: i32,
    buffer: VecDeque<StreamEntry>,
    woken: Subscription,
    /// The stored form of the closed marker.
    closed: String,
}

/// The stream of values read through `waiter`.
pub(crate) fn values<T: DeserializeOwned + Send + 'static>(
    waiter: Result<Waiter>,
    workflow_id: String,
    key: String,
) -> BoxStream<'static, Result<T>> {
    let start = waiter.and_then(|waiter| {
        let woken = waiter.wakeups.subscribe(STREAMS_CHANNEL, wakeup::payload(&workflow_id, &key));
        let closed = encode(STREAM_CLOSED, "the stream-closed marker", waiter.db.payload_limit())?;
        Ok(Reader { waiter, workflow_id, key, next_offset: 0, buffer: VecDeque::new(), woken, closed })
    });
    futures::stream::try_unfold(Some(start), |state| async move {
        let Some(reader) = state else { return Ok(None) };
        let mut r = reader?;
        loop {
            if let Some(entry) = r.buffer.pop_front() {
                if entry.value.value == r.closed {
                    return Ok(None);
                }
                let what = format!("value {} of stream {} of workflow {}", entry.offset, r.key, r.workflow_id);
                let value: T = decode(Some(&entry.value.value), entry.value.serialization.as_deref(), &what)?;
                return Ok(Some((value, Some(Ok(r)))));
            }
            // The status first: values written before the workflow finished are visible to the
            // read that follows, so an empty read of a finished workflow is the end.
            let status =
                r.waiter.db.get_status(&r.workflow_id).await?.ok_or_else(|| Error::NotFound { workflow_id: r.workflow_id.clone() })?;
            let active = matches!(status.status, Status::Pending | Status::Enqueued | Status::Delayed);
            let entries = r.waiter.db.read_stream(&r.workflow_id, &r.key, r.next_offset).await?;
            if let Some(last) = entries.last() {
                r.next_offset = last.offset + 1;
                r.buffer.extend(entries);
                continue;
            }
            if !active {
                return Ok(None);
            }
            r.woken.wait(r.waiter.poll).await;
        }
    })
    .boxed()
}
