//! OpenTelemetry: export of the spans over OTLP, and trace context carried by workflows
//! (feature `opentelemetry-otlp`; without it every function here does nothing).
//!
//! Export is configured the standard way, by the `OTEL_*` environment variables: it is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`; the service is
//! `OTEL_SERVICE_NAME`, batching follows `OTEL_BSP_*`. Spans go over OTLP/HTTP (protobuf).
//!
//! Invariants: the context stored with a workflow is the W3C `traceparent` of the span that
//! started or enqueued it (a request's, or a parent workflow's child operation), written in the
//! statement that inserts the workflow; every execution of the workflow that does not run under
//! its starter's span (a claim from a queue, a recovery, another worker) takes that context as
//! its parent, so all its executions, wherever and however often they run, join the trace that
//! started it. Without an exporter installed no context is stored.

use tracing::Span;

#[cfg(feature = "opentelemetry-otlp")]
mod otlp {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::model::error::{Error, Result};

    const TRACEPARENT: &str = "traceparent";

    /// The provider export runs on, once installed.
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    fn propagator() -> TraceContextPropagator {
        TraceContextPropagator::new()
    }

    fn env_set(name: &str) -> bool {
        std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
    }

    /// Whether the `OTEL_*` variables ask for span export.
    pub(crate) fn export_requested() -> bool {
        let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let none = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim().eq_ignore_ascii_case("none"));
        !disabled && !none && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    }

    /// A `tracing` layer exporting spans over OTLP, when the environment asks for it.
    pub(crate) fn layer<S>() -> Result<Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        if !export_requested() {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| Error::Config(format!("cannot export spans over OTLP as the OTEL_* variables ask: {e}")))?;
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).build();
        let tracer = provider.tracer("mainstay");
        opentelemetry::global::set_tracer_provider(provider.clone());
        let _ = PROVIDER.set(provider);
        Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
    }

    /// The `traceparent` of the current span, when it is part of an exported trace.
    pub(crate) fn current_traceparent() -> Option<String> {
        PROVIDER.get()?;
        let cx = Span::current().context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        propagator().inject_context(&cx, &mut carrier);
        carrier.remove(TRACEPARENT)
    }

    /// Makes `span` a child of the context in `traceparent`.
    pub(crate) fn continue_trace(span: &Span, traceparent: &str) {
        let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
        let cx = propagator().extract(&carrier);
        if cx.span().span_context().is_valid() {
            // Fails only for a span that is already closed, which a new one is not.
            let _ = span.set_parent(cx);
        }
    }

    /// Exports every span ended so far.
    pub(crate) async fn flush() {
        if let Some(provider) = PROVIDER.get() {
            let provider = provider.clone();
            // The batch exporter's flush blocks on its own thread's answer.
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "could not export the last spans");
            }
        }
    }
}

#[cfg(feature = "opentelemetry-otlp")]
pub(crate) use otlp::{flush, layer};

/// The W3C `traceparent` to store with a workflow started or enqueued under the current span
/// (`None`: no trace is exported).
pub(crate) fn current_traceparent() -> Option<String> {
    #[cfg(feature = "opentelemetry-otlp")]
    return otlp::current_traceparent();
    #[cfg(not(feature = "opentelemetry-otlp"))]
    None
}

/// Makes a workflow execution's `span` continue the trace its workflow was started in.
pub(crate) fn continue_trace(span: &Span, traceparent: Option<&str>) {
    #[cfg(feature = "opentelemetry-otlp")]
    if let Some(tp) = traceparent {
        otlp::continue_trace(span, tp);
    }
    #[cfg(not(feature = "opentelemetry-otlp"))]
    let _ = (span, traceparent);
}

/// Exports the spans ended so far (before the process exits).
#[cfg(not(feature = "opentelemetry-otlp"))]
pub(crate) async fn flush() {}
