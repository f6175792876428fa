//! The health endpoint a process supervisor (a Kubernetes kubelet, a load balancer) probes.
//!
//! - `GET /healthz` (liveness): 200 while the claim loop keeps turning. It does not look at
//!   the database: restarting a process does not fix an unreachable database, and a liveness
//!   probe that fails on one would turn a database outage into a crash loop.
//! - `GET /readyz` (readiness): 200 when the system database answers within two seconds and the
//!   process is not shutting down; 503 with the reason otherwise.
//! - `GET /metrics`: the worker's Prometheus metrics (see `metrics`), in the format the request
//!   asks for ([`negotiate_metrics`]).
//!
//! Served only when [`Config::health_addr`](crate::Config::health_addr) is set (the
//! `MAINSTAY_HEALTH_PORT` variable); it stops with the runtime.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;

use crate::model::clock::now_ms;
use crate::runtime::app::Runtime;

use crate::model::error::{Error, Result};

/// Path of the liveness check.
pub const LIVENESS_PATH: &str = "/healthz";
/// Path of the readiness check.
pub const READINESS_PATH: &str = "/readyz";
/// Path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The media type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` answer (content type header and body) to a request with these headers, from
/// the metrics' OpenMetrics text: itself to a scraper whose `Accept` asks for OpenMetrics
/// (Prometheus does), the classic text format otherwise (`curl`, `promtool check metrics`,
/// older scrapers). The operator's `/metrics` answers the same way.
pub fn negotiate_metrics(request: &HeaderMap, openmetrics: String) -> ([(HeaderName, &'static str); 1], String) {
    let accept = request.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], openmetrics)
    } else {
        ([(header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)], classic_text(&openmetrics))
    }
}

/// The classic text format of OpenMetrics text. They differ, for what the encoder writes, in
/// three things: OpenMetrics names a counter's family without the `_total` its samples carry
/// (the classic format names the family after its samples), and ends with `# EOF`; `# UNIT`
/// lines are OpenMetrics only.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|kind| {
            let rest = line.strip_prefix(kind)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{kind}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// How long the database may take to answer a readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the endpoint (so a taken port fails the launch, not a later probe) and serves it
/// until the runtime shuts down.
pub(crate) async fn serve(rt: Arc<Runtime>, addr: std::net::SocketAddr) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Io {
        what: format!("cannot serve the health endpoint on {addr} (set {} to a free port)", crate::model::config::env::HEALTH_PORT),
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| Error::Io { what: "health endpoint".into(), source })?;
    let router = Router::new()
        .route(LIVENESS_PATH, get(live))
        .route(READINESS_PATH, get(ready))
        .route(METRICS_PATH, get(metrics))
        .with_state(rt.clone());
    let stop = rt.shutdown.clone();
    rt.tasks.spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });
    tracing::info!(addr = %bound, "serving {LIVENESS_PATH}, {READINESS_PATH} and {METRICS_PATH}");
    Ok(bound)
}

/// The claim loop has not turned for this long: it is stuck, and a restart is the cure.
fn stall_limit(rt: &Runtime) -> Duration {
    // Its longest regular sleep is the polling interval backed off 32 times after failures.
    Duration::from_secs(120).max(rt.config.polling_interval * 64)
}

async fn live(State(rt): State<Arc<Runtime>>) -> (StatusCode, String) {
    let idle_ms = now_ms() - rt.heartbeat_ms.load(Ordering::Relaxed);
    let limit = stall_limit(&rt);
    if !rt.shutdown.is_cancelled() && idle_ms > limit.as_millis() as i64 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the claim loop has not run for {} s (limit {} s)\n", idle_ms / 1000, limit.as_secs()),
        );
    }
    (StatusCode::OK, "ok\n".to_string())
}

async fn metrics(State(rt): State<Arc<Runtime>>, request: HeaderMap) -> ([(HeaderName, &'static str); 1], String) {
    let pool = rt.db.pool();
    rt.metrics.pool_connections.set(i64::from(pool.size()));
    rt.metrics.pool_idle.set(pool.num_idle() as i64);
    negotiate_metrics(&request, rt.metrics.encode())
}

async fn ready(State(rt): State<Arc<Runtime>>) -> (StatusCode, String) {
    if rt.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_string());
    }
    match tokio::time::timeout(READY_TIMEOUT, rt.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("system database: {e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("system database did not answer within {} s\n", READY_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counter_families_after_their_samples() {
        let open = "# HELP a_started Started.\n# TYPE a_started counter\na_started_total{w=\"x\"} 3\n\
                    # HELP a_pool Pool.\n# TYPE a_pool gauge\na_pool 2\n# UNIT a_pool connections\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP a_started_total Started.\n# TYPE a_started_total counter\na_started_total{w=\"x\"} 3\n\
             # HELP a_pool Pool.\n# TYPE a_pool gauge\na_pool 2\n"
        );
    }
}
