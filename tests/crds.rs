//! crds/ is generated from the Rust types: the checked-in YAML must equal `secprov-operator crd`.
use std::process::Command;

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_secprov-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/secprov.dev.yaml"
    ))
    .unwrap();
    assert!(
        generated == checked_in,
        "crds/secprov.dev.yaml is stale: run `cargo run -- crd > crds/secprov.dev.yaml`"
    );
}

#[test]
fn every_schema_property_has_a_description() {
    // `kubectl explain` is only useful when every field says what it is for.
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/secprov.dev.yaml"
    ))
    .unwrap();
    let mut missing = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            walk(&version["schema"]["openAPIV3Schema"], &kind, &mut missing);
        }
    }
    assert!(
        missing.is_empty(),
        "fields without description: {missing:#?}"
    );
}

fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            // metadata/apiVersion/kind are standard and documented by Kubernetes itself.
            let standard = path.matches('.').count() == 0
                && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
            if prop.get("description").is_none() && !standard {
                missing.push(here.clone());
            }
            walk(prop, &here, missing);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), missing);
    }
}

/// The generated CRDs as JSON values.
fn generated_crds() -> Vec<serde_json::Value> {
    secprov::api::crds()
        .into_iter()
        .map(|crd| serde_json::to_value(crd).unwrap())
        .collect()
}

/// Paths of every `enum` that offers a literal `null`.
fn enums_with_null(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(values) = map.get("enum").and_then(|v| v.as_array())
                && values.iter().any(|v| v.is_null())
            {
                found.push(path.to_owned());
            }
            for (key, child) in map {
                enums_with_null(child, &format!("{path}.{key}"), found);
            }
        }
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|item| enums_with_null(item, &format!("{path}[]"), found)),
        _ => {}
    }
}

#[test]
fn no_enum_offers_a_literal_null() {
    let mut found = Vec::new();
    for crd in generated_crds() {
        enums_with_null(&crd, "", &mut found);
    }
    assert!(found.is_empty(), "enums with null: {found:#?}");
}

#[test]
fn policies_explain_their_default_and_meaning() {
    let crd = generated_crds()
        .into_iter()
        .find(|crd| crd["spec"]["names"]["kind"] == "SecurityProvider")
        .unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let explain = |field: &str| {
        spec["properties"][field]["description"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let deletion = explain("deletionPolicy");
    assert!(deletion.contains("`Delete` (the default)"), "{deletion}");
    assert!(
        deletion.contains("`Orphan` keeps the remote provider"),
        "{deletion}"
    );
    let management = explain("managementPolicy");
    assert!(
        management.contains("`Manage` (the default)"),
        "{management}"
    );
    assert!(
        management.contains("never writes or deletes anything remotely"),
        "{management}"
    );
}
