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
