//! The build stage of the DurableApp controller: the objects it applies, from the spec alone.
//!
//! One worker Deployment per application version, named `{app}-{version}`: each pod gets its
//! database URL from the Secret, its executor ID from its own name (downward API), its version,
//! and probes against the runtime's health endpoint. Security defaults (non-root, read-only
//! root filesystem, no privilege escalation, all capabilities dropped, the runtime's seccomp
//! profile) apply unless the spec overrides them. Pure: no client.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use mainstay::config::env as worker_env;
use mainstay_crds::DurableApp;

use crate::names::*;

/// Longest worker Deployment name: pods add `-{10}-{5}` and must fit in 63 characters.
const MAX_DEPLOYMENT_NAME: usize = 47;

/// A form of `version` usable in names and label values: lowercase letters, digits and `-`,
/// with a short hash appended whenever that changed it, so distinct versions stay distinct.
pub fn version_slug(version: &str, max: usize) -> String {
    let mut slug: String = version.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-').to_string();
    if slug == version && slug.len() <= max && !slug.is_empty() {
        return slug;
    }
    let hash = format!("{:08x}", fnv1a(version) as u32);
    let keep = max.saturating_sub(hash.len() + 1);
    let head: String = slug.chars().take(keep).collect();
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// FNV-1a (64 bits) of `text`. Deployment names derive from it, so it must never change (an
/// upgrade would rename every worker Deployment): the test vectors below hold it.
fn fnv1a(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(text.as_bytes());
    h.finish()
}

/// Name of the worker Deployment of `version`.
pub fn deployment_name(app: &str, version: &str) -> String {
    let room = MAX_DEPLOYMENT_NAME.saturating_sub(app.len() + 1).max(9);
    format!("{app}-{}", version_slug(version, room))
}

/// Labels selecting every worker of an app, of every version.
pub fn app_selector(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_APP.to_string(), app.to_string())])
}

/// The `/scale` selector string of an app's workers.
pub fn app_selector_string(app: &str) -> String {
    format!("{LABEL_APP}={app}")
}

fn version_selector(app: &str, version: &str) -> BTreeMap<String, String> {
    let mut labels = app_selector(app);
    labels.insert(LABEL_VERSION.to_string(), version_slug(version, 63));
    labels
}

fn managed_labels(app: &str, version: &str) -> BTreeMap<String, String> {
    let mut labels = version_selector(app, version);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels.insert(LABEL_COMPONENT.to_string(), COMPONENT_WORKER.to_string());
    labels
}

fn owned_meta(app: &DurableApp, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: app.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: app.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), ..Default::default() }
}

/// The environment the operator gives every worker, before the spec's own.
fn worker_env_vars(app: &DurableApp, version: &str) -> Vec<EnvVar> {
    let db = &app.spec.database;
    let mut env = vec![EnvVar {
        name: worker_env::DATABASE_URL.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: db.url_secret.name.clone(),
                key: db.url_secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if let Some(schema) = &db.system_schema {
        env.push(env_value(worker_env::SYSTEM_SCHEMA, schema.clone()));
    }
    env.push(EnvVar {
        name: worker_env::EXECUTOR_ID.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    });
    env.push(env_value(worker_env::APP_VERSION, version));
    env.push(env_value(worker_env::APP_NAME, application_name(app)));
    env.push(env_value(worker_env::HEALTH_PORT, HEALTH_PORT.to_string()));
    env.extend(app.spec.env.iter().cloned());
    env
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(HEALTH_PORT_NAME.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn default_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

/// `given` over `defaults`, field by field: what the spec sets wins, what it leaves out keeps
/// the safe default (objects such as `capabilities` merge too). A security review should not
/// have to choose between one custom field and every default.
fn over_defaults<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(defaults: T, given: Option<&T>) -> T {
    let Some(given) = given else { return defaults };
    fn merge(base: &mut serde_json::Value, top: serde_json::Value) {
        match (base, top) {
            (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
                for (k, v) in t {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (_, serde_json::Value::Null) => {}
            (b, t) => *b = t,
        }
    }
    let (Ok(mut base), Ok(top)) = (serde_json::to_value(&defaults), serde_json::to_value(given)) else { return given.clone() };
    merge(&mut base, top);
    serde_json::from_value(base).unwrap_or_else(|_| given.clone())
}

fn default_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

/// The application name the workers record (`spec.appName`, default the DurableApp's name).
pub fn application_name(app: &DurableApp) -> String {
    app.spec.app_name.clone().unwrap_or_else(|| app.metadata.name.clone().unwrap_or_default())
}

/// The image of the worker container of a Deployment: the record of what a version runs.
pub fn deployed_image(d: &Deployment) -> Option<&str> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers.iter().find(|c| c.name == WORKER_CONTAINER)?.image.as_deref()
}

/// The worker Deployment of `version` with `replicas` pods. `secret_version` is the
/// `resourceVersion` of the Secret holding the database URL: it is recorded in the pod
/// template, so rotating the Secret rolls the workers onto the new URL.
pub fn worker_deployment(app: &DurableApp, version: &str, replicas: i32, secret_version: Option<&str>) -> Deployment {
    let name = app.metadata.name.clone().unwrap_or_default();
    let spec = &app.spec;
    let extras = &spec.pod_template;
    let mut pod_labels = extras.labels.clone();
    pod_labels.extend(managed_labels(&name, version));
    let mut pod_annotations = extras.annotations.clone();
    pod_annotations.insert(ANNOTATION_VERSION.to_string(), version.to_string());
    if let Some(v) = secret_version {
        pod_annotations.insert(ANNOTATION_DATABASE_SECRET_VERSION.to_string(), v.to_string());
    }
    let mut ports = vec![ContainerPort {
        name: Some(HEALTH_PORT_NAME.into()),
        container_port: HEALTH_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    if let Some(http) = &spec.http {
        ports.push(ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: http.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    let container = Container {
        name: WORKER_CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(worker_env_vars(app, version)),
        ports: Some(ports),
        resources: spec.resources.clone(),
        liveness_probe: Some(probe(LIVENESS_PATH, 10, 3)),
        readiness_probe: Some(probe(READINESS_PATH, 5, 2)),
        security_context: Some(over_defaults(default_container_security(), extras.container_security_context.as_ref())),
        ..Default::default()
    };
    let mut meta = owned_meta(app, deployment_name(&name, version), managed_labels(&name, version));
    meta.annotations = Some(BTreeMap::from([(ANNOTATION_VERSION.to_string(), version.to_string())]));
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas.max(0)),
            revision_history_limit: Some(3),
            selector: LabelSelector { match_labels: Some(version_selector(&name, version)), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: Some(pod_annotations), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: spec.service_account_name.clone(),
                    node_selector: (!extras.node_selector.is_empty()).then(|| extras.node_selector.clone()),
                    tolerations: (!extras.tolerations.is_empty()).then(|| extras.tolerations.clone()),
                    security_context: Some(over_defaults(default_pod_security(), extras.security_context.as_ref())),
                    automount_service_account_token: Some(spec.automount_service_account_token),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// `obj` with an annotation holding a hash of everything else the operator sets on it: a
/// reconcile that finds the same hash on the live object has nothing to apply, and writes
/// nothing (an idle operator makes no writes). The hash is of the desired object, so a change
/// made to the live object by someone else is not undone until the desired one changes.
pub fn with_spec_hash<K: Resource + serde::Serialize>(mut obj: K) -> K {
    let text = serde_json::to_vec(&obj).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    obj.meta_mut().annotations.get_or_insert_with(Default::default).insert(ANNOTATION_SPEC_HASH.to_string(), format!("{hash:016x}"));
    obj
}

/// Whether `live` carries the spec hash of `desired` (see [`with_spec_hash`]).
pub fn unchanged<K: Resource>(live: Option<&K>, desired: &K) -> bool {
    let hash = |o: &K| o.meta().annotations.as_ref().and_then(|a| a.get(ANNOTATION_SPEC_HASH)).cloned();
    live.is_some_and(|l| hash(l).is_some() && hash(l) == hash(desired))
}

/// The Service in front of the workers' HTTP port, if the spec asks for one. It selects
/// workers of every version: all serve the same application.
pub fn http_service(app: &DurableApp) -> Option<Service> {
    let http = app.spec.http.as_ref().filter(|h| h.service)?;
    let name = app.metadata.name.clone().unwrap_or_default();
    let mut labels = app_selector(&name);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    Some(Service {
        metadata: owned_meta(app, name.clone(), labels),
        spec: Some(ServiceSpec {
            selector: Some(app_selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: http.port,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hash_with_fnv1a_forever() {
        // FNV-1a test vectors, and a name computed independently: a change of the hash would
        // rename every worker Deployment on upgrade.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(deployment_name("shop", "1.4.2+build/7"), "shop-1-4-2-build-7-abdb4bab");
    }

    fn app(yaml: &str) -> DurableApp {
        let mut app: DurableApp = yaml_serde::from_str(yaml).expect("fixture parses");
        app.metadata.uid = Some("uid-1".into());
        app
    }

    const APP: &str = r#"
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: shop, namespace: prod}
spec:
  image: shop-worker:1.4.2
  imagePullPolicy: IfNotPresent
  env: [{name: LOG_LEVEL, value: debug}]
  serviceAccountName: shop
  database: {urlSecret: {name: shop-db, key: worker-url}, systemSchema: dbos_shop}
  podTemplate:
    labels: {team: payments, mainstay.dev/app: hijack}
    nodeSelector: {pool: workers}
  http: {port: 8000, service: true}
"#;

    fn env_of(d: &Deployment) -> Vec<EnvVar> {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap()
    }

    #[test]
    fn the_worker_deployment_wires_database_identity_version_and_probes() {
        let a = app(APP);
        let d = worker_deployment(&a, "1.4.2", 3, None);
        assert!(d.metadata.name.as_deref().unwrap().starts_with("shop-1-4-2-"), "{:?}", d.metadata.name);
        assert_eq!(d.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_APP], "shop", "the operator's labels win over the spec's");
        assert_eq!(labels["team"], "payments");
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(&labels[k], v, "the selector matches the pod labels");
        }
        assert_eq!(pod.service_account_name.as_deref(), Some("shop"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "workers");
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        let env = env_of(&d);
        let url = env.iter().find(|e| e.name == "MAINSTAY_DATABASE_URL").unwrap();
        let secret = url.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((secret.name.as_str(), secret.key.as_str()), ("shop-db", "worker-url"));
        let exec = env.iter().find(|e| e.name == "MAINSTAY_EXECUTOR_ID").unwrap();
        assert_eq!(exec.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "metadata.name");
        let val = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(val("MAINSTAY_APP_VERSION").as_deref(), Some("1.4.2"));
        assert_eq!(val("MAINSTAY_SYSTEM_SCHEMA").as_deref(), Some("dbos_shop"));
        assert_eq!(val("MAINSTAY_HEALTH_PORT").as_deref(), Some("8081"));
        assert_eq!(env.last().unwrap().name, "LOG_LEVEL", "the spec's env comes after the operator's");
        let live = c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((live.path.as_deref(), ready.path.as_deref()), (Some("/healthz"), Some("/readyz")));
        let ports: Vec<i32> = c.ports.as_ref().unwrap().iter().map(|p| p.container_port).collect();
        assert_eq!(ports, vec![8081, 8000]);
    }

    #[test]
    fn each_version_gets_its_own_deployment_and_selector() {
        let a = app(APP);
        let v1 = worker_deployment(&a, "1.4.2", 1, None);
        let v2 = worker_deployment(&a, "1.5.0", 1, None);
        assert_ne!(v1.metadata.name, v2.metadata.name);
        let sel = |d: &Deployment| d.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
        assert_ne!(sel(&v1), sel(&v2), "a version's selector never matches another's pods");
    }

    #[test]
    fn version_slugs_are_dns_safe_distinct_and_bounded() {
        assert_eq!(version_slug("v2", 63), "v2");
        let a = version_slug("1.4.2", 63);
        let b = version_slug("1-4-2", 63);
        assert_ne!(a, b, "different versions never share a slug");
        assert_eq!(b, "1-4-2");
        let long = version_slug(&"x".repeat(200), 20);
        assert!(long.len() <= 20, "{long}");
        assert!(version_slug("___", 63).chars().all(|c| c.is_ascii_hexdigit()));
        let name = deployment_name(&"a".repeat(36), "2026.11.21-rc.1+build.7");
        assert!(name.len() <= 47, "{name}");
    }

    #[test]
    fn the_service_is_built_only_when_asked_for() {
        let a = app(APP);
        let svc = http_service(&a).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap()[LABEL_APP], "shop");
        assert_eq!(spec.ports.unwrap()[0].port, 8000);
        let no = app(&APP.replace("service: true", "service: false"));
        assert!(http_service(&no).is_none());
    }

    #[test]
    fn security_settings_merge_over_the_defaults() {
        let a = app(&APP.replace(
            "    nodeSelector: {pool: workers}",
            "    containerSecurityContext: {readOnlyRootFilesystem: false, capabilities: {add: [NET_BIND_SERVICE]}}\n    \
             securityContext: {runAsUser: 1000}",
        ));
        let d = worker_deployment(&a, "1", 1, None);
        let pod = d.spec.unwrap().template.spec.unwrap();
        let c = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(c.read_only_root_filesystem, Some(false), "what the spec sets wins");
        assert_eq!((c.run_as_non_root, c.allow_privilege_escalation), (Some(true), Some(false)), "the rest keeps its defaults");
        let caps = c.capabilities.unwrap();
        assert_eq!((caps.add, caps.drop), (Some(vec!["NET_BIND_SERVICE".to_string()]), Some(vec!["ALL".to_string()])));
        let p = pod.security_context.unwrap();
        assert_eq!(p.run_as_user, Some(1000));
        assert_eq!(p.run_as_non_root, Some(true));
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
        // A default can still be turned off explicitly.
        let b = app(&APP.replace("    nodeSelector: {pool: workers}", "    securityContext: {runAsNonRoot: false}"));
        let pod = worker_deployment(&b, "1", 1, None).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(false));
    }

    #[test]
    fn a_rotated_secret_changes_the_pod_template() {
        let a = app(APP);
        let template = |v: Option<&str>| worker_deployment(&a, "1", 1, v).spec.unwrap().template;
        assert_ne!(template(Some("41")), template(Some("42")), "a new Secret version rolls the workers");
        assert_eq!(template(Some("42")), template(Some("42")));
        let annotations = template(Some("42")).metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[ANNOTATION_DATABASE_SECRET_VERSION], "42");
    }

    #[test]
    fn the_spec_hash_changes_with_what_is_applied_and_only_then() {
        let a = app(APP);
        let one = with_spec_hash(worker_deployment(&a, "1", 1, Some("7")));
        assert!(unchanged(Some(&one), &with_spec_hash(worker_deployment(&a, "1", 1, Some("7")))));
        assert!(!unchanged(Some(&one), &with_spec_hash(worker_deployment(&a, "1", 2, Some("7")))), "replicas");
        assert!(!unchanged(Some(&one), &with_spec_hash(worker_deployment(&a, "1", 1, Some("8")))), "a rotated Secret");
        assert!(!unchanged(None, &one), "nothing live");
        assert!(!unchanged(Some(&worker_deployment(&a, "1", 1, Some("7"))), &one), "a live object without a hash");
    }

    #[test]
    fn workers_get_no_api_token_unless_asked() {
        let pod = worker_deployment(&app(APP), "1", 1, None).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let asked = app(&APP.replace("  serviceAccountName: shop", "  serviceAccountName: shop\n  automountServiceAccountToken: true"));
        let pod = worker_deployment(&asked, "1", 1, None).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(true));
    }
}
