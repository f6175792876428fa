//! Names that reach the system database and other processes: DBOS's reserved queue, operation
//! names, topics and notification channels. They are part of the DBOS 3.x interface (DBOS's
//! CLI and SDKs read and write the same values), so none may change.

/// Queue that recovery, resume and fork put workflows on; reserved by DBOS.
pub const INTERNAL_QUEUE: &str = "_dbos_internal_queue";

/// Operation name DBOS uses for durable sleeps.
pub const SLEEP_OPERATION: &str = "DBOS.sleep";
/// Operation name of a send inside a workflow (DBOS's).
pub const SEND_OPERATION: &str = "DBOS.send";
/// Operation name of a receive (DBOS's).
pub const RECV_OPERATION: &str = "DBOS.recv";
/// Operation name of `set_event` (DBOS's).
pub const SET_EVENT_OPERATION: &str = "DBOS.setEvent";
/// Operation name of `get_event` inside a workflow (DBOS's).
pub const GET_EVENT_OPERATION: &str = "DBOS.getEvent";
/// Operation name of a stream write (DBOS's).
pub const WRITE_STREAM_OPERATION: &str = "DBOS.writeStream";
/// Operation name of closing a stream (DBOS's).
pub const CLOSE_STREAM_OPERATION: &str = "DBOS.closeStream";

/// DBOS's stored topic for messages sent without one.
pub const NULL_TOPIC: &str = "__null__topic__";
/// The value that marks a stream closed (JSON string `"__DBOS_STREAM_CLOSED__"`).
pub const STREAM_CLOSED: &str = "__DBOS_STREAM_CLOSED__";

/// DBOS's channel for new messages (payload `destination::topic`, from a trigger).
pub const NOTIFICATIONS_CHANNEL: &str = "dbos_notifications_channel";
/// DBOS's channel for events set by workflows (payload `workflow_id::key`).
pub const EVENTS_CHANNEL: &str = "dbos_workflow_events_channel";
/// DBOS's channel for stream writes (payload `workflow_id::key`).
pub const STREAMS_CHANNEL: &str = "dbos_streams_channel";
/// Channel on which a trigger announces newly enqueued work (payload: the queue name).
pub const ENQUEUED_CHANNEL: &str = "mainstay_enqueued";
/// Channel on which cancellations are announced (payload: the workflow ID).
pub const CANCELLED_CHANNEL: &str = "mainstay_cancelled";
