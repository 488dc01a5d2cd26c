//! Refresh schedules of a Coveo provider (`ScheduleModel`; `GET /securityproviders/{id}/schedules`,
//! `PUT /securityproviders/{id}/schedules/{scheduleId}`): the spec's entries normalized, the
//! remote ones read leniently, compared field by field per refresh type.
//!
//! Only the fields a frequency type uses are compared (`value` for MINUTELY and HOURLY,
//! `hourMinute` for DAILY, `hourMinute` and `weekDays` for WEEKLY, `hourMinute` and `monthDay`
//! for MONTHLY), because Coveo may report the others as null, zero or empty.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::security_provider::{
    CoveoFrequencyType, CoveoHourMinute, CoveoRefreshSchedule, CoveoRefreshType,
    CoveoScheduleFrequency, CoveoScheduleStatus, CoveoStatus, CoveoWeekDay,
};
use crate::backend::{ObservedProvider, ProviderConfig};

/// A schedule reduced to what a spec entry declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleConfig {
    pub enabled: bool,
    #[serde(rename = "type")]
    pub frequency_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// (hour, minute), UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour_minute: Option<(i64, i64)>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub week_days: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month_day: Option<i64>,
}

impl ScheduleConfig {
    /// Keeps only the fields the frequency type uses.
    fn normalized(mut self) -> Self {
        let kind = self.frequency_type.as_str();
        if !matches!(kind, "MINUTELY" | "HOURLY") {
            self.value = None;
        }
        if !matches!(kind, "DAILY" | "WEEKLY" | "MONTHLY") {
            self.hour_minute = None;
        }
        if kind != "WEEKLY" {
            self.week_days.clear();
        }
        if kind != "MONTHLY" {
            self.month_day = None;
        }
        self
    }

    /// One line for status and messages, e.g. `DAILY 04:00 UTC`.
    pub fn describe(&self) -> String {
        let time = self
            .hour_minute
            .map(|(h, m)| format!(" {h:02}:{m:02} UTC"))
            .unwrap_or_default();
        match self.frequency_type.as_str() {
            "MINUTELY" => format!("every {} minutes", self.value.unwrap_or(0)),
            "HOURLY" => format!("every {} hours", self.value.unwrap_or(0)),
            "WEEKLY" => format!(
                "WEEKLY {}{time}",
                self.week_days.iter().cloned().collect::<Vec<_>>().join(",")
            ),
            "MONTHLY" => format!("MONTHLY day {}{time}", self.month_day.unwrap_or(0)),
            other => format!("{other}{time}"),
        }
    }
}

fn wire<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The spec's schedules keyed by refresh type (the CRD allows one entry per type).
pub fn desired(spec: &[CoveoRefreshSchedule]) -> BTreeMap<String, ScheduleConfig> {
    spec.iter()
        .map(|entry| {
            let f = &entry.frequency;
            let config = ScheduleConfig {
                enabled: entry.enabled.unwrap_or(true),
                frequency_type: wire(f.frequency_type),
                value: f.value.map(i64::from),
                hour_minute: f
                    .hour_minute
                    .map(|t| (i64::from(t.hour), i64::from(t.minute))),
                week_days: f.week_days.iter().map(|d| wire(*d)).collect(),
                month_day: f.month_day.map(i64::from),
            };
            (entry.refresh_type.as_wire(), config.normalized())
        })
        .collect()
}

/// `ScheduleModel` as read. The raw JSON is kept so a PUT sends back every field Coveo gave
/// (ids, seed, scheduleType…) with only `enabled` and `frequency` changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSchedule {
    pub id: String,
    pub config: ScheduleConfig,
    pub last_execution: Option<String>,
    pub raw: Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScheduleWire {
    id: Option<String>,
    refresh_type: Option<String>,
    enabled: Option<bool>,
    last_execution: Option<super::TimestampWire>,
    frequency: FrequencyWire,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct FrequencyWire {
    #[serde(rename = "type")]
    frequency_type: Option<String>,
    value: Option<i64>,
    hour_minute: Option<HourMinuteWire>,
    week_days: Option<Vec<String>>,
    month_day: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HourMinuteWire {
    hour: i64,
    minute: i64,
}

/// Parses `GET …/schedules`, keyed by refresh type. Entries without an id or refresh type
/// cannot be updated and are skipped.
pub fn parse_remote(body: &Value) -> BTreeMap<String, RemoteSchedule> {
    let Some(items) = body.as_array() else {
        return BTreeMap::new();
    };
    items
        .iter()
        .filter_map(|raw| {
            let w: ScheduleWire = serde_json::from_value(raw.clone()).ok()?;
            let config = ScheduleConfig {
                enabled: w.enabled.unwrap_or(true),
                frequency_type: w.frequency.frequency_type.unwrap_or_default(),
                value: w.frequency.value,
                hour_minute: w.frequency.hour_minute.map(|t| (t.hour, t.minute)),
                week_days: w
                    .frequency
                    .week_days
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                month_day: w.frequency.month_day,
            }
            .normalized();
            let schedule = RemoteSchedule {
                id: w.id?,
                config,
                last_execution: w.last_execution.and_then(|t| t.to_rfc3339()),
                raw: raw.clone(),
            };
            Some((w.refresh_type?, schedule))
        })
        .collect()
}

/// Records schedules read from (or stored by) Coveo in an observed provider: in its
/// configuration, for the diff and later PUT bodies, and in its state, for status.
pub fn record(observed: &mut ObservedProvider, remote: BTreeMap<String, RemoteSchedule>) {
    observed.state.coveo = Some(CoveoStatus {
        secrets_hash: None,
        refresh_schedules: status(&remote),
    });
    if let ProviderConfig::Coveo(config) = &mut observed.config {
        config.refresh_schedules = remote
            .iter()
            .map(|(t, s)| (t.clone(), s.config.clone()))
            .collect();
        config.remote_schedules = Some(remote);
    }
}

/// Refresh types whose remote schedule differs from the desired one. A listed type Coveo has
/// no schedule for cannot be corrected (there is no create) and is not reported as a diff.
pub fn differing<'a>(
    desired: &'a BTreeMap<String, ScheduleConfig>,
    remote: &BTreeMap<String, RemoteSchedule>,
) -> Vec<&'a str> {
    desired
        .iter()
        .filter(|(refresh_type, want)| {
            remote
                .get(*refresh_type)
                .is_some_and(|have| &have.config != *want)
        })
        .map(|(refresh_type, _)| refresh_type.as_str())
        .collect()
}

/// The diff field that names a schedule, e.g. `refreshSchedules[SECURITY_PROVIDER_REFRESH]`.
pub fn field_name(refresh_type: &str) -> &'static str {
    match refresh_type {
        "SECURITY_PROVIDER_REFRESH" => "refreshSchedules[SECURITY_PROVIDER_REFRESH]",
        "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR" => {
            "refreshSchedules[SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR]"
        }
        "SECURITY_PROVIDER_REFRESH_ENTITIES_NOT_UPDATED" => {
            "refreshSchedules[SECURITY_PROVIDER_REFRESH_ENTITIES_NOT_UPDATED]"
        }
        "REBUILD" => "refreshSchedules[REBUILD]",
        "FULL_REFRESH" => "refreshSchedules[FULL_REFRESH]",
        "INCREMENTAL_REFRESH" => "refreshSchedules[INCREMENTAL_REFRESH]",
        _ => "refreshSchedules",
    }
}

/// The PUT body: the schedule as read, with `enabled` and the frequency fields of `want`.
pub fn put_body(remote: &RemoteSchedule, want: &ScheduleConfig) -> Value {
    let mut body = remote.raw.clone();
    if !body.is_object() {
        body = Value::Object(Default::default());
    }
    body["enabled"] = Value::Bool(want.enabled);
    let mut frequency = match body.get("frequency") {
        Some(Value::Object(f)) => f.clone(),
        _ => Default::default(),
    };
    frequency.insert("type".into(), want.frequency_type.clone().into());
    frequency.insert("value".into(), want.value.into());
    frequency.insert(
        "hourMinute".into(),
        want.hour_minute
            .map(|(hour, minute)| serde_json::json!({"hour": hour, "minute": minute}))
            .unwrap_or(Value::Null),
    );
    frequency.insert(
        "weekDays".into(),
        want.week_days.iter().cloned().collect::<Vec<_>>().into(),
    );
    frequency.insert("monthDay".into(), want.month_day.into());
    body["frequency"] = Value::Object(frequency);
    body
}

/// What status shows for the remote schedules.
pub fn status(remote: &BTreeMap<String, RemoteSchedule>) -> Vec<CoveoScheduleStatus> {
    remote
        .iter()
        .map(|(refresh_type, schedule)| CoveoScheduleStatus {
            id: Some(schedule.id.clone()),
            refresh_type: refresh_type.clone(),
            enabled: schedule.config.enabled,
            frequency: schedule.config.describe(),
            last_execution: schedule.last_execution.clone(),
        })
        .collect()
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, String> {
    serde_json::from_value(Value::String(value.to_owned()))
        .map_err(|_| format!("{what} {value:?} is not supported by this operator version"))
}

/// The spec entries that declare exactly the remote schedules (used by `export`).
pub fn to_spec(
    remote: &BTreeMap<String, RemoteSchedule>,
) -> Result<Vec<CoveoRefreshSchedule>, String> {
    remote
        .iter()
        .map(|(refresh_type, schedule)| {
            let c = &schedule.config;
            let int = |v: i64| i32::try_from(v).map_err(|_| format!("{v} is out of range"));
            Ok(CoveoRefreshSchedule {
                refresh_type: parse_enum::<CoveoRefreshType>("refresh type", refresh_type)?,
                enabled: (!c.enabled).then_some(false),
                frequency: CoveoScheduleFrequency {
                    frequency_type: parse_enum::<CoveoFrequencyType>(
                        "frequency type",
                        &c.frequency_type,
                    )?,
                    value: c.value.map(int).transpose()?,
                    hour_minute: c
                        .hour_minute
                        .map(|(h, m)| {
                            Ok::<_, String>(CoveoHourMinute {
                                hour: int(h)?,
                                minute: int(m)?,
                            })
                        })
                        .transpose()?,
                    week_days: c
                        .week_days
                        .iter()
                        .map(|d| parse_enum::<CoveoWeekDay>("week day", d))
                        .collect::<Result<_, _>>()?,
                    month_day: c.month_day.map(int).transpose()?,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(yaml: &str) -> Vec<CoveoRefreshSchedule> {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn remote() -> Value {
        json!([
            {"id": "s1", "refreshType": "SECURITY_PROVIDER_REFRESH", "scheduleType": "SECURITY_PROVIDER",
             "enabled": true, "organizationId": "o", "resourceId": "p", "lastExecution": null,
             "frequency": {"type": "DAILY", "value": null, "hourMinute": {"hour": 4, "minute": 0}, "weekDays": [], "monthDay": null, "seed": 7}},
            {"id": "s2", "refreshType": "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR", "enabled": true,
             "frequency": {"type": "HOURLY", "value": 2, "hourMinute": {"hour": 0, "minute": 0}, "weekDays": [], "monthDay": null}},
            {"refreshType": "NO_ID", "frequency": {"type": "DAILY"}}
        ])
    }

    #[test]
    fn equal_schedules_ignore_fields_the_frequency_type_does_not_use() {
        let desired = desired(&spec(
            "- {refreshType: SECURITY_PROVIDER_REFRESH, frequency: {type: DAILY, hourMinute: {hour: 4, minute: 0}}}\n\
             - {refreshType: SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR, enabled: true, frequency: {type: HOURLY, value: 2}}",
        ));
        let remote = parse_remote(&remote());
        assert_eq!(remote.len(), 2, "the entry without an id is skipped");
        assert!(differing(&desired, &remote).is_empty());
    }

    #[test]
    fn each_changed_field_is_a_difference_and_unlisted_types_are_left_alone() {
        let remote = parse_remote(&remote());
        for yaml in [
            "{type: DAILY, hourMinute: {hour: 5, minute: 0}}",
            "{type: DAILY, hourMinute: {hour: 4, minute: 30}}",
            "{type: WEEKLY, hourMinute: {hour: 4, minute: 0}, weekDays: [MONDAY]}",
            "{type: MONTHLY, hourMinute: {hour: 4, minute: 0}, monthDay: 1}",
            "{type: HOURLY, value: 4}",
        ] {
            let want = desired(&spec(&format!(
                "- {{refreshType: SECURITY_PROVIDER_REFRESH, frequency: {yaml}}}"
            )));
            assert_eq!(
                differing(&want, &remote),
                ["SECURITY_PROVIDER_REFRESH"],
                "{yaml}"
            );
        }
        let disabled = desired(&spec(
            "- {refreshType: SECURITY_PROVIDER_REFRESH, enabled: false, frequency: {type: DAILY, hourMinute: {hour: 4, minute: 0}}}",
        ));
        assert_eq!(differing(&disabled, &remote), ["SECURITY_PROVIDER_REFRESH"]);
        let unknown_remote = desired(&spec(
            "- {refreshType: FULL_REFRESH, frequency: {type: HOURLY, value: 1}}",
        ));
        assert!(differing(&unknown_remote, &remote).is_empty());
    }

    #[test]
    fn the_put_body_keeps_remote_fields_and_sets_the_wanted_frequency() {
        let remote = parse_remote(&remote());
        let want = desired(&spec(
            "- {refreshType: SECURITY_PROVIDER_REFRESH, frequency: {type: WEEKLY, hourMinute: {hour: 2, minute: 15}, weekDays: [SUNDAY, MONDAY]}}",
        ));
        let body = put_body(
            &remote["SECURITY_PROVIDER_REFRESH"],
            &want["SECURITY_PROVIDER_REFRESH"],
        );
        assert_eq!(body["id"], "s1");
        assert_eq!(body["scheduleType"], "SECURITY_PROVIDER");
        assert_eq!(body["frequency"]["seed"], 7);
        assert_eq!(body["frequency"]["type"], "WEEKLY");
        assert_eq!(body["frequency"]["weekDays"], json!(["MONDAY", "SUNDAY"]));
        assert_eq!(
            body["frequency"]["hourMinute"],
            json!({"hour": 2, "minute": 15})
        );
        let reread = parse_remote(&json!([body]));
        assert_eq!(
            reread["SECURITY_PROVIDER_REFRESH"].config,
            want["SECURITY_PROVIDER_REFRESH"]
        );
    }

    #[test]
    fn exported_schedules_round_trip() {
        let remote = parse_remote(&remote());
        let exported = to_spec(&remote).unwrap();
        assert!(differing(&desired(&exported), &remote).is_empty());
        assert_eq!(desired(&exported).len(), 2);
        assert_eq!(status(&remote)[0].frequency, "DAILY 04:00 UTC");
        assert_eq!(status(&remote)[1].frequency, "every 2 hours");
    }
}
