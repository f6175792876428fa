//! The first stage of each controller: what the CRD schema and its CEL rules cannot check.
//!
//! A resource that fails here gets a `Degraded` condition with reason `InvalidSpec` and a
//! message naming each field and the fix; nothing is applied for it and it is not retried until
//! it changes. Pure: no client, no clock.

use std::collections::BTreeSet;
use std::time::Duration;

use mainstay::config::env as worker_env;
use mainstay::Queue;
use mainstay_crds::{DurableApp, QueueSpec, RateLimitSpec, Schedule};

use crate::names::HEALTH_PORT;
use crate::ticks::CronSchedule;

/// Every problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

/// Longest DurableApp name: worker pod names (`{app}-{version}-{10}-{5}`) must stay within the
/// 63 characters of a hostname, and the version needs a few of them.
pub const MAX_APP_NAME: usize = 36;

/// Environment variables the operator sets on workers; a spec may not set them itself.
pub const RESERVED_ENV: &[&str] = &[
    worker_env::DATABASE_URL,
    worker_env::DATABASE_URL_FALLBACK,
    worker_env::SYSTEM_SCHEMA,
    worker_env::EXECUTOR_ID,
    worker_env::APP_VERSION,
    worker_env::APP_NAME,
    worker_env::LATEST_VERSION,
    worker_env::HEALTH_PORT,
];

/// A DurableApp that passed validation, with what validation derived.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidApp {
    /// The application version of new work: `spec.appVersion`, or the image tag.
    pub version: String,
    /// The queues to write to the system database.
    pub queues: Vec<Queue>,
}

/// Validates a DurableApp.
pub fn durable_app(app: &DurableApp) -> Result<ValidApp, InvalidSpec> {
    let spec = &app.spec;
    let mut problems = Vec::new();
    let name = app.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_APP_NAME {
        problems
            .push(format!("metadata.name {name:?} is {} characters; use at most {MAX_APP_NAME} so worker pod names fit in 63", name.len()));
    }
    let version = match spec.app_version.as_deref().map(str::trim) {
        Some("") => {
            problems.push("spec.appVersion is empty; remove it to use the image tag, or set a version".into());
            String::new()
        }
        Some(v) => v.to_string(),
        None => match image_version(&spec.image) {
            Ok(v) => v,
            Err(why) => {
                problems.push(why);
                String::new()
            }
        },
    };
    let mut seen = BTreeSet::new();
    let mut queues = Vec::new();
    for (i, q) in spec.queues.iter().enumerate() {
        if !seen.insert(q.name.as_str()) {
            problems.push(format!("spec.queues[{i}]: queue {:?} is listed twice; merge the entries", q.name));
            continue;
        }
        let queue = to_queue(q);
        match queue.validate() {
            Ok(()) => queues.push(queue),
            Err(e) => problems.push(format!("spec.queues[{i}]: {e}")),
        }
    }
    for (i, e) in spec.env.iter().enumerate() {
        if RESERVED_ENV.contains(&e.name.as_str()) {
            problems.push(format!(
                "spec.env[{i}] sets {}, which the operator sets from spec.database, spec.appVersion \
                 and the pod name; remove it",
                e.name
            ));
        }
    }
    if let Some(http) = &spec.http {
        if http.port == HEALTH_PORT {
            problems.push(format!("spec.http.port is {HEALTH_PORT}, the port of the workers' health endpoint; pick another"));
        }
    }
    if let Some(r) = &spec.retention {
        if r.max_age_seconds.is_none() && r.max_count.is_none() {
            problems.push("spec.retention sets neither maxAgeSeconds nor maxCount; set one or remove it".into());
        }
    }
    if problems.is_empty() {
        Ok(ValidApp { version, queues })
    } else {
        Err(InvalidSpec(problems))
    }
}

/// The version an image reference pins: its tag, or (for `@sha256:` references without a tag)
/// the first 12 hex digits of its digest. `latest` and untagged images name no version.
pub fn image_version(image: &str) -> Result<String, String> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_segment = rest.rsplit('/').next().unwrap_or(rest);
    let tag = last_segment.rsplit_once(':').map(|(_, t)| t);
    match (tag, digest) {
        (Some("latest"), _) => {
            Err(format!("spec.image {image:?} uses the tag `latest`, which names no version; pin a tag or set spec.appVersion"))
        }
        (Some(t), _) if !t.is_empty() => Ok(t.to_string()),
        (_, Some(d)) => {
            let hex = d.split_once(':').map(|(_, h)| h).unwrap_or(d);
            Ok(hex.chars().take(12).collect())
        }
        _ => Err(format!("spec.image {image:?} has no tag, so it names no version; pin a tag (image:1.2.3) or set spec.appVersion")),
    }
}

fn to_queue(q: &QueueSpec) -> Queue {
    let rate = |r: &RateLimitSpec| mainstay::RateLimit { max: r.max, period: Duration::from_secs_f64(r.period_seconds.max(0.0)) };
    let mut queue = Queue::new(q.name.clone()).priority_enabled(q.priority_enabled);
    queue.concurrency = q.concurrency;
    queue.worker_concurrency = q.worker_concurrency;
    queue.rate_limit = q.rate_limit.as_ref().map(rate);
    if let Some(p) = &q.partitions {
        queue.partitioned = true;
        queue.partition_concurrency = p.concurrency;
        queue.partition_worker_concurrency = p.worker_concurrency;
        queue.partition_rate_limit = p.rate_limit.as_ref().map(rate);
    }
    queue
}

/// Largest `spec.input` (as compact JSON) of a Schedule or WorkflowRun, and of a message: every
/// run carries it into the database and the objects stay small. Larger data belongs elsewhere
/// (object storage, a table), passed by reference.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// A problem with the size of a JSON value a user gave in `field`, if it is too large.
pub fn oversized(field: &str, value: Option<&serde_json::Value>) -> Option<String> {
    let size = serde_json::to_vec(value?).map(|v| v.len()).unwrap_or(0);
    (size > MAX_INPUT_BYTES).then(|| {
        format!("{field} is {size} bytes of JSON; at most {MAX_INPUT_BYTES} are allowed: store large data elsewhere and pass a reference (an ID, a URL)")
    })
}

/// A Schedule that passed validation.
#[derive(Debug, Clone)]
pub struct ValidSchedule {
    pub cron: CronSchedule,
    /// How late a tick may still run.
    pub deadline: Option<chrono::Duration>,
}

/// Validates a Schedule.
pub fn schedule(s: &Schedule) -> Result<ValidSchedule, InvalidSpec> {
    let spec = &s.spec;
    let mut problems = Vec::new();
    let cron = match CronSchedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("spec.schedule/spec.timeZone: {e}"));
            None
        }
    };
    if spec.queue.as_deref().is_some_and(|q| q.trim().is_empty()) {
        problems.push("spec.queue is empty; remove it to use the internal queue, or name a queue".into());
    }
    problems.extend(oversized("spec.input", spec.input.as_ref()));
    let deadline = match spec.starting_deadline_seconds {
        Some(d) if d <= 0 => {
            problems.push("spec.startingDeadlineSeconds must be positive".into());
            None
        }
        Some(d) => Some(chrono::Duration::seconds(d)),
        None => None,
    };
    match (cron, problems.is_empty()) {
        (Some(cron), true) => Ok(ValidSchedule { cron, deadline }),
        _ => Err(InvalidSpec(problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(yaml: &str) -> DurableApp {
        yaml_serde::from_str(yaml).expect("fixture parses")
    }

    const GOOD: &str = r#"
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: shop, namespace: default}
spec:
  image: registry.example.com:5000/shop-worker:1.4.2
  database: {urlSecret: {name: shop-db}}
  queues:
    - {name: orders, concurrency: 10, workerConcurrency: 2}
    - {name: emails, rateLimit: {max: 50, periodSeconds: 1}, partitions: {concurrency: 1}}
"#;

    #[test]
    fn a_good_app_yields_its_version_and_queues() {
        let v = durable_app(&app(GOOD)).unwrap();
        assert_eq!(v.version, "1.4.2", "the tag, not the registry port");
        assert_eq!(v.queues.len(), 2);
        assert_eq!(v.queues[0].concurrency, Some(10));
        assert!(v.queues[1].partitioned && v.queues[1].partition_concurrency == Some(1));
        assert_eq!(v.queues[1].rate_limit.unwrap().period, Duration::from_secs(1));
    }

    #[test]
    fn image_versions_come_from_tags_or_digests_never_latest() {
        assert_eq!(image_version("shop:2").unwrap(), "2");
        assert_eq!(image_version("r.io:443/a/b@sha256:0123456789abcdef0123").unwrap(), "0123456789ab");
        assert_eq!(image_version("r.io/a/b:3.1@sha256:00ff").unwrap(), "3.1");
        assert!(image_version("shop:latest").unwrap_err().contains("spec.appVersion"));
        assert!(image_version("r.io:5000/shop").unwrap_err().contains("no tag"));
    }

    #[test]
    fn every_problem_is_reported_with_its_field_and_fix() {
        let bad = app(r#"
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: shop}
spec:
  image: shop:latest
  database: {urlSecret: {name: db}}
  env: [{name: MAINSTAY_DATABASE_URL, value: "postgres://x"}]
  queues: [{name: a}, {name: a}, {name: b, rateLimit: {max: 1, periodSeconds: 0.0001}}]
  http: {port: 8081}
  retention: {}
"#);
        let err = durable_app(&bad).unwrap_err();
        let text = err.to_string();
        for needle in ["latest", "spec.env[0] sets MAINSTAY_DATABASE_URL", "listed twice", "spec.http.port", "spec.retention"] {
            assert!(text.contains(needle), "missing {needle:?} in: {text}");
        }
        let long = app(&GOOD.replace("name: shop,", &format!("name: {},", "x".repeat(37))));
        assert!(durable_app(&long).unwrap_err().to_string().contains("at most 36"));
        // An explicit version wins over the tag.
        let pinned = app(&GOOD.replace("  queues:", "  appVersion: \"2026.11\"\n  queues:"));
        assert_eq!(durable_app(&pinned).unwrap().version, "2026.11");
    }

    #[test]
    fn a_huge_input_is_refused_with_the_fix() {
        let big = "x".repeat(MAX_INPUT_BYTES);
        let s: Schedule = yaml_serde::from_str(&format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: nightly}}\nspec:\n  appRef: shop\n  workflowName: report\n  schedule: \"@daily\"\n  input: {{blob: {big}}}\n"
        ))
        .unwrap();
        let e = schedule(&s).unwrap_err().to_string();
        assert!(e.contains("spec.input is 65547 bytes") && e.contains("pass a reference"), "{e}");
        assert_eq!(oversized("spec.input", Some(&serde_json::json!({"n": 1}))), None);
        assert_eq!(oversized("spec.input", None), None);
    }

    #[test]
    fn schedules_are_checked_beyond_the_schema() {
        let s = |extra: &str| -> Schedule {
            yaml_serde::from_str(&format!(
                "apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: nightly}}\nspec:\n  appRef: shop\n  workflowName: report\n{extra}"
            ))
            .unwrap()
        };
        let ok = schedule(&s("  schedule: \"0 3 * * *\"\n  timeZone: Europe/Paris\n  startingDeadlineSeconds: 60\n")).unwrap();
        assert_eq!(ok.deadline, Some(chrono::Duration::seconds(60)));
        let err = schedule(&s("  schedule: \"0 25 * * *\"\n")).unwrap_err().to_string();
        assert!(err.contains("spec.schedule") && err.contains("the hour field \"25\" is not valid"), "{err}");
        let err = schedule(&s("  schedule: \"@daily\"\n  timeZone: Moon/Base\n  queue: \"\"\n")).unwrap_err().to_string();
        assert!(err.contains("IANA") && err.contains("spec.queue"), "{err}");
    }
}
