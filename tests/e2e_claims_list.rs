//! Objects refused as `AlreadyManaged` learn who manages the provider from the claims' cache,
//! not from a LIST of every SecurityProvider at each resync. Alone in its test binary: it
//! counts the API server's LIST requests for SecurityProviders, which other tests would add to.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use support::*;

const API_KEY: &str = "e2e-claims-list-key-3b9a";

/// LIST requests for SecurityProviders the API server has served (its own counter).
fn securityprovider_lists() -> f64 {
    let metrics = kubectl(&["get", "--raw", "/metrics"]).expect("API server metrics");
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(r#"resource="securityproviders""#)
                && l.contains(r#"verb="LIST""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn provider(name: &str, adopt: bool) -> String {
    format!(
        "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: {name}\n  labels: {{e2e-claims: list}}\nspec:\n  providerId: contested\n  connectionRef: coveo\n  adopt: {adopt}\n  coveo:\n    type: EXPANDED\n"
    )
}

#[test]
fn five_blocked_adopters_do_not_list_the_cluster_at_each_resync() {
    let env = Env::<CoveoSimulator>::coveo(
        "claims-list",
        coveo_config(API_KEY, Duration::from_millis(100)),
    );
    let operator = Operator::start_all_namespaces(
        "claims-list",
        &operator_args(&[
            "--watch-label-selector",
            "e2e-claims=list",
            "--leader-election-namespace",
            &env.ns.name,
            "--resync-interval",
            "5s",
        ]),
    );
    env.ns.apply(&provider("owner", false)).unwrap();
    env.ns
        .wait_condition("securityprovider/owner", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    let adopters: Vec<String> = (0..5).map(|i| format!("adopter-{i}")).collect();
    for name in &adopters {
        env.ns.apply(&provider(name, true)).unwrap();
    }
    for name in &adopters {
        env.ns.wait_reason(
            &format!("securityprovider/{name}"),
            "Synced",
            "AlreadyManaged",
            Duration::from_secs(60),
        );
    }

    let before = securityprovider_lists();
    let started = std::time::Instant::now();
    // 40 s at a 5 s resync: about 8 resyncs of each blocked object, which the counter proves.
    let reconciles_before = operator.reconciles();
    std::thread::sleep(Duration::from_secs(40));
    let resyncs = operator.reconciles() - reconciles_before;
    let lists = securityprovider_lists() - before;
    println!(
        "blocked adopters: {lists} LISTs of SecurityProviders in {:?} over {resyncs} reconciles",
        started.elapsed()
    );
    assert!(
        resyncs >= 5.0 * 6.0,
        "the blocked objects were resynced ({resyncs} reconciles)"
    );
    assert!(lists <= 2.0, "{lists} LISTs of SecurityProviders in 40 s");
}
