//! Sharding: `run --watch-label-selector` (the same name and semantics as Flux's flag) makes a
//! replica reconcile only the SecurityProviders whose labels match. The selector is checked
//! here before anything starts, with the grammar of the API server's label selectors
//! (`k8s.io/apimachinery/pkg/labels.Parse`), so a typo is a start-up error that names the
//! bad part, not a watch that fails with a 400 later. Each shard holds its own Lease; its
//! default name is derived from the selector.

/// The label the Helm chart shards on; the catch-all shard selects `!SHARD_LABEL`.
pub const SHARD_LABEL: &str = "sharding.secprov.dev/key";

/// The Lease name without sharding (and the prefix of the derived per-shard names).
pub const DEFAULT_LEASE_NAME: &str = "secprov-operator";

/// A label selector that the API server would reject.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
#[error("invalid --watch-label-selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it, naming the offending requirement.
    pub reason: String,
}

/// The selector to watch with: `None` for an absent or blank one (watch everything),
/// otherwise the trimmed selector once it has been checked.
pub fn parse_selector(selector: Option<&str>) -> Result<Option<String>, SelectorError> {
    let Some(selector) = selector.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let fail = |reason: String| SelectorError {
        selector: selector.to_owned(),
        reason,
    };
    for requirement in split_top_level(selector).map_err(fail)? {
        check_requirement(requirement.trim()).map_err(fail)?;
    }
    Ok(Some(selector.to_owned()))
}

/// The Lease a shard elects its leader with when `--leader-election-id` is not given: the
/// unsharded name, or that name plus a stable hash of the selector, so that two shards never
/// share a Lease by accident and a restarted replica finds its shard's Lease again.
pub fn default_lease_name(selector: Option<&str>) -> String {
    match selector {
        None => DEFAULT_LEASE_NAME.to_owned(),
        Some(s) => format!("{DEFAULT_LEASE_NAME}-shard-{:08x}", fnv1a32(s.as_bytes())),
    }
}

/// FNV-1a: tiny and fixed forever, unlike std's hasher, whose output may change between
/// Rust releases (and with it every derived Lease name).
pub(crate) fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Splits on the commas between requirements (not those inside `in (a, b)`).
fn split_top_level(selector: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

/// One requirement: `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (..)`,
/// `key notin (..)`, `key>n`, `key<n`.
fn check_requirement(req: &str) -> Result<(), String> {
    if req.is_empty() {
        return Err("empty requirement (stray comma?)".into());
    }
    if let Some(key) = req.strip_prefix('!') {
        return check_key(key.trim(), req);
    }
    for op in ["!=", "==", "=", ">", "<"] {
        if let Some((key, value)) = req.split_once(op) {
            check_key(key.trim(), req)?;
            let value = value.trim();
            if op == ">" || op == "<" {
                return value
                    .parse::<i64>()
                    .map(|_| ())
                    .map_err(|_| format!("{req:?}: {op} needs an integer value"));
            }
            return check_value(value, req);
        }
    }
    let words: Vec<&str> = req.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => check_key(key, req),
        [key, rest] => check_set(key, rest.trim(), req),
        _ => Err(format!("{req:?}: cannot parse")),
    }
}

/// `in (a, b)` / `notin (a, b)` after the key.
fn check_set(key: &str, rest: &str, req: &str) -> Result<(), String> {
    check_key(key, req)?;
    let values = rest
        .strip_prefix("notin")
        .or_else(|| rest.strip_prefix("in"))
        .map(str::trim)
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("{req:?}: expected `{key} in (v1,v2)` or `{key} notin (v1,v2)`"))?;
    values
        .split(',')
        .try_for_each(|value| check_value(value.trim(), req))
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn check_key(key: &str, req: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    if !prefix_ok || name.is_empty() || !is_label_word(name) {
        return Err(format!("{req:?}: {key:?} is not a valid label key"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn check_value(value: &str, req: &str) -> Result<(), String> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err(format!("{req:?}: {value:?} is not a valid label value"))
    }
}

fn is_label_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_selectors_shards_use() {
        for s in [
            "sharding.secprov.dev/key=a",
            "sharding.secprov.dev/key==b",
            "!sharding.secprov.dev/key",
            "sharding.secprov.dev/key in (a, b),team!=x",
            "sharding.secprov.dev/key notin (a,b)",
            "app",
            "tier=",
            "replicas>3",
        ] {
            assert_eq!(parse_selector(Some(s)), Ok(Some(s.to_owned())), "{s}");
        }
    }

    #[test]
    fn blank_means_no_sharding() {
        assert_eq!(parse_selector(None), Ok(None));
        assert_eq!(parse_selector(Some("  ")), Ok(None));
    }

    #[test]
    fn rejects_bad_selectors_naming_the_bad_part() {
        for (s, needle) in [
            (
                "sharding.secprov.dev/key=a b",
                "\"a b\" is not a valid label value",
            ),
            ("Bad_Prefix/key=a", "not a valid label key"),
            ("key=a,", "empty requirement"),
            ("key in (a", "unbalanced parentheses"),
            ("key in a,b", "expected `key in (v1,v2)`"),
            ("key>x", "needs an integer"),
            ("-key=a", "not a valid label key"),
        ] {
            let err = parse_selector(Some(s)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("--watch-label-selector"), "{text}");
            assert!(text.contains(needle), "{s}: {text}");
        }
    }

    #[test]
    fn lease_names_differ_per_shard_and_are_stable() {
        assert_eq!(default_lease_name(None), "secprov-operator");
        let a = default_lease_name(Some("sharding.secprov.dev/key=a"));
        let b = default_lease_name(Some("sharding.secprov.dev/key=b"));
        assert_ne!(a, b);
        assert!(
            a.starts_with("secprov-operator-shard-") && a.len() == 31,
            "{a}"
        );
        // Pinned: a changed hash would leave a running shard's Lease behind on upgrade.
        assert_eq!(
            a,
            format!(
                "secprov-operator-shard-{:08x}",
                fnv1a32(b"sharding.secprov.dev/key=a")
            )
        );
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}
