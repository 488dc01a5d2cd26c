//! Sharding on the real API server (issue 16, item 3): two operator processes with disjoint
//! `--watch-label-selector`s, each with its own leader-election Lease, reconcile disjoint sets
//! of SecurityProviders. The Coveo simulator records every write with its User-Agent, which
//! names the writing process, so "written by exactly one shard" is checked remotely, not
//! trusted from the operators' own counters. An unlabelled object is touched by neither.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use secprov_sim::faults::WriteRecord;
use support::*;

const API_KEY: &str = "e2e-sharding-key-7c1e";
const PER_SHARD: usize = 3;
const KEYS: [&str; 2] = ["a", "b"];

fn provider(name: &str, shard: Option<&str>, display: &str) -> String {
    let labels = shard
        .map(|s| format!("  labels:\n    sharding.secprov.dev/key: {s}\n"))
        .unwrap_or_default();
    security_provider(name, &labels, &coveo_source_spec(name, display, ""))
}

fn names(key: &str) -> Vec<String> {
    (0..PER_SHARD).map(|i| format!("{key}-{i}")).collect()
}

/// A shard: its selector, its own Lease, its own log file.
fn shard(env: &Env<CoveoSimulator>, key: &str) -> Operator {
    let selector = format!("sharding.secprov.dev/key={key}");
    let lease = format!("shard-{key}");
    let ns = env.ns.name.as_str();
    let mut extra = vec![
        "--watch-label-selector",
        &selector,
        "--leader-election-id",
        &lease,
    ];
    let election = fast_leader_election(ns);
    extra.extend(election.iter().map(String::as_str));
    let log = format!("{ns}-shard-{key}");
    Operator::start_logging_to(ns, &log, &operator_args(&extra), "info,secprov=debug")
}

/// The writes whose User-Agent names `op`'s process.
fn writes_by<'a>(writes: &'a [WriteRecord], op: &Operator) -> Vec<&'a WriteRecord> {
    let id = format!("-{})", op.pid());
    writes
        .iter()
        .filter(|w| w.user_agent.contains(&id))
        .collect()
}

#[test]
fn two_shards_reconcile_disjoint_sets_and_leave_the_unlabelled_alone() {
    let env = Env::coveo(
        "sharding",
        coveo_config(API_KEY, Duration::from_millis(300)),
    );
    let shards: Vec<(&str, Operator)> = KEYS.iter().map(|k| (*k, shard(&env, k))).collect();
    let manifests: Vec<String> = KEYS
        .iter()
        .flat_map(|k| names(k).into_iter().map(move |n| provider(&n, Some(k), &n)))
        .collect();
    env.ns.apply(&manifests.join("---\n")).unwrap();
    for (key, op) in &shards {
        for name in names(key) {
            env.ns
                .wait_ready(&format!("securityprovider/{name}"), "120s", op);
        }
    }
    // Each shard holds its own Lease.
    for (key, op) in &shards {
        let holder = env
            .ns
            .kubectl(&[
                "get",
                "lease",
                &format!("shard-{key}"),
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .unwrap();
        assert!(
            holder.ends_with(&format!("-{}", op.pid())),
            "{key}: {holder}"
        );
    }

    // A spec change of every object: each update is written by its own shard only.
    let renamed: Vec<String> = KEYS
        .iter()
        .flat_map(|k| {
            names(k)
                .into_iter()
                .map(move |n| provider(&n, Some(k), &format!("{n} renamed")))
        })
        .collect();
    env.ns.apply(&renamed.join("---\n")).unwrap();
    for key in KEYS {
        for name in names(key) {
            eventually(Duration::from_secs(60), "renamed remotely", || {
                (env.sim.provider(&name)?["displayName"] == format!("{name} renamed")).then_some(())
            });
        }
    }

    // The unlabelled object, applied while both shards are demonstrably active: their
    // reconcile counters keep moving (resync every 2 s) through the window.
    env.ns
        .apply(&provider("unlabelled", None, "unlabelled"))
        .unwrap();
    for (_, op) in &shards {
        op.wait_reconciles(2 * PER_SHARD as u32);
    }
    let unlabelled = env.ns.get_json("securityprovider/unlabelled").unwrap();
    // No shard wrote a status: what the API server shows is the CRD's default alone.
    assert_eq!(
        unlabelled["status"],
        serde_json::json!({"observedGeneration": 0}),
        "{unlabelled}"
    );
    assert!(
        unlabelled["metadata"]["finalizers"].is_null(),
        "{unlabelled}"
    );
    assert!(env.sim.provider("unlabelled").is_none());

    // Every remote write came from exactly one shard, the one the object is labelled for.
    let writes = env.sim.faults().writes();
    let mut attributed = 0;
    for (key, op) in &shards {
        let mine = writes_by(&writes, op);
        attributed += mine.len();
        // Creates go to the collection (no id in the path): one per object of the shard.
        let creates = mine
            .iter()
            .filter(|w| w.method == "POST" && w.path.ends_with("/securityproviders"))
            .count();
        assert_eq!(creates, PER_SHARD, "shard {key} creates: {mine:#?}");
        let updates = mine.iter().filter(|w| w.method == "PUT").count();
        assert!(updates >= PER_SHARD, "shard {key} updates: {mine:#?}");
        // Every other write names its provider in the path: one of this shard's.
        for w in mine
            .iter()
            .filter(|w| !w.path.ends_with("/securityproviders"))
        {
            let object = w
                .path
                .split("/securityproviders/")
                .nth(1)
                .and_then(|rest| rest.split('/').next());
            assert!(
                object.is_some_and(|o| o.starts_with(&format!("{key}-"))),
                "shard {key} wrote {w:?}"
            );
        }
    }
    assert_eq!(
        attributed,
        writes.len(),
        "writes by neither shard: {writes:#?}"
    );
    assert_eq!(
        env.sim.operation_count("create"),
        (KEYS.len() * PER_SHARD) as u64,
        "one create per object in all"
    );
    for (key, op) in &shards {
        println!(
            "shard {key}: {} remote writes, {} status patches, {} reconciles",
            writes_by(&writes, op).len(),
            op.metric_sum("secprov_status_patches_total", &[]),
            op.reconciles()
        );
    }
}
