//! deploy/monitoring/: the PrometheusRule passes `promtool check rules`, its alerts fire (and
//! stay quiet) exactly as prometheusrule-tests.yaml says under `promtool test rules`, every
//! alert has a summary and a runbook section in docs/operations.md, the Grafana dashboard
//! parses, and the Helm chart's copies equal the originals. promtool is built from the Go module proxy by
//! scripts/tools/build.sh (cached), or named by `SECPROV_PROMTOOL`: the tests fail without it.
//!
//! End to end: every metric name the rules and the dashboard use is exported by a running
//! operator reconciling a provider on the real API server.
mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use secprov_sim::coveo::CoveoSimConfig;
use support::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn promtool() -> String {
    go_tool("promtool", "SECPROV_PROMTOOL")
}

fn rule() -> serde_yaml::Value {
    serde_yaml::from_str(&read("deploy/monitoring/prometheusrule.yaml")).expect("valid YAML")
}

fn alerts() -> Vec<serde_yaml::Value> {
    rule()["spec"]["groups"]
        .as_sequence()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// `spec.groups` as a plain Prometheus rules file, with the promtool test cases beside it.
fn rules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let groups = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([(
        "groups".into(),
        rule()["spec"]["groups"].clone(),
    )]))
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), groups).unwrap();
    std::fs::write(
        dir.path().join("prometheusrule-tests.yaml"),
        read("deploy/monitoring/prometheusrule-tests.yaml"),
    )
    .unwrap();
    dir
}

fn run_promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_check_rules_passes() {
    let dir = rules_dir();
    let text = run_promtool(&["check", "rules", "rules.yaml"], dir.path());
    let expected = format!("SUCCESS: {} rules found", alerts().len());
    assert!(text.contains(&expected), "{text}");
}

#[test]
fn every_alert_fires_and_stays_quiet_as_its_promtool_cases_say() {
    let dir = rules_dir();
    run_promtool(&["test", "rules", "prometheusrule-tests.yaml"], dir.path());
    // Every alert has at least one case in which it fires.
    let cases = read("deploy/monitoring/prometheusrule-tests.yaml");
    let tests: serde_yaml::Value = serde_yaml::from_str(&cases).unwrap();
    let mut firing = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                firing.insert(case["alertname"].as_str().unwrap().to_owned());
            }
        }
    }
    let names: BTreeSet<String> = alerts()
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(firing, names, "alerts without a firing test case");
}

#[test]
fn every_alert_has_a_summary_a_severity_and_a_documented_runbook() {
    let runbooks = read("docs/operations.md");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(markdown_anchor)
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let annotations = &alert["annotations"];
        assert!(
            annotations["summary"]
                .as_str()
                .is_some_and(|s| s.len() > 20),
            "{name}: no summary"
        );
        assert!(
            ["warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        let runbook = annotations["runbook"].as_str().unwrap_or_default();
        let section = runbook
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| {
                panic!("{name}: runbook {runbook:?} is not a docs/operations.md section")
            });
        assert_eq!(section, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(section),
            "{name}: docs/operations.md has no section #{section}"
        );
    }
}

/// Every `secprov_*` metric name in a PromQL expression, without the suffixes a histogram or
/// counter sample adds (`_bucket`, `_sum`, `_count`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("secprov_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("valid JSON")
}

#[test]
fn dashboard_shows_what_the_on_call_needs() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut used = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    for needed in [
        "secprov_security_providers",
        "secprov_reconciles_total",
        "secprov_remote_requests_total",
        "secprov_remote_request_duration_seconds_bucket",
        "secprov_rate_limit_waits_total",
        "secprov_status_patches_total",
        "secprov_leader",
        "secprov_process_resident_memory_bytes",
    ] {
        assert!(used.contains(needed), "dashboard lacks {needed}: {used:?}");
    }
    // Panels do not overlap on Grafana's 24-column grid.
    let mut cells = BTreeSet::new();
    for panel in panels {
        let g = &panel["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{} is wider than the grid", panel["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{} overlaps", panel["title"]);
            }
        }
    }
}

#[test]
fn helm_chart_copies_equal_deploy_monitoring() {
    let chart = "deploy/helm/secprov-operator/files";
    assert_eq!(
        read(&format!("{chart}/prometheusrule.yaml")),
        read("deploy/monitoring/prometheusrule.yaml"),
        "run `make monitoring`"
    );
    assert_eq!(
        read(&format!("{chart}/grafana-dashboard.json")),
        read("deploy/monitoring/grafana-dashboard.json"),
        "run `make monitoring`"
    );
    // The kustomization ships both.
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/monitoring/kustomization.yaml")).unwrap();
    let text = serde_yaml::to_string(&kustomization).unwrap();
    assert!(text.contains("prometheusrule.yaml") && text.contains("grafana-dashboard.json"));
}

/// Every metric name in the rules and the dashboard.
fn names_used() -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for alert in alerts() {
        used.extend(metric_names(alert["expr"].as_str().unwrap()));
    }
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    used
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exported_by_a_running_operator() {
    let Env { ns, sim, rt: _rt } = Env::coveo(
        "monitoring",
        CoveoSimConfig::new(COVEO_ORG, "monitoring-key"),
    );
    ns.apply(&example("coveo/10-securityprovider.yaml", &sim.base_url()))
        .unwrap();
    let operator = Operator::start(&ns.name, &["--connection-check-interval", "2s"]);
    ns.wait_condition("securityprovider/push-source-provider", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    let ours = |name: &str| {
        format!(
            "namespace=\"{}\",name=\"{name}\",backend=\"coveo\"",
            ns.name
        )
    };
    let text = eventually(
        Duration::from_secs(30),
        "provider and connection gauges",
        || {
            let text = operator.metrics();
            (text.contains(&format!(
                "secprov_security_provider_ready{{{}}} 1",
                ours("push-source-provider")
            )) && text.contains(&format!(
                "secprov_provider_connection_ready{{{}}} 1",
                ours("coveo")
            )))
            .then_some(text)
        },
    );
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let used = names_used();
    assert!(used.len() >= 12, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by deploy/monitoring/ but not exported: {missing:?}\n{text}"
    );
    for expected in [
        format!(
            "secprov_security_provider_stalled{{{}}} 0",
            ours("push-source-provider")
        ),
        "secprov_security_providers{backend=\"coveo\",ready=\"True\"} 1".to_owned(),
        "secprov_leader 1".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected} in\n{text}");
    }
}
