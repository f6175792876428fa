//! The operator's view of the cluster: reflector stores fed by watches, shared by the
//! controllers, so a reconcile reads memory instead of asking the API server.
//!
//! Invariants: one watch per kind, started once per process and kept across leadership terms
//! (a standby replica's view is warm when it takes over); controllers wait until every store
//! has listed once, since an empty store would read as "nothing exists". Objects are stored
//! without `managedFields`, which no controller reads, to keep memory per object small. Secrets
//! are watched as metadata only: the operator never holds Secret data it does not read (the
//! URL an app names is fetched when the Secret's version changes, see `database`).

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use mainstay_crds::{DurableApp, WorkflowRun};
use tokio_util::sync::CancellationToken;

use crate::names::{LABEL_APP, LABEL_MANAGED_BY, LABEL_SCHEDULE, MANAGED_BY};

/// What the controllers read instead of the API server.
#[derive(Clone)]
pub struct Stores {
    pub apps: Store<DurableApp>,
    /// Worker Deployments (those the operator manages).
    pub deployments: Store<Deployment>,
    /// Worker pods (labelled with their app).
    pub pods: Store<Pod>,
    /// Secrets' metadata.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// WorkflowRuns a Schedule made (labelled with it).
    pub schedule_runs: Store<WorkflowRun>,
}

/// The API of kind `K` in `namespace`, or in all namespaces: what the operator watches.
pub fn scoped_api<K>(kube: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    }
}

/// The watch of `api` (as `config` selects) every stored view of the cluster uses: its
/// objects without `managedFields`, which nothing reads and which are a large part of each.
pub(crate) fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config).modify(|o| o.managed_fields_mut().clear())
}

/// Runs a reflector until `stop`, keeping `store` current.
fn reflect<K>(
    writer: reflector::store::Writer<K>,
    stream: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    stop: CancellationToken,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let stream = reflector::reflector(writer, stream.default_backoff());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = stream.for_each(|_| std::future::ready(())) => {}
        }
    });
}

impl Stores {
    /// Starts the watches (of `namespace`, or all) until `stop`.
    pub fn start(kube: &kube::Client, namespace: Option<&str>, stop: &CancellationToken) -> Stores {
        let (apps, w) = reflector::store();
        reflect(w, watch(scoped_api::<DurableApp>(kube, namespace), watcher::Config::default()), stop.clone());
        let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let (deployments, w) = reflector::store();
        reflect(w, watch(scoped_api::<Deployment>(kube, namespace), watcher::Config::default().labels(&managed)), stop.clone());
        let (pods, w) = reflector::store();
        reflect(w, watch(scoped_api::<Pod>(kube, namespace), watcher::Config::default().labels(LABEL_APP)), stop.clone());
        let (secrets, w) = reflector::store();
        reflect(w, watch(scoped_api::<PartialObjectMeta<Secret>>(kube, namespace), watcher::Config::default()), stop.clone());
        let (schedule_runs, w) = reflector::store();
        reflect(w, watch(scoped_api::<WorkflowRun>(kube, namespace), watcher::Config::default().labels(LABEL_SCHEDULE)), stop.clone());
        Stores { apps, deployments, pods, secrets, schedule_runs }
    }

    /// Waits until every store has listed once.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.apps.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.schedule_runs.wait_until_ready().await
    }

    /// The DurableApp `name` of `namespace`.
    pub fn app(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<DurableApp>> {
        self.apps.get(&ObjectRef::new(name).within(namespace))
    }

    /// The DurableApp `name` of `namespace`, asking the API server when the store does not have
    /// it: an app created together with what names it (`kubectl apply -f dir/`) may not have
    /// reached the store yet, and "not found" is reported to users, so it must be true. Costs a
    /// request only when the app is missing.
    pub async fn app_or_fetch(
        &self,
        kube: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<std::sync::Arc<DurableApp>>, kube::Error> {
        if let Some(app) = self.app(namespace, name) {
            return Ok(Some(app));
        }
        Ok(Api::<DurableApp>::namespaced(kube.clone(), namespace).get_opt(name).await?.map(std::sync::Arc::new))
    }

    /// The managed Deployments of app `app` in `namespace`.
    pub fn app_deployments(&self, namespace: &str, app: &str) -> Vec<std::sync::Arc<Deployment>> {
        labelled(&self.deployments, namespace, LABEL_APP, app)
    }

    /// The worker pods of app `app` in `namespace`.
    pub fn app_pods(&self, namespace: &str, app: &str) -> Vec<std::sync::Arc<Pod>> {
        labelled(&self.pods, namespace, LABEL_APP, app)
    }

    /// The `resourceVersion` of Secret `name` of `namespace`, `None` if it does not exist.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets.get(&ObjectRef::new(name).within(namespace)).map(|s| s.resource_version().unwrap_or_default())
    }

    /// The WorkflowRuns labelled with Schedule `schedule` of `namespace`.
    pub fn runs_of_schedule(&self, namespace: &str, schedule: &str) -> Vec<std::sync::Arc<WorkflowRun>> {
        labelled(&self.schedule_runs, namespace, LABEL_SCHEDULE, schedule)
    }
}

/// The objects of `store` in `namespace` whose label `label` is `value`.
fn labelled<K>(store: &Store<K>, namespace: &str, label: &str, value: &str) -> Vec<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace) && o.labels().get(label).map(String::as_str) == Some(value))
        .collect()
}
