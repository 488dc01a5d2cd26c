//! Refresh schedules of a provider (`ScheduleModel`, reference §1.5):
//! `GET /securityproviders/{id}/schedules` and `PUT /securityproviders/{id}/schedules/{scheduleId}`.
//!
//! Every new provider gets the console's two schedules (https://docs.coveo.com/en/1998/):
//! "Identity Provider Refresh" (`SECURITY_PROVIDER_REFRESH`, daily at 04:00 UTC) and
//! "Identities in Error Refresh" (`SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR`; the docs give
//! no default, we assume every 2 hours). The simulator does not run schedules; it stores them.
//!
//! Responses carry every frequency key (`value`, `hourMinute`, `weekDays`, `monthDay`, `seed`),
//! null or empty when the type does not use it, as Java services typically serialize: clients
//! must compare only the fields a frequency type uses.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;

const FREQUENCY_TYPES: &[&str] = &["MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY"];
const WEEK_DAYS: &[&str] = &[
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
    "SUNDAY",
];

/// `{hour, minute}`, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct HourMinute {
    hour: i64,
    #[serde(default)]
    minute: i64,
}

/// `ScheduleModel.frequency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Frequency {
    #[serde(rename = "type")]
    frequency_type: String,
    #[serde(default)]
    value: Option<i64>,
    #[serde(default)]
    hour_minute: Option<HourMinute>,
    #[serde(default)]
    week_days: Vec<String>,
    #[serde(default)]
    month_day: Option<i64>,
    #[serde(default)]
    seed: Option<i64>,
}

/// `ScheduleModel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Schedule {
    id: String,
    refresh_type: String,
    schedule_type: &'static str,
    enabled: bool,
    organization_id: String,
    resource_id: String,
    last_execution: Option<i64>,
    frequency: Frequency,
}

/// What a client may send on PUT; `id`, `resourceId` and the like are server-owned.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScheduleInput {
    #[serde(default)]
    refresh_type: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    frequency: Frequency,
}

impl Schedule {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn refresh_type(&self) -> &str {
        &self.refresh_type
    }

    /// Applies a validated PUT body.
    pub fn apply(&mut self, input: ScheduleInput) -> Result<(), ApiError> {
        if let Some(refresh_type) = &input.refresh_type
            && refresh_type != &self.refresh_type
        {
            return Err(ApiError::invalid_parameter(format!(
                "The schedule {} runs {}; its refreshType cannot become {refresh_type}.",
                self.id, self.refresh_type
            )));
        }
        check_frequency(&input.frequency)?;
        if let Some(enabled) = input.enabled {
            self.enabled = enabled;
        }
        let seed = self.frequency.seed;
        self.frequency = input.frequency;
        self.frequency.seed = seed;
        Ok(())
    }
}

/// The console's two default schedules of a new provider; ids are derived from `make_id`.
pub(super) fn defaults(
    organization_id: &str,
    provider_id: &str,
    mut make_id: impl FnMut() -> String,
) -> Vec<Schedule> {
    let schedule = |id: String, refresh_type: &str, frequency: Frequency| Schedule {
        id,
        refresh_type: refresh_type.to_owned(),
        schedule_type: "SECURITY_PROVIDER",
        enabled: true,
        organization_id: organization_id.to_owned(),
        resource_id: provider_id.to_owned(),
        last_execution: None,
        frequency,
    };
    let seed = Some(i64::from(rand::random::<u16>()));
    vec![
        schedule(
            make_id(),
            "SECURITY_PROVIDER_REFRESH",
            Frequency {
                frequency_type: "DAILY".to_owned(),
                value: None,
                hour_minute: Some(HourMinute { hour: 4, minute: 0 }),
                week_days: Vec::new(),
                month_day: None,
                seed,
            },
        ),
        schedule(
            make_id(),
            "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR",
            Frequency {
                frequency_type: "HOURLY".to_owned(),
                value: Some(2),
                hour_minute: None,
                week_days: Vec::new(),
                month_day: None,
                seed,
            },
        ),
    ]
}

pub(super) fn parse_input(body: &[u8]) -> Result<ScheduleInput, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid_json(format!("Invalid schedule: {error}")))
}

/// The rules the console enforces, as we understand them (our assumption for the exact ones):
/// an interval for MINUTELY (1-59) and HOURLY (1-23), a time of day for the others, days for
/// WEEKLY, a day of the month for MONTHLY.
fn check_frequency(frequency: &Frequency) -> Result<(), ApiError> {
    let kind = frequency.frequency_type.as_str();
    let bad = |message: String| Err(ApiError::invalid_parameter(message));
    if !FREQUENCY_TYPES.contains(&kind) {
        return bad(format!("'{kind}' is not a valid frequency type."));
    }
    if let Some(time) = frequency.hour_minute
        && !((0..24).contains(&time.hour) && (0..60).contains(&time.minute))
    {
        return bad("hourMinute must be a time of day (hour 0-23, minute 0-59).".to_owned());
    }
    match kind {
        "MINUTELY" | "HOURLY" => {
            let max = if kind == "MINUTELY" { 59 } else { 23 };
            match frequency.value {
                Some(value) if (1..=max).contains(&value) => {}
                _ => return bad(format!("A {kind} schedule needs a value from 1 to {max}.")),
            }
        }
        _ if frequency.hour_minute.is_none() => {
            return bad(format!("A {kind} schedule needs hourMinute."));
        }
        _ => {}
    }
    if kind == "WEEKLY"
        && (frequency.week_days.is_empty()
            || frequency
                .week_days
                .iter()
                .any(|d| !WEEK_DAYS.contains(&d.as_str())))
    {
        return bad("A WEEKLY schedule needs weekDays (MONDAY to SUNDAY).".to_owned());
    }
    if kind == "MONTHLY" && !frequency.month_day.is_some_and(|d| (1..=31).contains(&d)) {
        return bad("A MONTHLY schedule needs a monthDay from 1 to 31.".to_owned());
    }
    Ok(())
}

/// Replaces a schedule by an edited copy of its JSON, as a console edit would (drift). Fields
/// that do not parse are left as they were.
pub(super) fn edit_as_json(schedule: &mut Schedule, edit: impl FnOnce(&mut Value)) {
    let Ok(mut json) = serde_json::to_value(&*schedule) else {
        return;
    };
    edit(&mut json);
    if let Some(enabled) = json.get("enabled").and_then(Value::as_bool) {
        schedule.enabled = enabled;
    }
    if let Some(frequency) = json
        .get("frequency")
        .and_then(|f| serde_json::from_value::<Frequency>(f.clone()).ok())
    {
        schedule.frequency = frequency;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(schedule: &mut Schedule, body: Value) -> Result<(), ApiError> {
        schedule.apply(parse_input(body.to_string().as_bytes())?)
    }

    #[test]
    fn defaults_are_the_console_two_and_puts_are_validated() {
        let mut counter = 0;
        let mut schedules = defaults("org", "p", || {
            counter += 1;
            format!("s{counter}")
        });
        let json = serde_json::to_value(&schedules[0]).unwrap();
        assert_eq!(json["refreshType"], "SECURITY_PROVIDER_REFRESH");
        assert_eq!(
            json["frequency"]["hourMinute"],
            json!({"hour": 4, "minute": 0})
        );
        assert_eq!(json["frequency"]["weekDays"], json!([]));
        assert_eq!(
            schedules[1].refresh_type(),
            "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR"
        );
        let weekly = json!({"enabled": false, "frequency": {"type": "WEEKLY", "weekDays": ["MONDAY"], "hourMinute": {"hour": 2, "minute": 30}}});
        put(&mut schedules[0], weekly).expect("valid");
        assert!(!schedules[0].enabled);
        for bad in [
            json!({"frequency": {"type": "DAILY"}}),
            json!({"frequency": {"type": "DAILY", "hourMinute": {"hour": 24, "minute": 0}}}),
            json!({"frequency": {"type": "WEEKLY", "hourMinute": {"hour": 1, "minute": 0}}}),
            json!({"frequency": {"type": "MONTHLY", "hourMinute": {"hour": 1, "minute": 0}}}),
            json!({"frequency": {"type": "HOURLY", "value": 24}}),
            json!({"frequency": {"type": "YEARLY"}}),
            json!({"refreshType": "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR", "frequency": {"type": "HOURLY", "value": 1}}),
        ] {
            assert!(put(&mut schedules[0], bad.clone()).is_err(), "{bad}");
        }
    }
}
