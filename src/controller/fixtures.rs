//! Unit-test harness of the reconcile (as kube-rs's controller-rs `fixtures.rs`): a mocked
//! Kubernetes API (`tower-test`) that answers like an API server holding one
//! SecurityProvider, a fake backend, and one timeline on which both record what they were
//! asked, in order, so a test can assert the exact sequence of Kubernetes requests and remote
//! calls.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::context::{Context, Settings};
use crate::api::provider_connection::CoveoConnection;
use crate::api::security_provider::CoveoProviderSpec;
use crate::api::{
    FINALIZER, ProviderConnection, ProviderConnectionSpec, SecretKeyRef, SecurityProvider,
    SecurityProviderSpec,
};
use crate::backend::coveo::CoveoConfig;
use crate::backend::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth, RemoteState,
};
use crate::error::{RemoteError, RemoteErrorKind};
use crate::metrics::Metrics;

pub const NAMESPACE: &str = "ns";
pub const NAME: &str = "idp";
pub const CONNECTION: &str = "conn";
/// Path of the test SecurityProvider.
pub const SP_PATH: &str = "/apis/secprov.dev/v1alpha1/namespaces/ns/securityproviders/idp";

/// Path of every SecurityProvider of the cluster.
pub const CLUSTER_LIST_PATH: &str = "/apis/secprov.dev/v1alpha1/securityproviders";

/// The path of a SecurityProvider.
pub fn path_of(sp: &SecurityProvider) -> String {
    format!(
        "/apis/secprov.dev/v1alpha1/namespaces/{}/securityproviders/{}",
        sp.namespace().unwrap_or_default(),
        sp.name_any()
    )
}

/// One thing that happened, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// A Kubernetes request (Events excluded: they are published in the background).
    Kube {
        method: String,
        /// Path and query.
        uri: String,
        content_type: String,
        body: Value,
    },
    /// A call on the fake backend, e.g. `create idp`.
    Remote(String),
}

/// The shared record of calls.
#[derive(Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<Call>>>);

impl Timeline {
    fn push(&self, call: Call) {
        self.0.lock().unwrap().push(call);
    }

    /// Removes and returns the first call recorded (None when there is none).
    pub fn take_first(&self) -> Option<Call> {
        let mut calls = self.0.lock().unwrap();
        (!calls.is_empty()).then(|| calls.remove(0))
    }

    /// Everything recorded so far.
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    /// The remote calls only.
    pub fn remote(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Remote(r) => Some(r),
                Call::Kube { .. } => None,
            })
            .collect()
    }

    /// The Kubernetes requests only, as (method, path and query, content type, body).
    pub fn kube(&self) -> Vec<(String, String, String, Value)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Kube {
                    method,
                    uri,
                    content_type,
                    body,
                } => Some((method, uri, content_type, body)),
                Call::Remote(_) => None,
            })
            .collect()
    }

    /// A compact form for sequence assertions: `GET <path>`, `PATCH <path>` or `remote ...`.
    pub fn steps(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|c| match c {
                Call::Kube { method, uri, .. } => {
                    format!("{method} {}", uri.split('?').next().unwrap_or_default())
                }
                Call::Remote(r) => format!("remote {r}"),
            })
            .collect()
    }
}

/// Events the mocked API received: (type, reason).
#[derive(Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<(String, String)>>>);

impl EventLog {
    /// The reasons published so far.
    pub fn reasons(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|e| e.1.clone()).collect()
    }

    /// The types (`Normal`, `Warning`) of the Events published with `reason` so far.
    pub fn types_of(&self, reason: &str) -> Vec<String> {
        let quoted = format!("{reason:?}");
        let log = self.0.lock().unwrap();
        let types = log.iter().filter(|e| e.1 == quoted);
        types.map(|e| e.0.trim_matches('"').to_owned()).collect()
    }
}

/// A mocked API server holding `objects` (path, JSON): a GET or PATCH of one (or of its
/// status) answers with it, a write whose resourceVersion precondition the object no longer
/// matches 409, anything else 404; Events are accepted and logged apart.
pub fn mock_client(objects: Vec<(String, Value)>, timeline: Timeline, events: EventLog) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            if path.contains("/events") {
                let event = (body["type"].to_string(), body["reason"].to_string());
                events.0.lock().unwrap().push(event);
                send.send_response(json_response(StatusCode::CREATED, &body));
                continue;
            }
            let response = match stale_precondition(&objects, &path, &body) {
                true => conflict(),
                false if parts.method == http::Method::PATCH && path.ends_with("/status") => {
                    answer_status_write(&objects, &path, &body)
                }
                false => answer(&objects, &path),
            };
            timeline.push(Call::Kube {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body,
            });
            send.send_response(response);
        }
    });
    Client::new(service, "default")
}

/// Whether `body` is a write carrying a `metadata.resourceVersion` precondition that the
/// stored object no longer has (the API server answers 409).
fn stale_precondition(objects: &[(String, Value)], path: &str, body: &Value) -> bool {
    let Some(expected) = body["metadata"]["resourceVersion"].as_str() else {
        return false;
    };
    // The object and its status subresource share one resourceVersion.
    let object_path = path.strip_suffix("/status").unwrap_or(path);
    objects
        .iter()
        .find(|(p, _)| p == object_path)
        .and_then(|(_, object)| object["metadata"]["resourceVersion"].as_str())
        .is_some_and(|stored| stored != expected)
}

fn conflict() -> Response<Body> {
    json_response(
        StatusCode::CONFLICT,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                "code": 409, "message": "the object has been modified; please apply your changes to the latest version and try again"}),
    )
}

fn answer(objects: &[(String, Value)], path: &str) -> Response<Body> {
    if path.ends_with("/securityproviders") {
        let items: Vec<&Value> = objects
            .iter()
            .filter(|(p, _)| p.starts_with(path) || path == CLUSTER_LIST_PATH)
            .map(|(_, o)| o)
            .collect();
        let list = json!({"apiVersion": "secprov.dev/v1alpha1", "kind": "SecurityProviderList",
                          "metadata": {}, "items": items});
        return json_response(StatusCode::OK, &list);
    }
    let found = objects
        .iter()
        .find(|(p, _)| path == p || path.strip_suffix("/status") == Some(p.as_str()));
    match found {
        Some((_, object)) => json_response(StatusCode::OK, object),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"}),
        ),
    }
}

/// Path of the SecurityProvider CRD. When the mocked API server holds one, a status write
/// keeps only the status fields its schema knows, as an API server prunes unknown fields.
pub const SP_CRD_PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/securityproviders.secprov.dev";

/// The answer to a status write (a server-side apply of the whole status): the object with
/// the written status, as the API server returns what it stored (pruned to the CRD's schema
/// when it holds the CRD). The stored object itself stays as the test set it.
fn answer_status_write(objects: &[(String, Value)], path: &str, body: &Value) -> Response<Body> {
    let object_path = path.strip_suffix("/status").unwrap_or(path);
    let Some((_, object)) = objects.iter().find(|(p, _)| p == object_path) else {
        return answer(objects, path);
    };
    let mut written = object.clone();
    written["status"] = body["status"].clone();
    let crd = objects.iter().find(|(p, _)| p == SP_CRD_PATH);
    let known = crd.map(|(_, crd)| {
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    });
    if let (Some(known), Some(status)) = (known, written["status"].as_object_mut()) {
        status.retain(|field, _| known.get(field).is_some());
    }
    json_response(StatusCode::OK, &written)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// The Coveo configuration a provider `id` shown as `display` has.
pub fn coveo_config(id: &str, display: &str) -> ProviderConfig {
    ProviderConfig::Coveo(CoveoConfig::desired(
        id,
        display,
        &CoveoProviderSpec::default(),
    ))
}

/// A remote provider as the fake returns it.
pub fn remote(id: &str, display: &str) -> ObservedProvider {
    ObservedProvider {
        remote_id: id.into(),
        config: coveo_config(id, display),
        state: RemoteState::default(),
        health: RemoteHealth::Healthy,
    }
}

/// A backend holding providers in memory, recording every call on the timeline.
#[derive(Default)]
pub struct FakeBackend {
    pub providers: Mutex<BTreeMap<String, ObservedProvider>>,
    /// A provider our own earlier create made, invisible until the next create answers 409.
    pub lost_create: Mutex<Option<ObservedProvider>>,
    /// Operations (`create`, `update`, ...) that fail, and how.
    pub failing: Mutex<BTreeMap<&'static str, RemoteErrorKind>>,
    /// When set, every observe fails with this kind (a remote outage, refused credentials).
    pub observe_failure: Mutex<Option<RemoteErrorKind>>,
    /// When set, every observe first waits this long (a hanging remote).
    pub observe_delay: Mutex<Option<std::time::Duration>>,
    /// When set, a create makes the provider, then fails with this kind (a backend whose
    /// create takes several calls, the later one refused).
    pub fail_after_create: Mutex<Option<RemoteErrorKind>>,
    pub timeline: Timeline,
}

impl FakeBackend {
    /// A fake holding `providers`.
    pub fn with(timeline: &Timeline, providers: &[ObservedProvider]) -> Arc<FakeBackend> {
        Arc::new(FakeBackend {
            providers: Mutex::new(
                providers
                    .iter()
                    .map(|p| (p.remote_id.clone(), p.clone()))
                    .collect(),
            ),
            lost_create: Mutex::new(None),
            failing: Mutex::new(BTreeMap::new()),
            observe_failure: Mutex::new(None),
            observe_delay: Mutex::new(None),
            fail_after_create: Mutex::new(None),
            timeline: timeline.clone(),
        })
    }

    fn record(&self, call: String) {
        self.timeline.push(Call::Remote(call));
    }

    fn error(operation: &'static str, kind: RemoteErrorKind) -> RemoteError {
        RemoteError::transport("fake", operation, kind, "fake")
    }

    /// Makes `operation` fail with `kind` from now on.
    pub fn fail(&self, operation: &'static str, kind: RemoteErrorKind) {
        self.failing.lock().unwrap().insert(operation, kind);
    }

    fn check(&self, operation: &'static str) -> Result<(), RemoteError> {
        match self.failing.lock().unwrap().get(operation) {
            Some(kind) => Err(Self::error(operation, *kind)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl ProviderBackend for FakeBackend {
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        self.record(format!("observe {}", key.id));
        let delay = *self.observe_delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(kind) = *self.observe_failure.lock().unwrap() {
            return Err(Self::error("get", kind));
        }
        let providers = self.providers.lock().unwrap();
        let by_id = key
            .known_remote_id
            .as_ref()
            .and_then(|id| providers.get(id));
        Ok(by_id
            .or_else(|| providers.values().find(|p| p.config.lookup_key() == key.id))
            .cloned())
    }

    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        let id = desired.lookup_key().to_owned();
        self.record(format!("create {id}"));
        self.check("create")?;
        let mut providers = self.providers.lock().unwrap();
        if let Some(lost) = self.lost_create.lock().unwrap().take() {
            providers.insert(lost.remote_id.clone(), lost);
        }
        if providers.contains_key(&id) {
            return Err(Self::error("create", RemoteErrorKind::Conflict));
        }
        let created = ObservedProvider {
            config: desired.clone(),
            ..remote(&id, "")
        };
        providers.insert(id, created.clone());
        if let Some(kind) = *self.fail_after_create.lock().unwrap() {
            return Err(Self::error("create", kind));
        }
        Ok(created)
    }

    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        self.record(format!("update {}", observed.remote_id));
        self.check("update")?;
        let updated = ObservedProvider {
            config: desired.clone(),
            ..observed.clone()
        };
        let mut providers = self.providers.lock().unwrap();
        providers.insert(updated.remote_id.clone(), updated.clone());
        Ok(updated)
    }

    async fn delete(
        &self,
        remote_id: &str,
        _desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
        self.record(format!("delete {remote_id}"));
        Ok(self.providers.lock().unwrap().remove(remote_id).is_some())
    }

    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        self.record(format!("refresh {remote_id}"));
        let mut providers = self.providers.lock().unwrap();
        let provider = providers
            .get_mut(remote_id)
            .ok_or_else(|| Self::error("refresh", RemoteErrorKind::NotFound))?;
        provider.state.busy = true;
        Ok(true)
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        self.record("verify".into());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        self.record("list".into());
        Ok(self.providers.lock().unwrap().values().cloned().collect())
    }
}

/// The test ProviderConnection (Coveo, API key in Secret `key`).
pub fn connection(generation: i64) -> ProviderConnection {
    let mut c = ProviderConnection::new(
        CONNECTION,
        ProviderConnectionSpec {
            coveo: Some(CoveoConnection {
                organization_id: "org".into(),
                endpoint: None,
                api_key_secret_ref: SecretKeyRef {
                    name: "key".into(),
                    key: "apiKey".into(),
                },
            }),
            keystone: None,
            jitsudo: None,
            rate_limit: None,
            timeout_seconds: None,
            ca_bundle_secret_ref: None,
            max_response_bytes: None,
        },
    );
    c.metadata.namespace = Some(NAMESPACE.into());
    c.metadata.uid = Some("conn-uid".into());
    c.metadata.generation = Some(generation);
    c
}

/// The test SecurityProvider: Coveo, id `idp`, finalizer set, generation 1, no status.
pub fn provider() -> SecurityProvider {
    let mut sp = SecurityProvider::new(
        NAME,
        SecurityProviderSpec {
            coveo: Some(CoveoProviderSpec::default()),
            ..SecurityProviderSpec::for_connection(CONNECTION)
        },
    );
    sp.metadata.namespace = Some(NAMESPACE.into());
    sp.metadata.uid = Some("sp-uid".into());
    sp.metadata.generation = Some(1);
    sp.metadata.resource_version = Some("1".into());
    sp.metadata.finalizers = Some(vec![FINALIZER.into()]);
    sp
}

/// Sets an annotation.
pub fn annotate(mut sp: SecurityProvider, key: &str, value: &str) -> SecurityProvider {
    sp.annotations_mut().insert(key.into(), value.into());
    sp
}

/// A controller context over `client` whose cache holds `connections`; also the writer of
/// the connection cache.
pub fn context(
    client: Client,
    connections: &[ProviderConnection],
) -> (Arc<Context>, Writer<ProviderConnection>) {
    let (connection_store, mut connection_writer) = reflector::store::<ProviderConnection>();
    for connection in connections {
        connection_writer.apply_watcher_event(&watcher::Event::Apply(connection.clone()));
    }
    let recorder = Recorder::new(client.clone(), super::reporter());
    let ctx = Context::new(
        client,
        Settings::default(),
        connection_store,
        recorder,
        Arc::new(Metrics::new()),
    );
    (Arc::new(ctx), connection_writer)
}

/// A controller context over the mocked API, with the test connection (and its Secret's
/// metadata) cached and `backend` installed as its client.
pub struct Harness {
    pub ctx: Arc<Context>,
    pub timeline: Timeline,
    pub events: EventLog,
    pub metrics: Arc<Metrics>,
    /// The connection's client.
    pub fake: Arc<FakeBackend>,
    connections: Writer<ProviderConnection>,
}

impl Harness {
    /// A harness whose API server holds `object`, with remote providers `providers`.
    pub async fn new(object: Option<SecurityProvider>, providers: &[ObservedProvider]) -> Self {
        Self::with_backend(object, |timeline| FakeBackend::with(timeline, providers)).await
    }

    /// Like [`Harness::new`], with a fake built by `backend`.
    pub async fn with_backend(
        object: Option<SecurityProvider>,
        backend: impl FnOnce(&Timeline) -> Arc<FakeBackend>,
    ) -> Self {
        Self::with_objects(object.into_iter().collect(), backend).await
    }

    /// A harness whose API server holds `objects` (the test provider among them, or not).
    pub async fn with_objects(
        objects: Vec<SecurityProvider>,
        backend: impl FnOnce(&Timeline) -> Arc<FakeBackend>,
    ) -> Self {
        Self::with_raw_objects(objects, Vec::new(), backend).await
    }

    /// Like [`Harness::with_objects`], the API server also holding `raw` (path, JSON), e.g.
    /// Secrets.
    pub async fn with_raw_objects(
        objects: Vec<SecurityProvider>,
        raw: Vec<(String, Value)>,
        backend: impl FnOnce(&Timeline) -> Arc<FakeBackend>,
    ) -> Self {
        let (timeline, events) = (Timeline::default(), EventLog::default());
        let objects = objects
            .iter()
            .map(|sp| (path_of(sp), serde_json::to_value(sp).unwrap()))
            .chain(raw)
            .collect();
        let client = mock_client(objects, timeline.clone(), events.clone());
        let conn = connection(1);
        let (ctx, connections) = context(client, std::slice::from_ref(&conn));
        let metrics = ctx.metrics.clone();
        let fake = backend(&timeline);
        ctx.states.install_client(&conn, fake.clone()).await;
        Harness {
            ctx,
            timeline,
            events,
            metrics,
            fake,
            connections,
        }
    }

    /// Replaces the cached connection (e.g. a new generation).
    pub fn update_connection(&mut self, connection: ProviderConnection) {
        self.connections
            .apply_watcher_event(&watcher::Event::Apply(connection));
    }

    /// Waits (bounded) until the Events published in the background include `reason`.
    pub async fn wait_for_event(&self, reason: &str) {
        let quoted = format!("{reason:?}");
        for _ in 0..500 {
            if self.events.reasons().contains(&quoted) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no Event {reason}: {:?}", self.events.reasons());
    }
}

/// The object reference path of the test provider's status.
pub fn status_path() -> String {
    format!("{SP_PATH}/status")
}
