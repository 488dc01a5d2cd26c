//! The simulated organization's security providers: request validation, the refresh
//! lifecycle, paging, and the JSON views the API returns.
//!
//! Everything here is synchronous and runs under the simulator's mutex; the HTTP layer in
//! `coveo.rs` only parses requests and serializes the views.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::identities::{self, DisableBody, Identities, IdentityBody};
use super::schedules::{self, Schedule, ScheduleInput};

use super::EMAIL_SECURITY_PROVIDER_ID as EMAIL_PROVIDER_ID;
const EMAIL_PROVIDER_TYPE: &str = "EMAIL";

/// Seed 002: "Provide an id or name consisting of 255 characters or less".
const MAX_NAME_LENGTH: usize = 255;

/// Ids and names "reserved for internal use" (seed 002, cause 4). Coveo does not publish the
/// list; the built-in provider's id is the only one we know of. Compared case-insensitively.
const RESERVED_NAMES: &[&str] = &[EMAIL_PROVIDER_ID];

/// `SecurityProviderType` (reference §1.6). Unknown values are rejected like a JSON enum would be.
const PROVIDER_TYPES: &[&str] = &[
    "ACTIVE_DIRECTORY2",
    "BOX",
    "CLAIMS",
    "CLAIMS_TO_EMAIL",
    "CONFLUENCE",
    "CONFLUENCE2",
    "CUSTOM",
    "DATABASE",
    "DROPBOX_FOR_BUSINESS",
    "EMAIL",
    "EXPANDED",
    "FILE",
    "GOOGLE_DRIVE_DOMAIN_WIDE",
    "GENERIC_REST",
    "GRAPHQL",
    "JIRA2",
    "JIVE",
    "KHOROS_COMMUNITY",
    "MICROSOFT_DYNAMICS",
    "OFFICE365",
    "SALESFORCE",
    "SERVICENOW",
    "SHAREPOINT",
    "SHAREPOINT_ONLINE",
    "SITECORE",
    "SLACK",
    "ZENDESK",
];

const SOURCE_REFERENCE: &str = "SOURCE";
const REFERENCE_TYPES: &[&str] = &[SOURCE_REFERENCE, "SECURITY_PROVIDER"];

use identities::{DISABLED, IN_ERROR, UP_TO_DATE};

/// What GET returns in place of a sensitive parameter value or a user identity password.
pub(super) const MASK: &str = "********";
/// The identity states the API always reports, in the seed 000 order.
const REPORTED_STATES: [&str; 5] = [UP_TO_DATE, DISABLED, "NOT_UPDATED", "OUT_OF_DATE", IN_ERROR];

/// `refreshType` of a refresh of one provider.
pub(super) const PROVIDER_REFRESH: &str = "SECURITY_PROVIDER_REFRESH";
/// `refreshType` of an organization-wide refresh (what seed 000's sample shows).
pub(super) const CACHE_REFRESH: &str = "SECURITY_CACHE_REFRESH";

/// The current time on both clocks: the monotonic one drives the lifecycle, the wall clock
/// gives the epoch-millisecond timestamps the API reports.
#[derive(Clone, Copy, Debug)]
pub(super) struct Now {
    pub instant: Instant,
    pub epoch_ms: i64,
}

impl Now {
    pub fn current() -> Self {
        Self {
            instant: Instant::now(),
            epoch_ms: jiff::Timestamp::now().as_millisecond(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request model
// ---------------------------------------------------------------------------------------------

/// `SecurityProviderModel` as a client sends it. Every field is optional, as in the spec;
/// unknown and server-managed fields (organizationId, instanceId, ...) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProviderInput {
    id: Option<String>,
    /// Deprecated; validated (length, reserved) but the response always echoes the id.
    name: Option<String>,
    display_name: Option<String>,
    #[serde(rename = "type")]
    provider_type: Option<String>,
    node_required: Option<bool>,
    case_sensitive: Option<bool>,
    parameters: Option<Map<String, Value>>,
    /// Credentials of connector-type providers; passwords are masked on read.
    user_identities: Option<BTreeMap<String, UserIdentityInput>>,
    /// The map key is arbitrary (seed 002 uses "EmailSecurityProvider"); entries are
    /// identified by their `id` (or `name`, or failing both, the key).
    cascading_security_providers: Option<BTreeMap<String, CascadeInput>>,
    referenced_by: Option<Vec<ReferenceInput>>,
}

/// `{name, userName, password}`; the spec spells it `username`, platform-client `userName`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentityInput {
    name: Option<String>,
    #[serde(alias = "username")]
    user_name: Option<String>,
    password: Option<String>,
}

/// A stored user identity (the password in clear, as the service holds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UserIdentity {
    user_name: String,
    password: String,
}

#[derive(Debug, Default, Deserialize)]
struct CascadeInput {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ReferenceInput {
    id: Option<String>,
    #[serde(rename = "type")]
    reference_type: Option<String>,
}

pub(super) fn parse_input(body: &[u8]) -> Result<ProviderInput, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::invalid_json(format!(
            "The request body is not a valid security provider: {error}"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Stored model
// ---------------------------------------------------------------------------------------------

/// A validated configuration: what POST/PUT set.
#[derive(Clone, Debug)]
pub(super) struct ProviderSpec {
    id: String,
    display_name: String,
    provider_type: String,
    node_required: bool,
    case_sensitive: bool,
    parameters: Map<String, Value>,
    user_identities: BTreeMap<String, UserIdentity>,
    /// Keyed by the target provider's id, as responses key it (seed 000).
    cascading: BTreeMap<String, CascadeEntry>,
    referenced_by: Vec<Reference>,
}

impl ProviderSpec {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A client that sends back the masked value of a sensitive parameter or password means
    /// "unchanged" (what it read): keep the stored secret then.
    fn keep_masked_secrets(&mut self, stored: &ProviderSpec) {
        for (name, parameter) in self.parameters.iter_mut() {
            if is_sensitive(parameter)
                && parameter.get("value").and_then(Value::as_str) == Some(MASK)
                && let Some(old) = stored.parameters.get(name)
            {
                *parameter = old.clone();
            }
        }
        for (name, identity) in self.user_identities.iter_mut() {
            if identity.password == MASK
                && let Some(old) = stored.user_identities.get(name)
            {
                identity.password = old.password.clone();
            }
        }
    }

    fn masked_parameters(&self) -> Map<String, Value> {
        let mut parameters = self.parameters.clone();
        for parameter in parameters.values_mut() {
            if is_sensitive(parameter)
                && let Some(object) = parameter.as_object_mut()
            {
                object.insert("value".to_owned(), json!(MASK));
            }
        }
        parameters
    }

    fn masked_user_identities(&self) -> BTreeMap<String, Value> {
        self.user_identities
            .iter()
            .map(|(name, identity)| {
                let view = json!({"name": name, "userName": identity.user_name, "password": MASK});
                (name.clone(), view)
            })
            .collect()
    }
}

fn is_sensitive(parameter: &Value) -> bool {
    parameter.get("sensitive").and_then(Value::as_bool) == Some(true)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct CascadeEntry {
    id: String,
    name: String,
    #[serde(rename = "type")]
    provider_type: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Reference {
    #[serde(rename = "type")]
    reference_type: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<Value>,
}

/// A refresh-like operation in progress; it ends `refresh_duration` after `started`.
#[derive(Clone, Copy, Debug)]
struct Activity {
    kind: ActivityKind,
    deadline: Instant,
    finished_epoch_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActivityKind {
    /// Right after creation, before the provider is first ready.
    Creating,
    /// A refresh; the payload is its `refreshType`.
    Refreshing(&'static str),
}

#[derive(Clone, Debug)]
pub(super) struct Provider {
    spec: ProviderSpec,
    /// Lower-cased id and displayName, precomputed so filtering thousands stays cheap.
    search_id: String,
    search_display_name: String,
    by_state: BTreeMap<String, i64>,
    last_refresh: Option<Value>,
    /// `currentStatus` when no activity runs: IDLE, or what a console edit set.
    resting_status: Value,
    activity: Option<Activity>,
    /// Identities pushed through the Push API. While there are any, `by_state` is derived
    /// from them; otherwise it is what a test or a console edit set.
    identities: Identities,
    schedules: Vec<Schedule>,
}

fn idle_status() -> Value {
    json!({"type": "IDLE"})
}

impl Provider {
    fn new(spec: ProviderSpec) -> Self {
        let mut provider = Self {
            search_id: spec.id.to_lowercase(),
            search_display_name: String::new(),
            spec,
            by_state: zero_states(),
            last_refresh: None,
            resting_status: idle_status(),
            activity: None,
            identities: Identities::default(),
            schedules: Vec::new(),
        };
        provider.refresh_search_keys();
        provider
    }

    fn refresh_search_keys(&mut self) {
        self.search_id = self.spec.id.to_lowercase();
        self.search_display_name = self.spec.display_name.to_lowercase();
    }

    fn set_spec(&mut self, mut spec: ProviderSpec) {
        spec.keep_masked_secrets(&self.spec);
        self.spec = spec;
        self.refresh_search_keys();
    }

    /// Recomputes the counts from the identities, when the provider holds any.
    fn derive_statistics(&mut self) {
        if !self.identities.is_empty() {
            self.by_state = self.identities.by_state(&REPORTED_STATES);
        }
    }

    /// `filter` is lower-cased; matches an id or displayName substring.
    fn matches(&self, filter: Option<&str>) -> bool {
        filter.is_none_or(|filter| {
            self.search_id.contains(filter) || self.search_display_name.contains(filter)
        })
    }

    /// `currentStatus`. With identities it also carries their counts (`numberOfEntities…`);
    /// while refreshing, `numberOfEntitiesProcessed` grows with the elapsed time.
    fn current_status(&self, refresh_duration: Duration) -> Cow<'_, Value> {
        let mut status = match self.activity.map(|activity| activity.kind) {
            Some(ActivityKind::Creating) => json!({"type": "CREATING"}),
            Some(ActivityKind::Refreshing(refresh_type)) => json!({
                "type": "REFRESHING",
                "refreshType": refresh_type,
            }),
            None if self.identities.is_empty() => return Cow::Borrowed(&self.resting_status),
            None => self.resting_status.clone(),
        };
        if self.identities.is_empty() {
            return Cow::Owned(status);
        }
        let total = total_entities(&self.by_state);
        let processed = match self.activity {
            Some(activity) if matches!(activity.kind, ActivityKind::Refreshing(_)) => {
                let left = activity.deadline.saturating_duration_since(Instant::now());
                let done = 1.0 - left.as_secs_f64() / refresh_duration.as_secs_f64().max(0.001);
                (total as f64 * done.clamp(0.0, 1.0)) as i64
            }
            _ => total,
        };
        if let Some(object) = status.as_object_mut() {
            object.insert("totalNumberOfEntities".to_owned(), json!(total));
            object.insert("numberOfEntitiesProcessed".to_owned(), json!(processed));
            let in_error = self.by_state.get(IN_ERROR).copied().unwrap_or(0);
            object.insert("numberOfEntitiesInError".to_owned(), json!(in_error));
        }
        Cow::Owned(status)
    }

    /// Ends the running activity as if it ran to completion.
    fn finish_activity(&mut self, exists: &dyn Fn(&str) -> bool) {
        let Some(activity) = self.activity.take() else {
            return;
        };
        if let ActivityKind::Refreshing(refresh_type) = activity.kind {
            if self.identities.is_empty() {
                self.complete_refresh(refresh_type, activity.finished_epoch_ms);
            } else {
                self.process_identities(refresh_type, activity.finished_epoch_ms, exists);
            }
        }
        self.resting_status = idle_status();
    }

    /// A refresh of pushed identities (see [`super::identities`]).
    fn process_identities(
        &mut self,
        refresh_type: &str,
        finished_epoch_ms: i64,
        exists: &dyn Fn(&str) -> bool,
    ) {
        let processed = self.identities.refresh(exists);
        self.derive_statistics();
        let in_error = self.by_state.get(IN_ERROR).copied().unwrap_or(0);
        self.last_refresh = Some(json!({
            "id": super::super::new_request_id(),
            "operationType": refresh_type,
            "timestamp": finished_epoch_ms,
            "result": if in_error > 0 { "COMPLETED_WITH_ERRORS" } else { "COMPLETED" },
            "numberOfEntitiesProcessed": processed,
        }));
    }

    /// A successful refresh brings every identity up to date, except disabled ones, which
    /// stay disabled (deleted identities remain listed as disabled; reference §1.6).
    fn complete_refresh(&mut self, refresh_type: &str, finished_epoch_ms: i64) {
        let total = total_entities(&self.by_state);
        let disabled = self.by_state.get(DISABLED).copied().unwrap_or(0);
        let mut by_state = zero_states();
        by_state.insert(UP_TO_DATE.to_owned(), total - disabled);
        by_state.insert(DISABLED.to_owned(), disabled);
        self.by_state = by_state;
        self.last_refresh = Some(json!({
            "operationType": refresh_type,
            "timestamp": finished_epoch_ms,
            "numberOfEntitiesProcessed": total,
        }));
    }

    /// Applies a console-style edit made on this provider's JSON view. Returns whether the
    /// edit changed `currentStatus` (which then replaces any running activity).
    fn apply_json_edit(&mut self, before: &Value, after: &Value) -> bool {
        let Some(edited) = after.as_object() else {
            tracing::warn!(id = %self.spec.id, "ignoring an edit that is not a JSON object");
            return false;
        };
        let mut spec = self.spec.clone();
        apply_spec_edit(&mut spec, edited);
        self.set_spec(spec);
        self.derive_statistics();
        if let Some(by_state) = edited_statistics(edited) {
            self.by_state = by_state;
        }
        self.last_refresh = edited
            .get("lastRefreshOperation")
            .filter(|value| !value.is_null())
            .cloned();
        let status_edited = before.get("currentStatus") != edited.get("currentStatus");
        if status_edited {
            self.resting_status = edited
                .get("currentStatus")
                .cloned()
                .unwrap_or_else(idle_status);
        }
        status_edited
    }
}

/// Edits of the configuration fields. Fields removed by the edit reset to their defaults;
/// fields with the wrong JSON type are ignored. `id`, `name` and `organizationClusterId` are
/// server-owned and cannot be edited.
fn apply_spec_edit(spec: &mut ProviderSpec, edited: &Map<String, Value>) {
    match edited.get("displayName") {
        Some(Value::String(name)) => spec.display_name = name.clone(),
        None | Some(Value::Null) => spec.display_name = spec.id.clone(),
        Some(_) => {}
    }
    if let Some(provider_type) = edited.get("type").and_then(Value::as_str) {
        spec.provider_type = provider_type.to_owned();
    }
    spec.node_required = edited_bool(edited, "nodeRequired", spec.node_required);
    spec.case_sensitive = edited_bool(edited, "caseSensitive", spec.case_sensitive);
    match edited.get("parameters") {
        Some(Value::Object(parameters)) => spec.parameters = parameters.clone(),
        None | Some(Value::Null) => spec.parameters = Map::new(),
        Some(_) => {}
    }
    match edited.get("cascadingSecurityProviders") {
        Some(Value::Object(entries)) => spec.cascading = edited_cascades(entries),
        None | Some(Value::Null) => spec.cascading = BTreeMap::new(),
        Some(_) => {}
    }
    match edited.get("referencedBy") {
        Some(Value::Array(entries)) => spec.referenced_by = edited_references(entries),
        None | Some(Value::Null) => spec.referenced_by = Vec::new(),
        Some(_) => {}
    }
}

fn edited_bool(edited: &Map<String, Value>, key: &str, current: bool) -> bool {
    match edited.get(key) {
        Some(Value::Bool(value)) => *value,
        None | Some(Value::Null) => false,
        Some(_) => current,
    }
}

fn edited_cascades(entries: &Map<String, Value>) -> BTreeMap<String, CascadeEntry> {
    let text = |entry: &Value, key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
    entries
        .iter()
        .map(|(key, entry)| {
            let id = text(entry, "id").unwrap_or_else(|| key.clone());
            let name = text(entry, "name").unwrap_or_else(|| id.clone());
            let provider_type = text(entry, "type").unwrap_or_default();
            (
                id.clone(),
                CascadeEntry {
                    id,
                    name,
                    provider_type,
                },
            )
        })
        .collect()
}

fn edited_references(entries: &[Value]) -> Vec<Reference> {
    entries
        .iter()
        .filter_map(|entry| {
            Some(Reference {
                reference_type: entry.get("type")?.as_str()?.to_owned(),
                id: entry.get("id")?.as_str()?.to_owned(),
                attributes: entry.get("attributes").filter(|a| !a.is_null()).cloned(),
            })
        })
        .collect()
}

fn edited_statistics(edited: &Map<String, Value>) -> Option<BTreeMap<String, i64>> {
    let states = edited
        .get("statistics")?
        .get("numberOfEntitiesByState")?
        .as_object()?;
    Some(
        states
            .iter()
            .filter_map(|(state, count)| Some((state.clone(), count.as_i64()?)))
            .collect(),
    )
}

fn zero_states() -> BTreeMap<String, i64> {
    REPORTED_STATES
        .iter()
        .map(|state| ((*state).to_owned(), 0))
        .collect()
}

fn total_entities(by_state: &BTreeMap<String, i64>) -> i64 {
    by_state.values().sum()
}

/// What the API reports for a push source referencing a provider (seed 000). The simulator
/// knows no source names, so the name is the source id.
fn source_attributes(source_id: &str) -> Value {
    json!({
        "id": source_id,
        "name": source_id,
        "sourceType": "PUSH",
        "crawlerInstanceType": "Push",
        "pushEnabled": true,
        "onPremisesEnabled": false,
    })
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Java-side string length (UTF-16 code units), which is what a 255-character limit counts.
fn java_length(text: &str) -> usize {
    text.encode_utf16().count()
}

fn check_length(field: &str, value: &str) -> Result<(), ApiError> {
    let length = java_length(value);
    if length <= MAX_NAME_LENGTH {
        return Ok(());
    }
    Err(ApiError::invalid_configuration(format!(
        "The security provider {field} is too long ({length} characters). \
         Provide a {field} consisting of {MAX_NAME_LENGTH} characters or less."
    )))
}

fn check_not_reserved(field: &str, value: &str) -> Result<(), ApiError> {
    let reserved = RESERVED_NAMES
        .iter()
        .any(|name| name.eq_ignore_ascii_case(value.trim()));
    if !reserved {
        return Ok(());
    }
    Err(ApiError::invalid_configuration(format!(
        "The security provider {field} '{value}' is reserved for internal use."
    )))
}

fn check_provider_type(provider_type: Option<String>) -> Result<String, ApiError> {
    let provider_type = provider_type
        .ok_or_else(|| ApiError::invalid_json("The security provider 'type' is required."))?;
    if PROVIDER_TYPES.contains(&provider_type.as_str()) {
        return Ok(provider_type);
    }
    Err(ApiError::invalid_json(format!(
        "'{provider_type}' is not a valid security provider type."
    )))
}

/// Resolves the provider id from the body and, for PUT, the path.
fn resolve_id(body_id: Option<String>, path_id: Option<&str>) -> Result<String, ApiError> {
    match (body_id.filter(|id| !id.is_empty()), path_id) {
        (Some(body_id), Some(path_id)) if body_id != path_id => {
            Err(ApiError::invalid_parameter(format!(
                "The id in the request body ('{body_id}') does not match the id in the path \
                 ('{path_id}')."
            )))
        }
        (Some(id), _) => Ok(id),
        (None, Some(path_id)) => Ok(path_id.to_owned()),
        (None, None) => Err(ApiError::invalid_json(
            "The security provider 'id' is required.",
        )),
    }
}

/// Builds `referencedBy`, rejecting a resource referenced twice (seed 002, cause 2).
fn build_references(inputs: Vec<ReferenceInput>) -> Result<Vec<Reference>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut references = Vec::with_capacity(inputs.len());
    for input in inputs {
        let id = input
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ApiError::invalid_json("Every 'referencedBy' entry needs an 'id'."))?;
        // Assumption: a reference without a type is a source, the only kind docs show.
        let reference_type = input
            .reference_type
            .unwrap_or_else(|| SOURCE_REFERENCE.to_owned());
        if !REFERENCE_TYPES.contains(&reference_type.as_str()) {
            return Err(ApiError::invalid_json(format!(
                "'{reference_type}' is not a valid reference type."
            )));
        }
        if !seen.insert((reference_type.clone(), id.clone())) {
            return Err(ApiError::invalid_configuration(format!(
                "The security provider configuration references the {reference_type} '{id}' \
                 more than once. A security provider can reference a resource only once."
            )));
        }
        let attributes = (reference_type == SOURCE_REFERENCE).then(|| source_attributes(&id));
        references.push(Reference {
            reference_type,
            id,
            attributes,
        });
    }
    Ok(references)
}

fn user_identities(
    inputs: BTreeMap<String, UserIdentityInput>,
) -> Result<BTreeMap<String, UserIdentity>, ApiError> {
    inputs
        .into_iter()
        .map(|(key, input)| {
            let name = input.name.filter(|n| !n.is_empty()).unwrap_or(key);
            let user_name = input.user_name.filter(|u| !u.is_empty()).ok_or_else(|| {
                ApiError::invalid_json(format!("The user identity '{name}' needs a 'userName'."))
            })?;
            let password = input.password.unwrap_or_default();
            Ok((
                name,
                UserIdentity {
                    user_name,
                    password,
                },
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// Paging parameters; `filter` is already lower-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PageQuery {
    pub filter: Option<String>,
    pub page: usize,
    pub per_page: usize,
}

pub(super) struct Store {
    organization_id: String,
    organization_cluster_id: String,
    refresh_duration: Duration,
    /// Ordered by id: the stable order of every listing.
    providers: BTreeMap<String, Provider>,
    /// Running activities by deadline, so settling costs O(finished · log n), not O(n).
    due: BTreeSet<(Instant, String)>,
}

impl Store {
    /// An organization holding only the built-in Email Security Provider.
    pub fn new(
        organization_id: String,
        organization_cluster_id: String,
        refresh_duration: Duration,
    ) -> Self {
        let email = ProviderSpec {
            id: EMAIL_PROVIDER_ID.to_owned(),
            display_name: EMAIL_PROVIDER_ID.to_owned(),
            provider_type: EMAIL_PROVIDER_TYPE.to_owned(),
            node_required: false,
            case_sensitive: false,
            parameters: Map::new(),
            user_identities: BTreeMap::new(),
            cascading: BTreeMap::new(),
            referenced_by: Vec::new(),
        };
        let mut providers = BTreeMap::new();
        providers.insert(email.id.clone(), Provider::new(email));
        Self {
            organization_id,
            organization_cluster_id,
            refresh_duration,
            providers,
            due: BTreeSet::new(),
        }
    }

    /// Completes every activity whose deadline has passed. Called before each operation so
    /// the lifecycle is computed lazily yet every read is consistent.
    pub fn settle(&mut self, now: Instant) {
        while let Some(first) = self.due.first() {
            if first.0 > now {
                break;
            }
            let Some((_, id)) = self.due.pop_first() else {
                break;
            };
            // Out of the map while it finishes, so the refresh can look up the others.
            if let Some(mut provider) = self.providers.remove(&id) {
                let providers = &self.providers;
                provider.finish_activity(&|other| other == id || providers.contains_key(other));
                self.providers.insert(id, provider);
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.providers.contains_key(id)
    }

    /// Ids of the providers clients created (everything but the built-in provider).
    pub fn user_provider_ids(&self) -> Vec<String> {
        self.providers
            .keys()
            .filter(|id| *id != EMAIL_PROVIDER_ID)
            .cloned()
            .collect()
    }

    /// Validates a create (`path_id` None) or update body; the four
    /// `SECURITY_PROVIDER_INVALID_CONFIGURATION` causes of seed 002 are checked here.
    pub fn validate(
        &self,
        input: ProviderInput,
        path_id: Option<&str>,
    ) -> Result<ProviderSpec, ApiError> {
        let id = resolve_id(input.id, path_id)?;
        check_length("id", &id)?;
        if let Some(name) = &input.name {
            check_length("name", name)?;
        }
        if let Some(display_name) = &input.display_name {
            check_length("displayName", display_name)?;
        }
        check_not_reserved("id", &id)?;
        if let Some(name) = &input.name {
            check_not_reserved("name", name)?;
        }
        let provider_type = check_provider_type(input.provider_type)?;
        let referenced_by = build_references(input.referenced_by.unwrap_or_default())?;
        let cascading =
            self.resolve_cascades(input.cascading_security_providers.unwrap_or_default())?;
        let display_name = input
            .display_name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| id.clone());
        Ok(ProviderSpec {
            id,
            display_name,
            provider_type,
            node_required: input.node_required.unwrap_or(false),
            case_sensitive: input.case_sensitive.unwrap_or(false),
            parameters: input.parameters.unwrap_or_default(),
            user_identities: user_identities(input.user_identities.unwrap_or_default())?,
            cascading,
            referenced_by,
        })
    }

    /// Resolves cascading providers by id, rejecting unknown ones (seed 002, cause 3). The
    /// response entries carry the target's real name and type, whatever the request said.
    fn resolve_cascades(
        &self,
        inputs: BTreeMap<String, CascadeInput>,
    ) -> Result<BTreeMap<String, CascadeEntry>, ApiError> {
        let mut cascading = BTreeMap::new();
        for (key, input) in inputs {
            let target_id = input.id.or(input.name).unwrap_or(key);
            let target = self.providers.get(&target_id).ok_or_else(|| {
                ApiError::invalid_configuration(format!(
                    "The cascading security provider '{target_id}' does not exist."
                ))
            })?;
            let entry = CascadeEntry {
                id: target_id.clone(),
                name: target_id.clone(),
                provider_type: target.spec.provider_type.clone(),
            };
            cascading.insert(target_id, entry);
        }
        Ok(cascading)
    }

    /// Creates a provider; it reports CREATING for one refresh duration, then IDLE with
    /// zero statistics and no `lastRefreshOperation` until its first refresh.
    pub fn create(&mut self, spec: ProviderSpec, now: Now) -> Result<ModelView<'_>, ApiError> {
        if self.providers.contains_key(&spec.id) {
            return Err(ApiError::already_exists(&spec.id));
        }
        let id = spec.id.clone();
        let mut provider = Provider::new(spec);
        provider.schedules =
            schedules::defaults(&self.organization_id, &id, super::super::new_request_id);
        self.providers.insert(id.clone(), provider);
        self.start_activity(&id, ActivityKind::Creating, now);
        let provider = self
            .providers
            .get(&id)
            .ok_or_else(|| ApiError::provider_not_found(&id))?;
        Ok(self.model_view(provider))
    }

    /// Replaces a provider's configuration, keeping its status, statistics and history.
    pub fn update(&mut self, spec: ProviderSpec) -> Result<StatusView<'_>, ApiError> {
        let id = spec.id.clone();
        let provider = self
            .providers
            .get_mut(&id)
            .ok_or_else(|| ApiError::provider_not_found(&id))?;
        provider.set_spec(spec);
        self.status_view_of(&id)
    }

    pub fn delete(&mut self, id: &str) -> Result<(), ApiError> {
        if id == EMAIL_PROVIDER_ID {
            return Err(ApiError::access_denied(format!(
                "The security provider '{id}' is reserved for internal use and cannot be deleted."
            )));
        }
        self.cancel_activity(id);
        self.providers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| ApiError::provider_not_found(id))
    }

    /// Starts a refresh. A refresh already running is left alone (the request still
    /// succeeds); a provider still CREATING starts refreshing at once.
    pub fn start_refresh(
        &mut self,
        id: &str,
        refresh_type: &'static str,
        now: Now,
    ) -> Result<(), ApiError> {
        let provider = self
            .providers
            .get(id)
            .ok_or_else(|| ApiError::provider_not_found(id))?;
        let refreshing = provider
            .activity
            .is_some_and(|activity| activity.kind != ActivityKind::Creating);
        if !refreshing {
            self.cancel_activity(id);
            self.start_activity(id, ActivityKind::Refreshing(refresh_type), now);
        }
        Ok(())
    }

    /// Refreshes every provider of the organization.
    pub fn start_refresh_all(&mut self, now: Now) {
        let ids: Vec<String> = self.providers.keys().cloned().collect();
        for id in ids {
            // Every id comes from the map, so this cannot fail.
            let _ = self.start_refresh(&id, CACHE_REFRESH, now);
        }
    }

    /// Stops a running refresh without updating statistics; the provider returns to IDLE.
    pub fn cancel_refresh(&mut self, id: &str) -> Result<(), ApiError> {
        if !self.providers.contains_key(id) {
            return Err(ApiError::provider_not_found(id));
        }
        self.cancel_activity(id);
        if let Some(provider) = self.providers.get_mut(id) {
            provider.resting_status = idle_status();
        }
        Ok(())
    }

    fn start_activity(&mut self, id: &str, kind: ActivityKind, now: Now) {
        let Some(provider) = self.providers.get_mut(id) else {
            return;
        };
        let duration_ms = i64::try_from(self.refresh_duration.as_millis()).unwrap_or(i64::MAX);
        let activity = Activity {
            kind,
            deadline: now.instant + self.refresh_duration,
            finished_epoch_ms: now.epoch_ms.saturating_add(duration_ms),
        };
        provider.activity = Some(activity);
        self.due.insert((activity.deadline, id.to_owned()));
    }

    fn cancel_activity(&mut self, id: &str) {
        let Some(provider) = self.providers.get_mut(id) else {
            return;
        };
        if let Some(activity) = provider.activity.take() {
            self.due.remove(&(activity.deadline, id.to_owned()));
        }
    }

    /// Adds or replaces one identity (Push API `PUT …/permissions` or `…/mappings`).
    pub fn push_identity(&mut self, id: &str, body: IdentityBody) -> Result<(), ApiError> {
        let provider = self
            .providers
            .get_mut(id)
            .ok_or_else(|| ApiError::provider_not_found(id))?;
        provider.identities.push(id, body);
        provider.derive_statistics();
        Ok(())
    }

    /// Disables one identity (Push API `DELETE …/permissions`).
    pub fn disable_identity(&mut self, id: &str, body: &DisableBody) -> Result<(), ApiError> {
        let provider = self
            .providers
            .get_mut(id)
            .ok_or_else(|| ApiError::provider_not_found(id))?;
        provider.identities.disable(body);
        provider.derive_statistics();
        Ok(())
    }

    /// The identities of a provider with their states.
    pub fn members(&self, id: &str) -> Option<Vec<Value>> {
        Some(self.providers.get(id)?.identities.members_json())
    }

    /// `GET /securityproviders/{id}/schedules`.
    pub fn schedules(&self, id: &str) -> Result<&[Schedule], ApiError> {
        self.providers
            .get(id)
            .map(|provider| provider.schedules.as_slice())
            .ok_or_else(|| ApiError::provider_not_found(id))
    }

    /// `PUT /securityproviders/{id}/schedules/{scheduleId}`.
    pub fn update_schedule(
        &mut self,
        id: &str,
        schedule_id: &str,
        input: ScheduleInput,
    ) -> Result<&Schedule, ApiError> {
        let provider = self
            .providers
            .get_mut(id)
            .ok_or_else(|| ApiError::provider_not_found(id))?;
        let schedule = provider
            .schedules
            .iter_mut()
            .find(|schedule| schedule.id() == schedule_id)
            .ok_or_else(|| ApiError::schedule_not_found(id, schedule_id))?;
        schedule.apply(input)?;
        Ok(schedule)
    }

    /// A console edit of the schedule running `refresh_type`; false if there is none.
    pub fn edit_schedule(
        &mut self,
        id: &str,
        refresh_type: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let schedule = self.providers.get_mut(id).and_then(|provider| {
            provider
                .schedules
                .iter_mut()
                .find(|schedule| schedule.refresh_type() == refresh_type)
        });
        let Some(schedule) = schedule else {
            return false;
        };
        schedules::edit_as_json(schedule, edit);
        true
    }

    /// The stored (unmasked) value of a sensitive parameter, and the password of a user
    /// identity: what a test checks the operator sent.
    pub fn secret_values(&self, id: &str) -> Option<BTreeMap<String, String>> {
        let spec = &self.providers.get(id)?.spec;
        let parameters = spec.parameters.iter().filter_map(|(name, parameter)| {
            let value = parameter.get("value")?.as_str()?;
            is_sensitive(parameter).then(|| (format!("parameters.{name}"), value.to_owned()))
        });
        let passwords = spec
            .user_identities
            .iter()
            .map(|(name, identity)| (format!("userIdentities.{name}"), identity.password.clone()));
        Some(parameters.chain(passwords).collect())
    }

    /// Replaces a provider's identity counts by state; false if the provider is unknown.
    pub fn set_statistics(&mut self, id: &str, by_state: BTreeMap<String, i64>) -> bool {
        let Some(provider) = self.providers.get_mut(id) else {
            return false;
        };
        provider.by_state = by_state;
        true
    }

    /// Lets `edit` change the provider's JSON (as GET returns it) like an admin console
    /// edit would; false if the provider is unknown.
    pub fn edit_as_json(&mut self, id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        let Some(before) = self.provider_json(id) else {
            return false;
        };
        let mut after = before.clone();
        edit(&mut after);
        let Some(provider) = self.providers.get_mut(id) else {
            return false;
        };
        if provider.apply_json_edit(&before, &after) {
            self.cancel_activity(id);
        }
        true
    }

    // -- Views --------------------------------------------------------------------------------

    pub fn provider_view(&self, id: &str) -> Option<StatusView<'_>> {
        self.providers
            .get(id)
            .map(|provider| self.status_view(provider))
    }

    pub fn provider_json(&self, id: &str) -> Option<Value> {
        let view = self.provider_view(id)?;
        serde_json::to_value(view).ok()
    }

    fn status_view_of(&self, id: &str) -> Result<StatusView<'_>, ApiError> {
        self.provider_view(id)
            .ok_or_else(|| ApiError::provider_not_found(id))
    }

    pub fn list(&self) -> Vec<StatusView<'_>> {
        self.providers
            .values()
            .map(|provider| self.status_view(provider))
            .collect()
    }

    pub fn page(&self, query: &PageQuery) -> PageView<'_> {
        self.paginate(self.providers.values(), query)
    }

    /// Providers with the given ids (unknown ids ignored), in id order, then paged.
    pub fn batch(&self, ids: &BTreeSet<String>, query: &PageQuery) -> PageView<'_> {
        let found = ids.iter().filter_map(|id| self.providers.get(id));
        self.paginate(found, query)
    }

    fn paginate<'a>(
        &'a self,
        candidates: impl Iterator<Item = &'a Provider>,
        query: &PageQuery,
    ) -> PageView<'a> {
        let per_page = query.per_page.max(1);
        let first = query.page.saturating_mul(per_page);
        let mut items = Vec::new();
        let mut total = 0usize;
        for provider in candidates.filter(|p| p.matches(query.filter.as_deref())) {
            if total >= first && items.len() < per_page {
                items.push(self.status_view(provider));
            }
            total += 1;
        }
        PageView {
            items,
            total_entries: total,
            total_pages: total.div_ceil(per_page),
        }
    }

    /// `GET /securitycache/status`: platform-client's `SecurityCacheStatus`
    /// (`{currentStatus, statistics}`); statistics are summed over all providers.
    pub fn cache_status(&self) -> Value {
        let mut by_state = zero_states();
        for provider in self.providers.values() {
            for (state, count) in &provider.by_state {
                *by_state.entry(state.clone()).or_insert(0) += count;
            }
        }
        let refreshing = self.providers.values().find_map(|provider| {
            match provider.activity.map(|activity| activity.kind) {
                Some(ActivityKind::Refreshing(refresh_type)) => Some(refresh_type),
                _ => None,
            }
        });
        let current_status = match refreshing {
            Some(refresh_type) => json!({"type": "REFRESHING", "refreshType": refresh_type}),
            None => idle_status(),
        };
        let mut statistics =
            serde_json::to_value(StatisticsView::of(&by_state)).unwrap_or_default();
        if let Some(statistics) = statistics.as_object_mut() {
            statistics.insert("numberOfProviders".to_owned(), json!(self.providers.len()));
        }
        json!({"currentStatus": current_status, "statistics": statistics})
    }

    fn model_view<'a>(&'a self, provider: &'a Provider) -> ModelView<'a> {
        let spec = &provider.spec;
        ModelView {
            id: &spec.id,
            name: &spec.id,
            display_name: &spec.display_name,
            organization_cluster_id: &self.organization_cluster_id,
            provider_type: &spec.provider_type,
            node_required: spec.node_required,
            case_sensitive: spec.case_sensitive,
            parameters: spec.masked_parameters(),
            user_identities: spec.masked_user_identities(),
            cascading_security_providers: &spec.cascading,
            referenced_by: &spec.referenced_by,
        }
    }

    fn status_view<'a>(&'a self, provider: &'a Provider) -> StatusView<'a> {
        StatusView {
            model: self.model_view(provider),
            statistics: StatisticsView::of(&provider.by_state),
            last_refresh_operation: provider.last_refresh.as_ref(),
            current_status: provider.current_status(self.refresh_duration),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON views (field order follows seed 000)
// ---------------------------------------------------------------------------------------------

/// `SecurityProviderModel`, as POST returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ModelView<'a> {
    id: &'a str,
    /// Deprecated field; always the id.
    name: &'a str,
    display_name: &'a str,
    organization_cluster_id: &'a str,
    #[serde(rename = "type")]
    provider_type: &'a str,
    node_required: bool,
    case_sensitive: bool,
    /// Sensitive values masked.
    parameters: Map<String, Value>,
    /// Passwords masked; absent when there are none (seed 000 shows no such key).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    user_identities: BTreeMap<String, Value>,
    cascading_security_providers: &'a BTreeMap<String, CascadeEntry>,
    referenced_by: &'a [Reference],
}

/// `SecurityProviderModelWithStatus`, as GET, PUT and the listings return it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusView<'a> {
    #[serde(flatten)]
    model: ModelView<'a>,
    statistics: StatisticsView<'a>,
    /// Absent until the provider's first refresh completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_refresh_operation: Option<&'a Value>,
    current_status: Cow<'a, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatisticsView<'a> {
    number_of_entities_by_state: StatesView<'a>,
    number_of_entities_in_error: i64,
    total_number_of_entities: i64,
}

impl<'a> StatisticsView<'a> {
    fn of(by_state: &'a BTreeMap<String, i64>) -> Self {
        Self {
            number_of_entities_by_state: StatesView(by_state),
            number_of_entities_in_error: by_state.get(IN_ERROR).copied().unwrap_or(0),
            total_number_of_entities: total_entities(by_state),
        }
    }
}

/// The five reported states (zero when absent) in seed order, then any extra state a test
/// set (e.g. UNKNOWN).
#[derive(Debug)]
struct StatesView<'a>(&'a BTreeMap<String, i64>);

impl Serialize for StatesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for state in REPORTED_STATES {
            map.serialize_entry(state, &self.0.get(state).copied().unwrap_or(0))?;
        }
        for (state, count) in self.0 {
            if !REPORTED_STATES.contains(&state.as_str()) {
                map.serialize_entry(state, count)?;
            }
        }
        map.end()
    }
}

/// The paged listing shape: `{items, totalEntries, totalPages}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageView<'a> {
    items: Vec<StatusView<'a>>,
    total_entries: usize,
    total_pages: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(
            "org".to_owned(),
            "org-cluster".to_owned(),
            Duration::from_millis(100),
        )
    }

    fn input(json: Value) -> ProviderInput {
        serde_json::from_value(json).expect("valid input")
    }

    #[test]
    fn lifecycle_settles_lazily_by_deadline() {
        let mut store = store();
        let start = Now::current();
        let spec = store
            .validate(input(json!({"id": "a", "type": "EXPANDED"})), None)
            .expect("valid");
        store.create(spec, start).expect("created");
        store.set_statistics("a", BTreeMap::from([("IN_ERROR".to_owned(), 3)]));
        store
            .start_refresh("a", PROVIDER_REFRESH, start)
            .expect("known");
        store.settle(start.instant + Duration::from_millis(99));
        assert_eq!(
            store.provider_json("a").expect("a")["currentStatus"]["type"],
            "REFRESHING"
        );
        store.settle(start.instant + Duration::from_millis(100));
        let json = store.provider_json("a").expect("a");
        assert_eq!(json["currentStatus"], json!({"type": "IDLE"}));
        assert_eq!(
            json["statistics"]["numberOfEntitiesByState"]["UP_TO_DATE"],
            3
        );
        assert_eq!(
            json["lastRefreshOperation"]["timestamp"],
            json!(start.epoch_ms + 100)
        );
        assert!(store.due.is_empty());
    }

    #[test]
    fn java_length_counts_utf16_units() {
        assert_eq!(java_length("abc"), 3);
        assert_eq!(java_length("é"), 1);
        assert_eq!(java_length("𝄞"), 2);
    }

    #[test]
    fn refresh_keeps_disabled_identities_disabled() {
        let mut provider = Provider::new(
            store()
                .validate(input(json!({"id": "a", "type": "EXPANDED"})), None)
                .expect("valid"),
        );
        provider.by_state = BTreeMap::from([
            ("DISABLED".to_owned(), 2),
            ("OUT_OF_DATE".to_owned(), 5),
            ("UNKNOWN".to_owned(), 1),
        ]);
        provider.complete_refresh(PROVIDER_REFRESH, 42);
        assert_eq!(provider.by_state["UP_TO_DATE"], 6);
        assert_eq!(provider.by_state["DISABLED"], 2);
        assert_eq!(total_entities(&provider.by_state), 8);
        assert_eq!(
            provider.last_refresh.as_ref().expect("set")["numberOfEntitiesProcessed"],
            8
        );
    }
}
