//! Counts every request the operator makes to the Kubernetes API, by verb and resource, as the
//! metric `mainstay_operator_api_requests_total`: what an idle operator costs the API server
//! is measured, not guessed.
//!
//! A tower layer on the kube client's HTTP stack. Labels are bounded: a verb (from the method
//! and whether the request lists or watches) and a resource type (from the URL path), never a
//! name or a namespace.

use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Labels of one counted request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get, list, watch, create, apply, patch, update, delete.
    pub verb: String,
    /// The resource type (`deployments`, `durableapps/status`, `leases`…).
    pub resource: String,
}

/// The verb and resource of a request to the API server, from its method, path and query.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>, content_type: Option<&str>) -> RequestLabels {
    // /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]] or /apis/{group}/{version}/…; a
    // cluster-wide or non-namespaced resource lacks the namespaces/{ns} part.
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [kind] => (kind.to_string(), false),
        [kind, _name] => (kind.to_string(), true),
        [kind, _name, sub, ..] => (format!("{kind}/{sub}"), true),
    };
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PATCH if content_type.is_some_and(|c| c.starts_with("application/apply-patch")) => "apply",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    RequestLabels { verb: verb.to_string(), resource }
}

/// The layer: wraps the client's service so each request is counted once sent.
#[derive(Clone)]
pub struct CountRequests {
    pub counts: Family<RequestLabels, Counter>,
}

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, counts: Arc::new(self.counts.clone()) }
    }
}

/// A service whose requests are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    counts: Arc<Family<RequestLabels, Counter>>,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let labels = classify(req.method(), req.uri().path(), req.uri().query(), content_type);
        self.counts.get_or_create(&labels).inc();
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn of(method: Method, path: &str, query: Option<&str>) -> (String, String) {
        let l = classify(&method, path, query, None);
        (l.verb, l.resource)
    }

    #[test]
    fn requests_are_named_by_verb_and_resource_never_by_object() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(of(Method::GET, "/apis/apps/v1/namespaces/shop/deployments/shop-1", None), s("get", "deployments"));
        assert_eq!(of(Method::GET, "/apis/apps/v1/namespaces/shop/deployments", Some("labelSelector=x")), s("list", "deployments"));
        assert_eq!(of(Method::GET, "/api/v1/pods", Some("watch=true&resourceVersion=1")), s("watch", "pods"));
        assert_eq!(
            of(Method::PATCH, "/apis/mainstay.dev/v1alpha1/namespaces/a/durableapps/shop/status", None),
            s("patch", "durableapps/status")
        );
        assert_eq!(of(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events", None), s("create", "events"));
        assert_eq!(of(Method::DELETE, "/apis/mainstay.dev/v1alpha1/namespaces/a/workflowruns/x", None), s("delete", "workflowruns"));
        assert_eq!(
            of(Method::GET, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/durableapps.mainstay.dev", None),
            s("get", "customresourcedefinitions")
        );
        assert_eq!(of(Method::GET, "/api/v1/namespaces/shop", None), s("get", "namespaces"));
        let apply = classify(&Method::PATCH, "/apis/apps/v1/namespaces/a/deployments/d", None, Some("application/apply-patch+yaml"));
        assert_eq!(apply.verb, "apply");
    }
}
