//! `secprov-operator plan` and the controller decide alike, per backend, on the shipped
//! examples against the simulators: once with the provider missing remotely (both create) and
//! once with a provider of that name already there that the object never created (both
//! refuse to take it over). A CLI that looked providers up differently from the controller
//! (as it once did for JITSudo, by providerId instead of displayName) fails here.
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::Value;

use super::{PlanLine, plan_manifests};
use crate::api::{CREATE_PENDING_ANNOTATION, FINALIZER, ProviderConnection, SecurityProvider};
use crate::backend;
use crate::backend::connect::SecretValues;
use crate::backend::desired_config;
use crate::controller::fixtures::{EventLog, NAMESPACE, Timeline, context, mock_client};
use crate::controller::reconcile::reconcile;

const DEMO_ENDPOINTS: [&str; 3] = [
    "http://127.0.0.1:18089",
    "http://127.0.0.1:18090",
    "http://127.0.0.1:18091",
];

/// The objects of `examples/<backend>/`, pointed at `endpoint`, in the test namespace.
struct Example {
    connection: ProviderConnection,
    secret: Secret,
    provider: SecurityProvider,
}

fn documents(path: &str, endpoint: &str) -> Vec<Value> {
    let file = format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap();
    let text = DEMO_ENDPOINTS
        .iter()
        .fold(text, |text, demo| text.replace(demo, endpoint));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn example(backend: &str, endpoint: &str) -> Example {
    let mut connection = None;
    let mut secret = None;
    for doc in documents(&format!("{backend}/00-connection.yaml"), endpoint) {
        match doc["kind"].as_str() {
            Some("Secret") => secret = Some(stored_secret(doc)),
            Some("ProviderConnection") => {
                let mut c: ProviderConnection = serde_json::from_value(doc).unwrap();
                c.metadata.namespace = Some(NAMESPACE.into());
                c.metadata.uid = Some(format!("{backend}-uid"));
                c.metadata.generation = Some(1);
                connection = Some(c);
            }
            _ => {}
        }
    }
    let docs = documents(&format!("{backend}/10-securityprovider.yaml"), endpoint);
    let mut provider: SecurityProvider = serde_json::from_value(docs[0].clone()).unwrap();
    provider.metadata.namespace = Some(NAMESPACE.into());
    Example {
        connection: connection.unwrap(),
        secret: secret.unwrap(),
        provider,
    }
}

/// The Secret as the API server returns it: `stringData` stored as `data`.
fn stored_secret(doc: Value) -> Secret {
    let mut secret: Secret = serde_json::from_value(doc).unwrap();
    secret.metadata.namespace = Some(NAMESPACE.into());
    secret.metadata.resource_version = Some("7".into());
    let data = secret.string_data.take().unwrap_or_default();
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect(),
    );
    secret
}

/// Creates the example's provider remotely, as someone else would have.
async fn create_remotely(example: &Example) {
    let mut values = SecretValues::default();
    for r in backend::secret_refs(&example.connection.spec) {
        let data = example.secret.data.as_ref().unwrap();
        values.insert(r, String::from_utf8(data[&r.key].0.clone()).unwrap());
    }
    let client = backend::connect::build_client(
        &example.connection.spec,
        &values,
        None,
        &crate::backend::http::NO_ELECTION,
    )
    .unwrap();
    let desired = desired_config(&example.provider).unwrap();
    client.create(&desired).await.unwrap();
}

fn api_objects(example: &Example) -> Vec<(String, Value)> {
    let base = format!("/apis/secprov.dev/v1alpha1/namespaces/{NAMESPACE}");
    vec![
        (
            format!(
                "{base}/providerconnections/{}",
                example.connection.name_any()
            ),
            serde_json::to_value(&example.connection).unwrap(),
        ),
        (
            format!(
                "/api/v1/namespaces/{NAMESPACE}/secrets/{}",
                example.secret.name_any()
            ),
            serde_json::to_value(&example.secret).unwrap(),
        ),
        (
            format!("{base}/securityproviders/{}", example.provider.name_any()),
            // As the API server holds it: with the resourceVersion the cache shows.
            serde_json::to_value(&example.provider)
                .map(|mut sp| {
                    sp["metadata"]["resourceVersion"] = "1".into();
                    sp
                })
                .unwrap(),
        ),
    ]
}

/// What `plan` predicts, in the words of [`controller_decision`].
async fn cli_decision(example: &Example) -> String {
    let client = mock_client(
        api_objects(example),
        Timeline::default(),
        EventLog::default(),
    );
    let yaml = serde_saphyr::to_string(&example.provider).unwrap();
    let lines = plan_manifests(client, &yaml, NAMESPACE).await.unwrap();
    match &lines[..] {
        [PlanLine::Create { .. }] => "create".into(),
        [PlanLine::Update { .. } | PlanLine::NoChange { .. }] => "in sync".into(),
        [PlanLine::NotApplied { reason, .. }] => format!("not applied: {reason}"),
        other => panic!("one line expected: {other:?}"),
    }
}

/// What one reconcile of the example did: a create (it set the create-pending marker), or
/// the reason its status gives.
async fn controller_decision(example: &Example) -> String {
    let timeline = Timeline::default();
    let client = mock_client(api_objects(example), timeline.clone(), EventLog::default());
    let (ctx, _writer) = context(client, std::slice::from_ref(&example.connection));
    let mut sp = example.provider.clone();
    sp.metadata.finalizers = Some(vec![FINALIZER.into()]);
    sp.metadata.generation = Some(1);
    // The create-pending marker is written conditionally on the version the cache shows.
    sp.metadata.resource_version = Some("1".into());
    reconcile(Arc::new(sp), ctx).await.unwrap();
    let kube = timeline.kube();
    let marked = kube.iter().any(|(method, _, _, body)| {
        method == "PATCH" && body["metadata"]["annotations"][CREATE_PENDING_ANNOTATION].is_string()
    });
    if marked {
        return "create".into();
    }
    // The last status write: the first one only says the reconcile has started.
    let status = kube
        .iter()
        .rfind(|(_, uri, _, _)| uri.contains("/status"))
        .map(|(_, _, _, body)| body.clone())
        .expect("a status write");
    let conditions = status["status"]["conditions"].as_array().unwrap().clone();
    let synced = conditions.iter().find(|c| c["type"] == "Synced").unwrap();
    if synced["status"] == "True" {
        "in sync".into()
    } else {
        format!("not applied: {}", synced["reason"].as_str().unwrap())
    }
}

/// Plans and reconciles `example` with nothing remote, then with someone else's provider of
/// the same name there: the CLI must predict what the controller does.
async fn agree(endpoint: &str, backend: &str) {
    let example = example(backend, endpoint);
    let (cli, controller) = (
        cli_decision(&example).await,
        controller_decision(&example).await,
    );
    assert_eq!((cli.as_str(), controller.as_str()), ("create", "create"));

    // The controller's create above went to the simulator; start over with another name so
    // the provider found is one this object never created.
    let other = example_named(backend, endpoint, "someone-elses");
    create_remotely(&other).await;
    let (cli, controller) = (
        cli_decision(&other).await,
        controller_decision(&other).await,
    );
    assert_eq!(cli, controller, "{backend}: plan and controller disagree");
    assert_eq!(controller, "not applied: AlreadyExists");
}

/// The example with its provider renamed everywhere the backend looks it up.
fn example_named(backend: &str, endpoint: &str, name: &str) -> Example {
    let mut example = example(backend, endpoint);
    let sp = &mut example.provider;
    sp.metadata.name = Some(name.into());
    if sp.spec.display_name.is_some() {
        sp.spec.display_name = Some(format!("{name} display name"));
    }
    if let Some(keystone) = sp.spec.keystone.as_mut() {
        keystone.remote_ids = vec![format!("https://{name}.example/saml")];
    }
    example
}

#[tokio::test]
async fn coveo_plan_agrees_with_the_controller() {
    use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
    let config = CoveoSimConfig::new("demo-org", "demo-api-key");
    let sim = CoveoSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    agree(&sim.base_url(), "coveo").await;
}

#[tokio::test]
async fn keystone_plan_agrees_with_the_controller() {
    use secprov_sim::keystone::{KeystoneSimConfig, KeystoneSimulator};
    let config = KeystoneSimConfig {
        password: "demo-password".into(),
        ..Default::default()
    };
    let sim = KeystoneSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    agree(&sim.base_url(), "keystone").await;
}

#[tokio::test]
async fn jitsudo_plan_agrees_with_the_controller() {
    use secprov_sim::jitsudo::{JitsudoSimConfig, JitsudoSimulator};
    let config = JitsudoSimConfig {
        api_key: "demo-jitsudo-key".into(),
        ..Default::default()
    };
    let sim = JitsudoSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    agree(&sim.base_url(), "jitsudo").await;
}
