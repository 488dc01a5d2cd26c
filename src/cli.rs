//! Onboarding commands that never write remotely: `export` (remote providers as ready-to-commit
//! manifests) and `plan` (what applying manifests would change remotely).
pub mod args;

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, ObjectMeta};
use kube::{Client, ResourceExt};

use crate::api::{
    CREATE_PENDING_ANNOTATION, ProviderConnection, SecurityProvider, SecurityProviderSpec,
};
use crate::backend::ObservedProvider;
#[cfg(test)]
use crate::backend::ProviderConfig;
use crate::backend::{check_backend_match, connect_from_api, resolve_desired};
use crate::controller::handle::ConnectionHandle;
use crate::controller::observe::{Apis, Managers, Observation, observe_and_plan};
use crate::controller::ownership;
use crate::controller::plan::Plan;
use crate::controller::snapshot::Snapshots;

/// A Kubernetes object name for a remote id: the id itself when it is a valid DNS subdomain
/// name, else a sanitized form with a hash suffix so that distinct ids never collide.
pub fn object_name_for(remote_id: &str) -> String {
    let valid = !remote_id.is_empty()
        && remote_id.len() <= 253
        && remote_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && remote_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && remote_id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        return remote_id.to_owned();
    }
    let mut base: String = remote_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base = base
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(200);
    let mut hasher = DefaultHasher::new();
    remote_id.hash(&mut hasher);
    let suffix = format!("{:08x}", hasher.finish() as u32);
    if base.is_empty() {
        format!("provider-{suffix}")
    } else {
        format!("{base}-{suffix}")
    }
}

/// One SecurityProvider manifest adopting `observed`, or the reason it can't be expressed.
pub fn manifest_for(
    observed: &ObservedProvider,
    connection: &str,
    namespace: &str,
) -> Result<SecurityProvider, String> {
    let id = observed.config.lookup_key().to_owned();
    let name = object_name_for(&id);
    let mut spec = SecurityProviderSpec {
        provider_id: (name != id).then(|| id.clone()),
        // Safe default for providers that existed before GitOps: removing the manifest from
        // Git must not delete them. Switch to Delete once the object is the source of truth.
        deletion_policy: Some(crate::api::security_provider::DeletionPolicy::Orphan),
        adopt: Some(true),
        ..SecurityProviderSpec::for_connection(connection)
    };
    // The create-attempt evidence stays remote: a spec carrying it would differ from every
    // later write of the provider.
    observed
        .config
        .without_creation_token()
        .write_spec(&mut spec)?;
    let mut sp = SecurityProvider::new(&name, spec);
    sp.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    };
    Ok(sp)
}

/// `namespace/name` of the object in `managers` that manages the remote provider `remote_id`
/// of the remote system `system`.
pub fn managed_by(
    managers: &[SecurityProvider],
    remote_id: &str,
    system: Option<&crate::api::security_provider::Ownership>,
) -> Option<String> {
    managers
        .iter()
        .find(|sp| ownership::manages(sp, remote_id, system))
        .map(|sp| format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any()))
}

/// `secprov-operator export`: every remote provider of a connection as SecurityProvider
/// manifests with `adopt: true`, sorted by name, one YAML stream without status. Providers
/// an object in the cluster already manages are left out (listed as comments): a second
/// object adopting one would overwrite it for ever.
pub async fn export(client: Client, connection: &str, namespace: &str) -> anyhow::Result<String> {
    let connections: Api<ProviderConnection> = Api::namespaced(client.clone(), namespace);
    let conn = connections.get_opt(connection).await?.with_context(|| {
        format!("ProviderConnection {connection:?} not found in namespace {namespace:?}")
    })?;
    let managers = Api::<SecurityProvider>::all(client.clone())
        .list(&Default::default())
        .await
        .context("cannot list the SecurityProviders of the cluster (to leave out the providers already managed)")?
        .items;
    let system = conn.ownership();
    let backend = connect_from_api(&client, &conn, None).await?;
    let mut observed = backend.list().await?;
    // Everything the list does not carry (sub-resources such as schedules), so the manifests
    // declare it.
    for provider in &mut observed {
        backend.observe_details(None, provider).await?;
    }
    let mut manifests = Vec::new();
    let mut skipped = Vec::new();
    for provider in &observed {
        if let Some(other) = managed_by(&managers, &provider.remote_id, system.as_ref()) {
            let id = &provider.remote_id;
            skipped.push(format!(
                "# skipped {id:?}: already managed by SecurityProvider {other}"
            ));
            continue;
        }
        match manifest_for(provider, connection, namespace) {
            Ok(sp) => manifests.push(sp),
            Err(reason) => skipped.push(format!("# skipped {:?}: {reason}", provider.remote_id)),
        }
    }
    manifests.sort_by_key(|sp| sp.name_any());
    let mut out = String::new();
    for line in skipped {
        writeln!(out, "{line}")?;
    }
    for sp in manifests {
        let mut value = serde_json::to_value(&sp)?;
        if let Some(obj) = value.as_object_mut() {
            obj.remove("status");
        }
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value)?);
    }
    Ok(out)
}

async fn kube_client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig")
}

/// `secprov-operator export`, printing to stdout. The namespace defaults to the kubeconfig's.
pub async fn export_command(connection: &str, namespace: Option<String>) -> anyhow::Result<()> {
    let client = kube_client().await?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    print!("{}", export(client, connection, &namespace).await?);
    Ok(())
}

/// `secprov-operator plan -f FILE`, printing the plan and a summary line to stdout. Returns
/// the plan's [`PlanExit`] (the exit status under `--detailed-exitcode`).
pub async fn plan_command(file: &Path, namespace: Option<String>) -> anyhow::Result<PlanExit> {
    let yaml = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let client = kube_client().await?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let lines = plan_manifests(client, &yaml, &namespace).await?;
    for line in &lines {
        print!("{line}");
    }
    println!("{}", plan_summary(&lines));
    Ok(plan_exit(&lines))
}

/// What a plan means for a CI step, as Terraform's `plan -detailed-exitcode` says it. A plan
/// that could not run at all is an error too (exit status 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PlanExit {
    /// Applying the manifests changes nothing remotely.
    NoChanges = 0,
    /// At least one manifest cannot be applied as it stands (`AlreadyExists`, `AlreadyManaged`,
    /// an invalid spec, a missing connection or Secret, a paused or observe-only difference).
    NotApplicable = 1,
    /// Applying creates or updates remote providers, and every manifest can be applied.
    ChangesPending = 2,
}

/// The [`PlanExit`] of a plan: any row that cannot be applied wins over pending changes.
pub fn plan_exit(lines: &[PlanLine]) -> PlanExit {
    if lines
        .iter()
        .any(|l| matches!(l, PlanLine::NotApplied { .. }))
    {
        PlanExit::NotApplicable
    } else if lines
        .iter()
        .any(|l| matches!(l, PlanLine::Create { .. } | PlanLine::Update { .. }))
    {
        PlanExit::ChangesPending
    } else {
        PlanExit::NoChanges
    }
}

/// The last line of a plan: how many of each.
pub fn plan_summary(lines: &[PlanLine]) -> String {
    let count = |pred: fn(&PlanLine) -> bool| lines.iter().filter(|l| pred(l)).count();
    format!(
        "Plan: {} to create, {} to update, {} unchanged, {} not applicable.",
        count(|l| matches!(l, PlanLine::Create { .. })),
        count(|l| matches!(l, PlanLine::Update { .. })),
        count(|l| matches!(l, PlanLine::NoChange { .. })),
        count(|l| matches!(l, PlanLine::NotApplied { .. })),
    )
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanLine {
    Create {
        object: String,
        remote_id: String,
    },
    Update {
        object: String,
        remote_id: String,
        changes: Vec<(String, serde_json::Value, serde_json::Value)>,
    },
    NoChange {
        object: String,
    },
    NotApplied {
        object: String,
        reason: String,
        message: String,
    },
}

impl std::fmt::Display for PlanLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanLine::Create { object, remote_id } => {
                writeln!(f, "+ create    {object} (remote id {remote_id:?})")
            }
            PlanLine::Update {
                object,
                remote_id,
                changes,
            } => {
                writeln!(f, "~ update    {object} (remote id {remote_id:?})")?;
                for (field, from, to) in changes {
                    writeln!(f, "      {field}: {from} -> {to}")?;
                }
                Ok(())
            }
            PlanLine::NoChange { object } => writeln!(f, "= no change {object}"),
            PlanLine::NotApplied {
                object,
                reason,
                message,
            } => writeln!(f, "! {reason} {object}: {message}"),
        }
    }
}

/// The SecurityProviders of a YAML stream; other kinds are ignored.
pub fn security_providers_in(yaml: &str) -> anyhow::Result<Vec<SecurityProvider>> {
    let mut out = Vec::new();
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).context("the file is not valid YAML")?;
    for value in docs {
        if value.is_null() {
            continue;
        }
        if value["kind"] == "SecurityProvider" && value["apiVersion"] == "secprov.dev/v1alpha1" {
            let sp: SecurityProvider =
                serde_json::from_value(value).context("invalid SecurityProvider manifest")?;
            out.push(sp);
        }
    }
    Ok(out)
}

/// `secprov-operator plan`: for each SecurityProvider in `yaml`, what applying it would do
/// remotely. Reads the cluster and the remote system; writes nothing.
pub async fn plan_manifests(
    client: Client,
    yaml: &str,
    default_namespace: &str,
) -> anyhow::Result<Vec<PlanLine>> {
    let mut lines = Vec::new();
    for mut sp in security_providers_in(yaml)? {
        let namespace = sp
            .namespace()
            .unwrap_or_else(|| default_namespace.to_owned());
        sp.metadata.namespace = Some(namespace.clone());
        let object = format!("{namespace}/{}", sp.name_any());
        let line = plan_one(&client, &sp, &namespace, &object)
            .await
            .unwrap_or_else(|e| PlanLine::NotApplied {
                object: object.clone(),
                reason: e.reason().to_owned(),
                message: e.to_string(),
            });
        lines.push(line);
    }
    Ok(lines)
}

async fn plan_one(
    client: &Client,
    manifest: &SecurityProvider,
    namespace: &str,
    object: &str,
) -> Result<PlanLine, crate::Error> {
    let api = Api::<SecurityProvider>::namespaced(client.clone(), namespace);
    let existing = api.get_opt(&manifest.name_any()).await?;
    let sp = as_applied(manifest, existing.as_ref());
    // No fingerprint key: its Secret is the operator's alone (see `resolve_desired`).
    let desired = resolve_desired(client, &sp, None).await?;
    let connection = Api::<ProviderConnection>::namespaced(client.clone(), namespace)
        .get_opt(&sp.spec.connection_ref)
        .await?
        .ok_or_else(|| crate::Error::ConnectionNotFound(sp.spec.connection_ref.clone()))?;
    check_backend_match(&sp, &connection)?;
    let backend = connect_from_api(client, &connection, None).await?;
    // No batch reads: a plan reads each provider fresh, as the controller does before a write.
    let snapshots = Snapshots::new(Duration::ZERO);
    let handle = ConnectionHandle::new(Arc::new(connection), backend, &snapshots);
    let cluster = Api::<SecurityProvider>::all(client.clone());
    // A plan claims nothing: other managers come from one LIST.
    let apis = Apis {
        namespace: &api,
        managers: Managers::Listed(&cluster),
    };
    let (observation, decision) = observe_and_plan(&sp, desired, &handle, apis, false).await?;
    Ok(plan_line(object.to_owned(), &observation, decision))
}

/// The object as the controller would see it once `manifest` is applied: the manifest's spec
/// and annotations, with what the cluster's copy records about ownership (status and the
/// create-pending marker).
pub fn as_applied(
    manifest: &SecurityProvider,
    existing: Option<&SecurityProvider>,
) -> SecurityProvider {
    let mut sp = manifest.clone();
    sp.status = existing.and_then(|e| e.status.clone());
    // The object's identity, as the controller sees it (the secrets fingerprint covers it).
    sp.metadata.uid = existing.and_then(|e| e.metadata.uid.clone());
    if let Some(marker) = existing.and_then(|e| e.annotations().get(CREATE_PENDING_ANNOTATION)) {
        sp.annotations_mut()
            .insert(CREATE_PENDING_ANNOTATION.to_owned(), marker.clone());
    }
    sp
}

/// The plan line of a decision.
pub fn plan_line(object: String, observation: &Observation, decision: Plan) -> PlanLine {
    match (decision, observation.remote.provider()) {
        (Plan::Create, _) => PlanLine::Create {
            object,
            remote_id: observation.key.id.clone(),
        },
        (Plan::Update { fields }, Some(current)) => PlanLine::Update {
            object,
            remote_id: current.remote_id.clone(),
            changes: fields
                .iter()
                .map(|f| {
                    let from = current.config.without_creation_token().field_value(f);
                    (f.to_string(), from, observation.desired.field_value(f))
                })
                .collect(),
        },
        (Plan::InSync, _) | (Plan::Update { .. }, None) => PlanLine::NoChange { object },
        (
            Plan::Withheld {
                reason, message, ..
            }
            | Plan::Blocked { reason, message },
            _,
        ) => PlanLine::NotApplied {
            object,
            reason: reason.to_owned(),
            message,
        },
    }
}

#[cfg(test)]
mod agrees_with_controller;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::desired_config;

    #[test]
    fn object_names_are_valid_and_distinct() {
        assert_eq!(object_name_for("my-provider"), "my-provider");
        let a = object_name_for("My Secured Push Source Security Identity Provider");
        assert!(
            a.starts_with("my-secured-push-source-security-identity-provider-"),
            "{a}"
        );
        let b = object_name_for("my secured push source security identity provider");
        assert_ne!(a, b, "ids differing only in case get distinct names");
        assert!(object_name_for("___").starts_with("provider-"));
        let long = object_name_for(&"X".repeat(300));
        assert!(long.len() <= 253);
    }

    #[test]
    fn exported_manifests_plan_no_update_for_every_backend() {
        use crate::api::security_provider::{
            CoveoProviderSpec, JitsudoProviderSpec, JitsudoProviderType, KeystoneProviderSpec,
        };
        use crate::backend::{
            RemoteHealth, RemoteState, coveo::CoveoConfig, jitsudo::JitsudoConfig,
            keystone::KeystoneConfig,
        };
        let configs = [
            ProviderConfig::Coveo(CoveoConfig::desired(
                "Hand Made",
                "Hand Made",
                &CoveoProviderSpec::default(),
            )),
            ProviderConfig::Keystone(KeystoneConfig::desired(
                "acme",
                &KeystoneProviderSpec {
                    description: Some("ACME".into()),
                    enabled: Some(false),
                    remote_ids: vec!["https://idp.acme/saml".into()],
                    authorization_ttl: Some(5),
                    domain_id: None,
                    protocols: Default::default(),
                },
            )),
            ProviderConfig::Jitsudo(JitsudoConfig::desired(
                "Okta prod",
                &JitsudoProviderSpec {
                    provider_type: JitsudoProviderType::Okta,
                    config: Some(serde_json::json!({"org": "acme"})),
                    enabled: None,
                },
            )),
        ];
        for config in configs {
            // Made by this operator once (then orphaned): it carries the creation evidence.
            let observed = ObservedProvider {
                remote_id: "remote".into(),
                config: config.with_creation_token("uid-1/a1"),
                state: RemoteState::default(),
                health: RemoteHealth::Healthy,
            };
            let sp = manifest_for(&observed, "conn", "ns").unwrap();
            assert_eq!(sp.spec.adopt, Some(true));
            let manifest = serde_json::to_string(&sp).unwrap();
            assert!(
                !manifest.contains("create-attempt") && !manifest.contains("create_attempt"),
                "the creation evidence reached the spec: {manifest}"
            );
            let desired = desired_config(&sp).unwrap();
            assert!(
                desired.diff(&config).is_empty(),
                "{config:?} -> {:?}: {:?}",
                sp.spec,
                desired.diff(&config)
            );
        }
    }

    #[test]
    fn only_security_providers_are_planned() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata: {name: p}\nspec:\n  connectionRef: c\n  coveo: {}\n---\n";
        let sps = security_providers_in(yaml).unwrap();
        assert_eq!(sps.len(), 1);
        assert_eq!(sps[0].name_any(), "p");
    }

    #[test]
    fn the_detailed_exit_code_follows_terraform() {
        let same = || PlanLine::NoChange {
            object: "ns/a".into(),
        };
        let create = || PlanLine::Create {
            object: "ns/b".into(),
            remote_id: "b".into(),
        };
        let refused = || PlanLine::NotApplied {
            object: "ns/c".into(),
            reason: "AlreadyExists".into(),
            message: "taken".into(),
        };
        assert_eq!(plan_exit(&[]), PlanExit::NoChanges);
        assert_eq!(plan_exit(&[same()]), PlanExit::NoChanges);
        assert_eq!(plan_exit(&[same(), create()]), PlanExit::ChangesPending);
        assert_eq!(
            plan_exit(&[create(), refused(), same()]),
            PlanExit::NotApplicable
        );
        assert_eq!(PlanExit::ChangesPending as u8, 2);
    }

    #[test]
    fn plan_lines_read_like_a_diff() {
        let line = PlanLine::Update {
            object: "ns/p".into(),
            remote_id: "p".into(),
            changes: vec![("displayName".into(), "old".into(), "new".into())],
        };
        assert_eq!(
            line.to_string(),
            "~ update    ns/p (remote id \"p\")\n      displayName: \"old\" -> \"new\"\n"
        );
    }
}
