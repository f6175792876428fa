//! Kubernetes custom resources of mainstay: [`DurableApp`] (a fleet of workers for one
//! application), [`Schedule`] (a cron schedule that enqueues a workflow) and [`WorkflowRun`]
//! (one run of a workflow).
//!
//! This crate depends only on kube, k8s-openapi, schemars and serde: it is shared by the
//! operator and by the generator that writes the CRD YAML into the Helm chart
//! (`cargo run -p mainstay-crds --bin mainstay-crdgen`); a test fails when the committed YAML
//! drifts from these types.

mod durable_app;
mod schedule;
mod schema;
mod workflow_run;

pub use durable_app::*;
pub use schedule::*;
pub use workflow_run::*;

/// API group of mainstay's resources.
pub const GROUP: &str = "mainstay.dev";
/// API version of mainstay's resources.
pub const VERSION: &str = "v1alpha1";

/// Where the generated CRD YAML lives, relative to the repository root.
pub const CHART_CRD_DIR: &str = "charts/mainstay/crds";

/// The CRDs with the file name each is written to.
pub fn crds() -> Vec<(&'static str, k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition)> {
    use kube::CustomResourceExt;
    vec![("durableapps.yaml", DurableApp::crd()), ("schedules.yaml", Schedule::crd()), ("workflowruns.yaml", WorkflowRun::crd())]
}

/// The YAML file for one CRD, as the generator writes it.
pub fn render(crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) -> String {
    let yaml = yaml_serde::to_string(crd).expect("a CRD serializes to YAML");
    format!(
        "# Generated from the Rust types in crds/ by `cargo run -p mainstay-crds --bin mainstay-crdgen`.\n\
         # Do not edit by hand.\n{yaml}"
    )
}
