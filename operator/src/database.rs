//! The operator's way into each DurableApp's system database: URLs read from the app's
//! Secrets, one cached [`mainstay::Client`] per app, migrations run once per database.
//!
//! The operator writes no SQL: everything goes through mainstay's client API. A client is
//! rebuilt when the URL in the Secret changes; failures surface as typed errors the controller
//! turns into conditions, never as panics.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use mainstay::{Client, Config};
use mainstay_crds::{DurableApp, SecretKeyRef};

use crate::stores::Stores;
use tokio::sync::Mutex;

/// Why a database could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(
        "Secret {namespace}/{name} does not exist; create it with \
         `kubectl -n {namespace} create secret generic {name} --from-literal={key}=postgres://USER:PASSWORD@HOST:5432/DB`"
    )]
    SecretMissing { namespace: String, name: String, key: String },
    #[error("Secret {namespace}/{name} has no key {key:?}; add it, or set the key in the DurableApp's database reference")]
    KeyMissing { namespace: String, name: String, key: String },
    #[error("key {key:?} of Secret {namespace}/{name} is not UTF-8 text")]
    NotText { namespace: String, name: String, key: String },
    #[error("failed to read Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{source}; its URL comes from Secret {secret}")]
    Unreachable {
        /// `namespace/name[key]` of the Secret holding the URL.
        secret: String,
        #[source]
        source: mainstay::Error,
    },
    #[error("migrating the system database (URL from Secret {secret}) failed: {source}")]
    Migration {
        secret: String,
        #[source]
        source: mainstay::Error,
    },
}

impl DatabaseError {
    /// Whether fixing it needs a change to a Secret (rather than waiting for the database).
    pub fn is_secret_problem(&self) -> bool {
        matches!(self, Self::SecretMissing { .. } | Self::KeyMissing { .. } | Self::NotText { .. })
    }
}

/// A database as the operator pools connections to it: its URL and system schema.
pub type PoolKey = (String, String);

struct Entry {
    url: String,
    /// The shared pool's key.
    pool: PoolKey,
    client: Client,
}

/// Secret keys read, by `(namespace, name, key)`, with the Secret's version when read.
type SecretCache = HashMap<(String, String, String), SecretKeyValue>;

/// Clients per DurableApp, and which databases are migrated.
#[derive(Default)]
pub struct Databases {
    /// Per app, its client: the pool of its database speaking for its application.
    clients: Mutex<HashMap<String, Entry>>,
    /// One pool per database (URL and schema), shared by the apps on it, so apps sharing a
    /// database cost its connections once.
    pools: Mutex<HashMap<(String, String), Client>>,
    /// Values of Secret keys, read again only when the Secret's version (from the metadata
    /// watch) changes: an idle app costs no Secret read.
    secrets: Mutex<SecretCache>,
    /// `(admin URL, schema)` pairs migrated by this process.
    migrated: Mutex<HashSet<(String, String)>>,
}

/// How long a connection attempt to an app's database may take before the reconcile reports
/// it unreachable and retries later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn key(app: &DurableApp) -> String {
    format!("{}/{}", app.metadata.namespace.as_deref().unwrap_or_default(), app.metadata.name.as_deref().unwrap_or_default())
}

fn config_for(app: &DurableApp, url: &str) -> Config {
    let mut config = Config::new(url);
    if let Some(schema) = &app.spec.database.system_schema {
        config.system_schema = schema.clone();
    }
    // The client speaks for the app in a shared database: its figures, retention and
    // enqueues are the app's own.
    config.app_name = Some(crate::workload::application_name(app));
    config.pool_size = POOL_SIZE;
    config.connect_timeout = CONNECT_TIMEOUT;
    config
}

/// Connections the operator keeps to each database, whatever the number of apps on it.
const POOL_SIZE: u32 = 4;

/// `namespace/name[key]` of a Secret key an app refers to, for messages.
fn secret_name(app: &DurableApp, r: &SecretKeyRef) -> String {
    format!("{}/{}[{}]", app.metadata.namespace.as_deref().unwrap_or_default(), r.name, r.key)
}

/// One key of a Secret, with the Secret's `resourceVersion` (which changes when the Secret
/// does, so it marks a rotation without carrying anything derived from the secret itself).
#[derive(Debug, Clone)]
pub struct SecretKeyValue {
    pub value: String,
    pub version: Option<String>,
}

/// Reads one key of a Secret in `namespace`, with the Secret's version.
pub async fn secret_key(kube: &kube::Client, namespace: &str, r: &SecretKeyRef) -> Result<SecretKeyValue, DatabaseError> {
    let (ns, name, key) = (namespace.to_string(), r.name.clone(), r.key.clone());
    let secret = Api::<Secret>::namespaced(kube.clone(), namespace)
        .get_opt(&r.name)
        .await
        .map_err(|source| DatabaseError::Api { namespace: ns.clone(), name: name.clone(), source })?
        .ok_or_else(|| DatabaseError::SecretMissing { namespace: ns.clone(), name: name.clone(), key: key.clone() })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&r.key)).map(|s| s.clone().into_bytes()))
        .ok_or_else(|| DatabaseError::KeyMissing { namespace: ns.clone(), name: name.clone(), key: key.clone() })?;
    let value = String::from_utf8(bytes).map(|s| s.trim().to_string()).map_err(|_| DatabaseError::NotText { namespace: ns, name, key })?;
    Ok(SecretKeyValue { value, version: secret.metadata.resource_version.clone() })
}

impl Databases {
    /// One key of a Secret of `namespace`: from the cache while the Secret's version (as the
    /// metadata watch shows it) is the one read, else read from the API server.
    pub async fn read_key(
        &self,
        kube: &kube::Client,
        stores: &Stores,
        namespace: &str,
        r: &SecretKeyRef,
    ) -> Result<SecretKeyValue, DatabaseError> {
        let k = (namespace.to_string(), r.name.clone(), r.key.clone());
        // Not in the store: read it (a Secret created a moment ago may not have reached the
        // store, and "missing" is reported to users, so it must be true).
        if let Some(version) = stores.secret_version(namespace, &r.name) {
            if let Some(cached) = self.secrets.lock().await.get(&k).filter(|c| c.version.as_deref() == Some(version.as_str())) {
                return Ok(cached.clone());
            }
        }
        let read = secret_key(kube, namespace, r).await?;
        self.secrets.lock().await.insert(k, read.clone());
        Ok(read)
    }

    /// The URL the app's workers use (`spec.database.urlSecret`), with the version of the
    /// Secret holding it.
    pub async fn worker_secret(&self, kube: &kube::Client, stores: &Stores, app: &DurableApp) -> Result<SecretKeyValue, DatabaseError> {
        let ns = app.metadata.namespace.clone().unwrap_or_default();
        self.read_key(kube, stores, &ns, &app.spec.database.url_secret).await
    }

    /// The client for an app's workers' database.
    pub async fn client(&self, kube: &kube::Client, stores: &Stores, app: &DurableApp) -> Result<Client, DatabaseError> {
        let url = self.worker_secret(kube, stores, app).await?.value;
        self.client_at(app, url).await
    }

    /// The client for an app's workers' database at `url` (already read from its Secret),
    /// reused while the URL stays the same.
    pub async fn client_at(&self, app: &DurableApp, url: String) -> Result<Client, DatabaseError> {
        let k = key(app);
        if let Some(e) = self.clients.lock().await.get(&k) {
            if e.url == url {
                return Ok(e.client.clone());
            }
        }
        let secret = secret_name(app, &app.spec.database.url_secret);
        let config = config_for(app, &url);
        let pool_key = (url.clone(), config.system_schema.clone());
        let base = self.pools.lock().await.get(&pool_key).cloned();
        let base = match base {
            Some(base) => base,
            None => {
                let mut shared = config.clone();
                shared.app_name = None;
                let base = Client::connect_with(&shared).await.map_err(|source| DatabaseError::Unreachable { secret, source })?;
                self.pools.lock().await.insert(pool_key.clone(), base.clone());
                base
            }
        };
        let client = base.for_application(config.app_name.as_deref());
        self.clients.lock().await.insert(k, Entry { url, pool: pool_key, client: client.clone() });
        self.close_unused().await;
        Ok(client)
    }

    /// The database (pool) app `app`'s client reaches, once it has one.
    pub async fn pool_of(&self, app: &DurableApp) -> Option<PoolKey> {
        self.clients.lock().await.get(&key(app)).map(|e| e.pool.clone())
    }

    /// Closes the pools no app's client uses any more.
    async fn close_unused(&self) {
        let used: HashSet<(String, String)> = self.clients.lock().await.values().map(|e| e.pool.clone()).collect();
        let unused: Vec<Client> = {
            let mut pools = self.pools.lock().await;
            let keys: Vec<(String, String)> = pools.keys().filter(|k| !used.contains(*k)).cloned().collect();
            keys.into_iter().filter_map(|k| pools.remove(&k)).collect()
        };
        for pool in unused {
            pool.close().await;
        }
    }

    /// Runs the migrations with the admin URL (`spec.database.adminUrlSecret`, read only when it
    /// names another Secret key than the workers'; otherwise `worker_url`), once per database
    /// and schema per operator process. Returns whether they ran now.
    pub async fn migrate(&self, kube: &kube::Client, stores: &Stores, app: &DurableApp, worker_url: &str) -> Result<bool, DatabaseError> {
        let db = &app.spec.database;
        let (url, secret) = match &db.admin_url_secret {
            Some(admin) if *admin != db.url_secret => {
                let ns = app.metadata.namespace.clone().unwrap_or_default();
                (self.read_key(kube, stores, &ns, admin).await?.value, secret_name(app, admin))
            }
            _ => (worker_url.to_string(), secret_name(app, &db.url_secret)),
        };
        let config = config_for(app, &url);
        let done_key = (url, config.system_schema.clone());
        if self.migrated.lock().await.contains(&done_key) {
            return Ok(false);
        }
        let admin = Client::connect_with(&config).await.map_err(|source| DatabaseError::Unreachable { secret: secret.clone(), source })?;
        let result = admin.migrate().await;
        admin.close().await;
        result.map_err(|source| DatabaseError::Migration { secret, source })?;
        self.migrated.lock().await.insert(done_key);
        Ok(true)
    }

    /// Forgets the clients of apps not in `live` (`namespace/name` keys), closing their
    /// connections.
    pub async fn forget_except(&self, live: &HashSet<String>) {
        self.clients.lock().await.retain(|k, _| live.contains(k));
        self.close_unused().await;
    }

    /// Forgets the values read from Secrets that no longer exist (as the metadata watch
    /// shows them), so a deleted Secret's value does not stay in memory.
    pub async fn forget_deleted_secrets(&self, stores: &Stores) {
        self.secrets.lock().await.retain(|(ns, name, _), _| stores.secret_version(ns, name).is_some());
    }

    /// Forgets an app's client (its DurableApp is gone), closing its database's pool if no
    /// other app uses it.
    pub async fn forget(&self, app: &DurableApp) {
        self.clients.lock().await.remove(&key(app));
        self.close_unused().await;
    }

    /// Forgets that a database is migrated, so the next reconcile migrates it again (after a
    /// failure that suggests the schema went away).
    pub async fn forget_migrations(&self) {
        self.migrated.lock().await.clear();
    }
}
