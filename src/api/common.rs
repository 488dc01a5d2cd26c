//! Field types shared by both kinds.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL rule for an id that becomes one segment of a remote URL: `..` would address the
/// collection (or its parent) and `/` another route.
pub const PATH_SEGMENT_RULE: &str =
    "self != '.' && self != '..' && !self.contains('/') && !self.matches('[[:cntrl:]]')";

/// A key of a Secret in the same namespace as the object that names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret. It is read only from the namespace of the object that references it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's `data` whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Status of a condition, as in metav1.Condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}
