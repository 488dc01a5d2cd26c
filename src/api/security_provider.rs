//! `SecurityProvider`: one security identity provider in a remote system.
use std::borrow::Cow;
use std::collections::BTreeMap;

use super::common::PATH_SEGMENT_RULE;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// Desired state of a security identity provider. Exactly one of `coveo`, `keystone` or
/// `jitsudo` is set, and it must match the backend of the referenced ProviderConnection.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secprov.dev",
    version = "v1alpha1",
    kind = "SecurityProvider",
    plural = "securityproviders",
    shortname = "secprov",
    category = "secprov",
    namespaced,
    status = "SecurityProviderStatus",
    doc = "A security identity provider of a remote system (Coveo Security Cache, OpenStack Keystone OS-FEDERATION or JITSudo), kept in the declared state by secprov-operator.",
    printcolumn(name = "Backend", type_ = "string", json_path = ".status.backend"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.currentStatus.type"),
    printcolumn(name = "Entities", type_ = "integer", json_path = ".status.statistics.totalNumberOfEntities"),
    printcolumn(name = "In Error", type_ = "integer", json_path = ".status.statistics.numberOfEntitiesInError"),
    printcolumn(name = "Last Refresh", type_ = "date", json_path = ".status.lastRefreshOperation.timestamp"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.keystone) || has(self.spec.providerId) || size(self.metadata.name) <= 64").message("Keystone identity provider ids are at most 64 characters: set spec.providerId when metadata.name is longer"),
    validation = Rule::new("!has(self.spec.coveo) || has(self.spec.providerId) || self.metadata.name != 'page'").message("'page' is reserved by Coveo (it is the paging route under securityproviders/): set spec.providerId to another id")
)]
#[x_kube(validation = Rule::new("[has(self.coveo), has(self.keystone), has(self.jitsudo)].filter(b, b).size() == 1").message("exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set"))]
#[x_kube(validation = Rule::new("has(self.providerId) == has(oldSelf.providerId) && (!has(self.providerId) || self.providerId == oldSelf.providerId)").message("spec.providerId is immutable: it names the remote provider; create a new SecurityProvider instead"))]
#[x_kube(validation = Rule::new("!has(self.keystone) || !has(self.providerId) || size(self.providerId) <= 64").message("spec.providerId is at most 64 characters for Keystone identity providers"))]
#[x_kube(validation = Rule::new("!has(self.coveo) || !has(self.providerId) || self.providerId != 'page'").message("spec.providerId 'page' is reserved by Coveo (it is the paging route under securityproviders/)"))]
#[serde(rename_all = "camelCase")]
pub struct SecurityProviderSpec {
    /// Name of the ProviderConnection, in the same namespace, that says which remote system and
    /// credentials to use.
    #[schemars(length(min = 1, max = 253))]
    pub connection_ref: String,

    /// Id of the provider in the remote system. Defaults to metadata.name. Immutable. At most
    /// 255 characters (Coveo) or 64 (Keystone); not `.` or `..`, and without `/` or control
    /// characters (the id is one URL path segment). `Email Security Provider` and `page` are
    /// reserved by Coveo.
    /// JITSudo assigns ids itself, so there it only names the provider when `displayName` is
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self != 'Email Security Provider'").message("'Email Security Provider' is Coveo's built-in provider and is reserved; reference it in coveo.cascadingSecurityProviders instead"))]
    #[x_kube(validation = Rule::new(PATH_SEGMENT_RULE).message("spec.providerId must not be '.' or '..' or contain '/' or control characters: it is one segment of the remote URL"))]
    pub provider_id: Option<String>,

    /// Human-readable name shown in the remote admin console. Defaults to the provider id.
    /// For JITSudo this is the provider's unique `name`, by which it is found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub display_name: Option<String>,

    /// What happens to the remote provider when this object is deleted: `Delete` (default)
    /// removes it, `Orphan` leaves it in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// `Manage` (default) creates, updates and deletes the remote provider; `Observe` only
    /// reads its status and never writes or deletes anything remotely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,

    /// Take over a remote provider with this id that already exists and was not created by
    /// this object. Without it such a provider is left alone and reported as `AlreadyExists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<bool>,

    /// Coveo Security Cache provider settings. Requires a ProviderConnection with `coveo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coveo: Option<CoveoProviderSpec>,

    /// OpenStack Keystone OS-FEDERATION identity provider settings. Requires a
    /// ProviderConnection with `keystone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystone: Option<Box<KeystoneProviderSpec>>,

    /// JITSudo tenant identity provider settings. Requires a ProviderConnection with `jitsudo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitsudo: Option<Box<JitsudoProviderSpec>>,
}

/// What happens to the remote provider when this SecurityProvider is deleted: `Delete` (the
/// default) deletes it remotely; `Orphan` keeps the remote provider as it is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the remote provider (a provider already gone counts as deleted).
    #[default]
    Delete,
    /// Leave the remote provider untouched.
    Orphan,
}

/// How much control the operator takes over the remote provider: `Manage` (the default)
/// creates it, updates it (correcting drift) and deletes it per `deletionPolicy`; `Observe`
/// only reads and reports its status, and never writes or deletes anything remotely.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ManagementPolicy {
    /// Create, update (including drift correction) and delete per deletionPolicy.
    #[default]
    Manage,
    /// Read and report only; never write or delete remotely.
    Observe,
}

/// Settings of a Coveo security identity provider (`SecurityProviderModel`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.sensitiveParameters) || !has(self.parameters) || self.sensitiveParameters.all(k, !(k in self.parameters))").message("a parameter name may appear in coveo.parameters or in coveo.sensitiveParameters, not in both"))]
pub struct CoveoProviderSpec {
    /// Provider type. Defaults to `EXPANDED`, the type for secured Push sources whose
    /// identities arrive through the Push API.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<CoveoProviderType>,

    /// Whether the provider needs a dedicated crawler node. Coveo's Push examples send
    /// `false`, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_required: Option<bool>,

    /// Whether identity names are case-sensitive (when false, `acme\jdoe` equals `acme\JDOE`).
    /// Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,

    /// Connector-specific, non-secret parameters (name to value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub parameters: BTreeMap<String, String>,

    /// Connector parameters whose values are secret, read from Secrets in this object's
    /// namespace: parameter name to `{name, key}` of a Secret. Sent beside `parameters` as
    /// `{value, sensitive: true}`. Coveo masks these values on read, so the operator records a
    /// keyed hash of what it last sent (`status.coveo.secretsHash`, never the value) and sends
    /// an update only when a referenced Secret value changes. A name may not also appear in
    /// `parameters`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub sensitive_parameters: BTreeMap<String, SecretKeyRef>,

    /// Credentials a connector-type provider logs in with (Coveo `userIdentities`): identity
    /// name to a user name and the Secret key holding the password. The password is read from
    /// a Secret in this object's namespace and handled like `sensitiveParameters`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub user_identities: BTreeMap<String, CoveoUserIdentity>,

    /// Refresh schedules of the provider (Coveo `ScheduleModel`), at most one entry per
    /// `refreshType`. Unset or empty leaves the remote schedules alone; a listed refresh type
    /// is compared field by field and corrected (a hand-made change is restored at the next
    /// resync, with a `DriftCorrected` Event); an unlisted one is left alone. Coveo's defaults:
    /// `SECURITY_PROVIDER_REFRESH` daily at 04:00 UTC and
    /// `SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(o, o.refreshType == s.refreshType))").message("coveo.refreshSchedules must list each refreshType at most once"))]
    pub refresh_schedules: Vec<CoveoRefreshSchedule>,

    /// Sources or providers that use this provider; for a secured Push source:
    /// `{type: SOURCE, id: <source id>}`. A resource may be referenced only once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o.type == r.type && o.id == r.id))").message("coveo.referencedBy must not reference the same resource twice (Coveo rejects it with SECURITY_PROVIDER_INVALID_CONFIGURATION)"))]
    pub referenced_by: Vec<CoveoReference>,

    /// Providers this one cascades to, compared by id. Coveo recommends cascading to the
    /// built-in `{id: Email Security Provider, type: EMAIL}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(o, o.id == c.id))").message("coveo.cascadingSecurityProviders must not list the same provider id twice"))]
    pub cascading_security_providers: Vec<CoveoCascadingProvider>,
}

/// A user name and password a connector-type Coveo provider logs in with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoUserIdentity {
    /// User name (not secret; compared with what Coveo reports).
    #[schemars(length(min = 1, max = 255))]
    pub user_name: String,
    /// The Secret key, in this object's namespace, that holds the password.
    pub password_secret_ref: SecretKeyRef,
}

/// One refresh schedule of a Coveo provider (`ScheduleModel`, the fields a user sets).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoRefreshSchedule {
    /// Which refresh this schedule runs, e.g. `SECURITY_PROVIDER_REFRESH` ("Identity Provider
    /// Refresh" in the console) or `SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR` ("Identities
    /// in Error Refresh").
    pub refresh_type: CoveoRefreshType,
    /// Whether the schedule runs. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// When it runs.
    pub frequency: CoveoScheduleFrequency,
}

/// Coveo refresh types that a provider schedule can run (`ScheduleModel.refreshType`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum CoveoRefreshType {
    SecurityProviderRefresh,
    SecurityProviderRefreshEntitiesInError,
    SecurityProviderRefreshEntitiesNotUpdated,
    Rebuild,
    FullRefresh,
    IncrementalRefresh,
}

impl CoveoRefreshType {
    /// The wire name, e.g. `SECURITY_PROVIDER_REFRESH`.
    pub fn as_wire(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// When a schedule runs (`ScheduleModel.frequency`). Times are UTC.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.type in ['MINUTELY', 'HOURLY']) || has(self.value)").message("frequency.value (the interval) is required for MINUTELY and HOURLY schedules"))]
#[x_kube(validation = Rule::new("self.type != 'MINUTELY' || !has(self.value) || self.value <= 59").message("frequency.value of a MINUTELY schedule is 1 to 59 minutes"))]
#[x_kube(validation = Rule::new("self.type != 'HOURLY' || !has(self.value) || self.value <= 23").message("frequency.value of an HOURLY schedule is 1 to 23 hours"))]
#[x_kube(validation = Rule::new("!(self.type in ['DAILY', 'WEEKLY', 'MONTHLY']) || has(self.hourMinute)").message("frequency.hourMinute is required for DAILY, WEEKLY and MONTHLY schedules"))]
#[x_kube(validation = Rule::new("!(self.type in ['MINUTELY', 'HOURLY']) || !has(self.hourMinute)").message("frequency.hourMinute is only valid for DAILY, WEEKLY and MONTHLY schedules"))]
#[x_kube(validation = Rule::new("self.type in ['MINUTELY', 'HOURLY'] || !has(self.value)").message("frequency.value is only valid for MINUTELY and HOURLY schedules"))]
#[x_kube(validation = Rule::new("self.type != 'WEEKLY' || (has(self.weekDays) && size(self.weekDays) > 0)").message("frequency.weekDays is required (at least one day) for WEEKLY schedules"))]
#[x_kube(validation = Rule::new("self.type == 'WEEKLY' || !has(self.weekDays) || size(self.weekDays) == 0").message("frequency.weekDays is only valid for WEEKLY schedules"))]
#[x_kube(validation = Rule::new("self.type != 'MONTHLY' || has(self.monthDay)").message("frequency.monthDay is required for MONTHLY schedules"))]
#[x_kube(validation = Rule::new("self.type == 'MONTHLY' || !has(self.monthDay)").message("frequency.monthDay is only valid for MONTHLY schedules"))]
pub struct CoveoScheduleFrequency {
    /// `MINUTELY` or `HOURLY` (every `value` minutes or hours), `DAILY` (at `hourMinute`),
    /// `WEEKLY` (on `weekDays` at `hourMinute`) or `MONTHLY` (on `monthDay` at `hourMinute`).
    #[serde(rename = "type")]
    pub frequency_type: CoveoFrequencyType,
    /// The interval of a `MINUTELY` (1-59) or `HOURLY` (1-23) schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 59))]
    pub value: Option<i32>,
    /// Time of day (UTC) of a `DAILY`, `WEEKLY` or `MONTHLY` schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour_minute: Option<CoveoHourMinute>,
    /// Days of a `WEEKLY` schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(o, o == d))").message("frequency.weekDays must not repeat a day"))]
    pub week_days: Vec<CoveoWeekDay>,
    /// Day of the month (1-31) of a `MONTHLY` schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31))]
    pub month_day: Option<i32>,
}

/// How often a schedule runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum CoveoFrequencyType {
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

/// A time of day, UTC.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoHourMinute {
    /// Hour, 0-23.
    #[schemars(range(min = 0, max = 23))]
    pub hour: i32,
    /// Minute, 0-59. Required: a schema default would be written into the object by the
    /// API server and show up as a diff in GitOps tools.
    #[schemars(range(min = 0, max = 59))]
    pub minute: i32,
}

/// A day of the week.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum CoveoWeekDay {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// A resource that uses this provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoReference {
    /// Kind of the referencing resource.
    #[serde(rename = "type")]
    pub reference_type: CoveoReferenceType,
    /// Id of the referencing resource (for a source: its id, not its name).
    #[schemars(length(min = 1, max = 255))]
    pub id: String,
}

/// Kind of a resource that references a provider.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CoveoReferenceType {
    /// A Coveo source.
    Source,
    /// Another security identity provider.
    SecurityProvider,
}

/// A provider that this provider cascades to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoCascadingProvider {
    /// Id of the provider cascaded to; it must exist in the organization.
    #[schemars(length(min = 1, max = 255))]
    pub id: String,
    /// Type of the provider cascaded to, e.g. `EMAIL`.
    #[serde(rename = "type")]
    pub provider_type: CoveoProviderType,
}

/// Coveo security provider types (`SecurityProviderType` in Coveo's Security Cache API).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum CoveoProviderType {
    #[serde(rename = "ACTIVE_DIRECTORY2")]
    ActiveDirectory2,
    Box,
    Claims,
    ClaimsToEmail,
    Confluence,
    #[serde(rename = "CONFLUENCE2")]
    Confluence2,
    Custom,
    Database,
    DropboxForBusiness,
    Email,
    #[default]
    Expanded,
    File,
    GoogleDriveDomainWide,
    GenericRest,
    Graphql,
    #[serde(rename = "JIRA2")]
    Jira2,
    Jive,
    KhorosCommunity,
    MicrosoftDynamics,
    #[serde(rename = "OFFICE365")]
    Office365,
    Salesforce,
    Servicenow,
    Sharepoint,
    SharepointOnline,
    Sitecore,
    Slack,
    Zendesk,
}

impl CoveoProviderType {
    /// The wire name, e.g. `EXPANDED`.
    pub fn as_wire(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Settings of an OpenStack Keystone OS-FEDERATION identity provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.domainId) == has(oldSelf.domainId) && (!has(self.domainId) || self.domainId == oldSelf.domainId)").message("keystone.domainId is create-only: Keystone sets the domain only at creation, so it cannot be added, changed or removed later; create a new SecurityProvider instead"))]
#[serde(rename_all = "camelCase")]
pub struct KeystoneProviderSpec {
    /// Free-text description. Defaults to empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub description: Option<String>,

    /// Whether federated users may authenticate through this provider. Defaults to true here
    /// (Keystone itself defaults to false). Disabling revokes the provider's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Remote (entity) ids of the identity provider, e.g. a SAML entityID. Globally unique
    /// across all identity providers of the cloud; at most 64 characters each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(r, size(r) >= 1 && size(r) <= 64)").message("each keystone.remoteIds entry must be 1 to 64 characters"))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o == r))").message("keystone.remoteIds must not contain duplicates"))]
    pub remote_ids: Vec<String>,

    /// Minutes that federated group memberships are kept; unset uses the Keystone default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub authorization_ttl: Option<i64>,

    /// Domain the federated users land in. Set only at creation (Keystone creates a domain when
    /// omitted): it cannot be added, changed or removed afterwards (a CEL transition rule), and
    /// a remote provider in another domain is reported (`Ready=False`, `CreateOnlyFieldDiffers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub domain_id: Option<String>,

    /// Federation protocols of the identity provider, keyed by protocol id (`saml2`, `openid`,
    /// `mapped`, ...), each bound to a mapping whose rules turn the remote assertion into local
    /// users and groups. Reconciled after the identity provider: the mapping, then the protocol.
    /// A protocol removed here is deleted remotely, with the mapping this object created for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) >= 1 && size(p) <= 64 && p != '.' && p != '..' && !p.contains('/') && !p.matches('[[:cntrl:]]'))").message("keystone.protocols keys are protocol ids: 1 to 64 characters, not '.' or '..', without '/' or control characters"))]
    pub protocols: BTreeMap<String, KeystoneProtocolSpec>,
}

/// One OS-FEDERATION protocol of a Keystone identity provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneProtocolSpec {
    /// The mapping the protocol uses.
    pub mapping: KeystoneMappingSpec,
}

/// A Keystone OS-FEDERATION mapping (`/v3/OS-FEDERATION/mappings/{id}`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneMappingSpec {
    /// Mapping id. Defaults to `<providerId>-<protocolId>` (when longer than 64 characters: its
    /// first 55 characters, `-` and 8 hex digits of its SHA-256). Same id rules as providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(PATH_SEGMENT_RULE).message("keystone.protocols[*].mapping.id must not be '.' or '..' or contain '/' or control characters: it is one segment of the remote URL"))]
    pub id: Option<String>,

    /// Mapping rules as Keystone takes them: each has non-empty `local` (users, groups,
    /// projects to map to) and `remote` (conditions on the assertion's attributes) arrays.
    /// Compared semantically: key order and number formatting are not drift.
    #[schemars(length(min = 1, max = 100))]
    pub rules: Vec<KeystoneMappingRule>,
}

/// One Keystone mapping rule: when every `remote` condition matches, `local` applies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("size(self.local) > 0 && size(self.remote) > 0").message("each keystone mapping rule needs non-empty local and remote arrays"))]
pub struct KeystoneMappingRule {
    /// What the rule maps to: objects such as `{user: {name: "{0}"}}` or
    /// `{group: {name: admins, domain: {id: default}}}`.
    #[schemars(schema_with = "free_form_rule_parts")]
    pub local: Vec<serde_json::Value>,
    /// Conditions on the assertion: objects such as `{type: UserName}` or
    /// `{type: Groups, any_one_of: [admins]}`.
    #[schemars(schema_with = "free_form_rule_parts")]
    pub remote: Vec<serde_json::Value>,
}

/// Settings of a JITSudo tenant identity provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JitsudoProviderSpec {
    /// Kind of identity provider. Set at creation; JITSudo's update does not change it.
    pub provider_type: JitsudoProviderType,

    /// Provider-specific configuration object, sent as JITSudo's `config`. Put no secrets here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub config: Option<serde_json::Value>,

    /// Whether the provider is enabled. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// JITSudo `provider_type` values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum JitsudoProviderType {
    #[default]
    AwsIdentityCenter,
    Okta,
    AzureAd,
    GoogleWorkspace,
    Slack,
    Github,
    Pagerduty,
    CustomScim,
}

impl JitsudoProviderType {
    /// The wire name, e.g. `okta`.
    pub fn as_wire(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A rule's `local` or `remote`: up to 50 objects of Keystone's mapping schema, kept as given.
fn free_form_rule_parts(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 50,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Provider-specific configuration object, sent as JITSudo's `config`. Put no secrets here.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Observed state of a security identity provider, as last read from the remote system.
///
/// The schema default `{observedGeneration: 0}` is applied by the API server whenever it reads
/// an object without status: a just-applied object then says "generation 1 not observed yet"
/// to every client (kstatus InProgress, Argo CD Progressing) before the operator has seen it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[schemars(extend("default" = {"observedGeneration": 0}))]
#[x_kube(validation = Rule::new("!has(oldSelf.remoteId) || has(self.remoteId)").message("status.remoteId cannot be removed once recorded: a write from a stale cache would disown the remote provider"))]
#[serde(rename_all = "camelCase")]
pub struct SecurityProviderStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the remote provider exists, matches the spec and is healthy. `Synced`: the last
    /// reconcile reached the remote system and applied the spec. `Reconciling`/`Stalled` follow
    /// kstatus for GitOps tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Backend of the connection: `coveo`, `keystone` or `jitsudo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,

    /// Id of the provider in the remote system (a UUID for JITSudo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,

    /// The remote system `remoteId` belongs to, recorded when this object created or adopted
    /// the provider (never for `managementPolicy: Observe`). Absent, or different from the
    /// connection's current identity, means the provider is not owned by this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,

    /// The value of the `secprov.dev/create-pending` annotation (the create attempt) whose
    /// create made `remoteId`. A marker equal to it is spent: that create is recorded, nothing
    /// of it is pending, and the marker may stay on the object. Absent when `remoteId` was
    /// adopted or recorded otherwise.
    // Boxed: a thin pointer keeps the cached object within a 1 KiB allocation (`size_tests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_attempt: Option<Box<CreateAttempt>>,

    /// A provider this object managed in another remote system and left there, not deleted,
    /// when its connection was pointed at a new system and the change was confirmed with the
    /// `secprov.dev/remote-system-change` annotation. Nothing manages it any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_behind: Option<Box<LeftBehind>>,

    /// Current activity of the remote provider (Coveo `currentStatus`; for Keystone
    /// `ENABLED`/`DISABLED`; for JITSudo the `sync_status`, upper-cased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_status: Option<CurrentStatus>,

    /// The last refresh of the provider's identities (Coveo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_operation: Option<LastRefreshOperation>,

    /// Identity counts of the provider (Coveo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Statistics>,

    /// Coveo-specific observed state: refresh schedules and the hash of the secret values
    /// last sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coveo: Option<Box<CoveoStatus>>,

    /// Keystone-specific observed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystone: Option<Box<KeystoneStatus>>,

    /// JITSudo-specific observed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitsudo: Option<Box<JitsudoStatus>>,

    /// Value of the `secprov.dev/refresh-requested-at` annotation whose refresh was triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_refresh_at: Option<String>,
}

impl SecurityProviderStatus {
    /// The create attempt recorded as the one that made `remoteId` (`createAttempt`).
    pub fn recorded_attempt(&self) -> Option<&str> {
        self.create_attempt
            .as_deref()
            .map(|attempt| attempt.0.as_str())
    }
}

/// The token of one create attempt (`<object uid>/<attempt>`): the value of the
/// `secprov.dev/create-pending` marker that attempt wrote.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct CreateAttempt(pub String);

/// A remote provider left in the remote system an object managed it in before its connection
/// was pointed elsewhere.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftBehind {
    /// Its id in that system.
    pub remote_id: String,
    /// The remote system (canonical endpoint, and organization or tenant in parentheses).
    pub system: String,
}

/// Which remote system an owned provider id belongs to: the same id in another organization,
/// tenant or cloud is a different provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    /// uid of the ProviderConnection the provider was created or adopted through.
    pub connection_uid: String,
    /// Endpoint of the remote system (Coveo platform URL, Keystone auth URL, JITSudo endpoint).
    pub endpoint: String,
    /// Partition of the remote system the id lives in: the Coveo organization id or the
    /// JITSudo tenant id; empty for Keystone, whose identity providers are global to the cloud.
    #[serde(default)]
    pub scope: String,
}

impl Ownership {
    /// Whether `self` and `other` name the same remote system (endpoint and organization or
    /// tenant). The connection uid is not compared: recreating a connection to the same
    /// system keeps ownership, pointing it at another organization does not.
    /// Both sides are read through [`remote_system`](super::remote_system)'s normalization, so
    /// values recorded by an earlier version (as the user spelled them) still match.
    pub fn same_remote_system(&self, other: &Ownership) -> bool {
        self.system_key() == other.system_key()
    }

    /// The canonical `endpoint` and `scope` this ownership names, one string: what claims are
    /// keyed by and what messages show.
    pub fn system_key(&self) -> String {
        let endpoint = super::remote_system::canonical_endpoint(&self.endpoint);
        match super::remote_system::canonical_scope(&self.scope) {
            scope if scope.is_empty() => endpoint,
            scope => format!("{endpoint} ({scope})"),
        }
    }

    /// This ownership with endpoint and scope in canonical form (what status records).
    pub fn canonical(mut self) -> Ownership {
        self.endpoint = super::remote_system::canonical_endpoint(&self.endpoint);
        self.scope = super::remote_system::canonical_scope(&self.scope);
        self
    }
}

/// Current activity of the remote provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentStatus {
    /// Status type as reported remotely, e.g. `IDLE`, `REFRESHING`, `ERROR`. Unknown values are
    /// passed through.
    #[serde(rename = "type")]
    pub status_type: String,
    /// Kind of refresh in progress, when refreshing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_type: Option<String>,
}

/// The last refresh operation of a Coveo provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRefreshOperation {
    /// Kind of refresh, e.g. `SECURITY_PROVIDER_REFRESH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_type: Option<String>,
    /// When it ran, RFC 3339 (Coveo reports epoch milliseconds or a date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Identities processed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_entities_processed: Option<i64>,
    /// Outcome, when Coveo reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Identity counts of a Coveo provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Identities per state (`UP_TO_DATE`, `NOT_UPDATED`, `OUT_OF_DATE`, `IN_ERROR`, `DISABLED`).
    #[serde(default)]
    pub number_of_entities_by_state: CountsByState,
    /// Identities in error.
    #[serde(default)]
    pub number_of_entities_in_error: i64,
    /// All identities of the provider.
    #[serde(default)]
    pub total_number_of_entities: i64,
}

/// Counts by state name, sorted by name: what a `BTreeMap<String, i64>` holds (and the same
/// JSON and schema), in one small allocation: a small `BTreeMap` allocates a whole node plus a
/// string per key, and every cached SecurityProvider holds one (BENCHMARKS.md, "Figures behind
/// the code"). Coveo's state names are not allocated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CountsByState(Vec<(Cow<'static, str>, i64)>);

/// The states Coveo reports.
const COVEO_STATES: [&str; 5] = [
    "UP_TO_DATE",
    "NOT_UPDATED",
    "OUT_OF_DATE",
    "IN_ERROR",
    "DISABLED",
];

impl CountsByState {
    /// The count of `state`.
    pub fn get(&self, state: &str) -> Option<i64> {
        self.0
            .binary_search_by(|(s, _)| s.as_ref().cmp(state))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The counts, by state name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(s, n)| (s.as_ref(), *n))
    }

    /// Whether no state is counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, i64)> for CountsByState {
    /// Sorted by state; a repeated state keeps its last count (as a map would).
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Self {
        let sorted: BTreeMap<String, i64> = iter.into_iter().collect();
        let mut counts: Vec<_> = sorted
            .into_iter()
            .map(|(state, n)| {
                let name = match COVEO_STATES.iter().find(|known| **known == state) {
                    Some(known) => Cow::Borrowed(*known),
                    None => Cow::Owned(state),
                };
                (name, n)
            })
            .collect();
        counts.shrink_to_fit();
        CountsByState(counts)
    }
}

impl Serialize for CountsByState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for CountsByState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, i64>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

impl JsonSchema for CountsByState {
    fn schema_name() -> Cow<'static, str> {
        BTreeMap::<String, i64>::schema_name()
    }

    fn inline_schema() -> bool {
        BTreeMap::<String, i64>::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        BTreeMap::<String, i64>::json_schema(generator)
    }
}

/// Coveo-specific observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoStatus {
    /// Fingerprint of the sensitive parameter values and user identity passwords last sent to
    /// Coveo, never the values: HMAC-SHA256 over this object's uid and the values, keyed with
    /// the installation's key (a Secret only the operator reads), so it cannot be checked
    /// against guesses without that key. Coveo masks the values on read, so a change of this
    /// fingerprint is how a rotated Secret is noticed. `hmac-sha256:<key id>:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_hash: Option<String>,
    /// The provider's refresh schedules as last read from Coveo (only read when
    /// `spec.coveo.refreshSchedules` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refresh_schedules: Vec<CoveoScheduleStatus>,
}

/// A refresh schedule as Coveo reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoveoScheduleStatus {
    /// Coveo's id of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Which refresh it runs.
    pub refresh_type: String,
    /// Whether it runs.
    pub enabled: bool,
    /// When it runs, e.g. `DAILY 04:00 UTC`.
    pub frequency: String,
    /// When it last ran, RFC 3339, when Coveo reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_execution: Option<String>,
}

/// Keystone-specific observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneStatus {
    /// Whether the identity provider is enabled remotely.
    pub enabled: bool,
    /// Remote ids as stored by Keystone.
    #[serde(default)]
    pub remote_ids: Vec<String>,
    /// Domain the provider maps users into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    /// Link to the provider resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    /// Link to the provider's protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols_link: Option<String>,
    /// The provider's protocols as the remote reports them, keyed by protocol id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub protocols: BTreeMap<String, KeystoneProtocolStatus>,
    /// Mappings this object created (deleted with their protocol or with this object); a
    /// mapping found existing is never listed here, so it is never deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_mappings: Vec<String>,
    /// Protocols this object declared: one of them removed from the spec is deleted remotely
    /// (a protocol added in the console is never listed here, so it is left alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_protocols: Vec<String>,
}

/// One protocol of a Keystone identity provider, as the remote reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneProtocolStatus {
    /// The mapping the protocol uses.
    pub mapping_id: String,
    /// Link to the protocol resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    /// Link to the identity provider the protocol belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider_link: Option<String>,
}

/// JITSudo-specific observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JitsudoStatus {
    /// Provider type as stored remotely.
    pub provider_type: String,
    /// `pending`, `syncing`, `synced` or `failed` (unknown values passed through).
    pub sync_status: String,
    /// End of the last synchronisation, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_at: Option<String>,
    /// Error of the last failed synchronisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_error: Option<String>,
}

impl SecurityProviderSpec {
    /// A spec naming its connection and nothing else: no backend block, no options.
    pub fn for_connection(connection_ref: &str) -> Self {
        SecurityProviderSpec {
            connection_ref: connection_ref.to_owned(),
            provider_id: None,
            display_name: None,
            deletion_policy: None,
            management_policy: None,
            adopt: None,
            coveo: None,
            keystone: None,
            jitsudo: None,
        }
    }
}

impl SecurityProvider {
    /// The id of the provider in the remote system: `spec.providerId`, else metadata.name.
    pub fn provider_id(&self) -> String {
        self.spec
            .provider_id
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }

    /// The display name: `spec.displayName`, else the provider id.
    pub fn display_name(&self) -> String {
        self.spec
            .display_name
            .clone()
            .unwrap_or_else(|| self.provider_id())
    }

    /// True when the operator must never write to the remote system for this object.
    pub fn observe_only(&self) -> bool {
        self.spec.management_policy.unwrap_or_default() == ManagementPolicy::Observe
    }

    /// The effective deletion policy.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::Ownership;

    fn ownership(uid: &str, endpoint: &str, scope: &str) -> Ownership {
        Ownership {
            connection_uid: uid.into(),
            endpoint: endpoint.into(),
            scope: scope.into(),
        }
    }

    #[test]
    fn another_organization_on_the_same_endpoint_is_another_remote_system() {
        let staging = ownership("u1", "https://platform.cloud.coveo.com", "org-staging");
        let production = ownership("u1", "https://platform.cloud.coveo.com", "org-prod");
        assert!(!staging.same_remote_system(&production));
        let other_region = ownership("u1", "https://platform-eu.cloud.coveo.com", "org-staging");
        assert!(!staging.same_remote_system(&other_region));
    }

    #[test]
    fn a_recreated_connection_to_the_same_system_keeps_ownership() {
        let before = ownership("u1", "https://platform.cloud.coveo.com/", "org");
        let after = ownership("u2", "https://platform.cloud.coveo.com", "org");
        assert!(before.same_remote_system(&after));
    }

    #[test]
    fn values_recorded_as_spelled_by_an_earlier_version_match_their_canonical_form() {
        // An earlier version recorded the endpoint as the user wrote it (minus a trailing /).
        let stored = ownership("u1", "https://IAM.example:443/v3", "");
        let respelled = ownership("u1", "https://iam.example/", "").canonical();
        assert_eq!(respelled.endpoint, "https://iam.example");
        assert!(stored.same_remote_system(&respelled));
        let tenant = ownership(
            "u1",
            "https://api.jitsudo.io",
            "2489E9AD-2EE2-4E00-8EC9-32D5F69181C0",
        );
        let lower = ownership(
            "u1",
            "https://api.jitsudo.io/",
            "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0",
        );
        assert!(tenant.same_remote_system(&lower));
        assert_eq!(tenant.system_key(), lower.canonical().system_key());
    }
}

#[cfg(test)]
mod size_tests {
    use super::SecurityProvider;

    /// The informer cache holds every SecurityProvider in an `Arc` (two counters, 16 bytes):
    /// at most 1,008 bytes inline keeps that allocation in jemalloc's 1 KiB size class
    /// instead of 1.5 KiB (5 MiB at 10,000 objects). The blocks of the less common backends
    /// are boxed for this; a new inline field that breaks the bound should be boxed too.
    #[test]
    fn a_cached_security_provider_fits_a_one_kib_allocation() {
        let size = std::mem::size_of::<SecurityProvider>();
        assert!(size <= 1008, "SecurityProvider is {size} bytes inline");
    }
}

#[cfg(test)]
mod counts_tests {
    use super::CountsByState;

    #[test]
    fn counts_by_state_read_and_write_as_a_sorted_map() {
        let json = r#"{"UP_TO_DATE":3,"IN_ERROR":1,"SOMETHING_NEW":7,"DISABLED":0}"#;
        let counts: CountsByState = serde_json::from_str(json).unwrap();
        assert_eq!(counts.get("UP_TO_DATE"), Some(3));
        assert_eq!(counts.get("SOMETHING_NEW"), Some(7));
        assert_eq!(counts.get("OUT_OF_DATE"), None);
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"DISABLED":0,"IN_ERROR":1,"SOMETHING_NEW":7,"UP_TO_DATE":3}"#
        );
        let repeated: CountsByState = [("A".to_owned(), 1), ("A".to_owned(), 2)]
            .into_iter()
            .collect();
        assert_eq!(repeated.iter().collect::<Vec<_>>(), vec![("A", 2)]);
        assert!(CountsByState::default().is_empty());
    }
}
