//! Sharding on the real API server (issue 16, item 3): two operator processes with disjoint
//! `--watch-label-selector`s, each with its own leader-election Lease, reconcile disjoint sets
//! of SecurityProviders. The Coveo simulator logs every write with its User-Agent, which names
//! the writing process, so "written by exactly one shard" is checked remotely, not trusted
//! from the operators' own counters. An unlabelled object is touched by neither.
mod support;

use std::time::Duration;

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use support::*;

const API_KEY: &str = "e2e-sharding-key-7c1e";
const ORG: &str = "shard-org";
const PER_SHARD: usize = 3;

fn provider(name: &str, shard: Option<&str>) -> String {
    let labels = shard
        .map(|s| format!("  labels:\n    sharding.secprov.dev/key: {s}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: secprov.dev/v1alpha1
kind: SecurityProvider
metadata:
  name: {name}
{labels}spec:
  connectionRef: coveo
  displayName: {name}
  coveo:
    referencedBy:
      - type: SOURCE
        id: source-{name}
"#
    )
}

fn shard(ns: &str, selector: &str, lease: &str) -> Operator {
    Operator::start(
        ns,
        &[
            "--progress-interval",
            "500ms",
            "--resync-interval",
            "2s",
            "--watch-label-selector",
            selector,
            "--leader-election",
            "--leader-election-namespace",
            ns,
            "--leader-election-id",
            lease,
            "--leader-election-lease-duration",
            "3s",
            "--leader-election-renew-deadline",
            "2s",
            "--leader-election-retry-period",
            "500ms",
        ],
    )
}

#[test]
fn two_shards_reconcile_disjoint_sets_and_leave_the_unlabelled_alone() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(CoveoSimulator::start(
            "127.0.0.1:0".parse().unwrap(),
            CoveoSimConfig {
                refresh_duration: Duration::from_millis(300),
                ..CoveoSimConfig::new(ORG, API_KEY)
            },
        ))
        .unwrap();
    let ns = TestNamespace::new("sharding");
    let connection =
        example("coveo/00-connection.yaml", &sim.base_url()).replace("demo-api-key", API_KEY);
    ns.apply(&connection).unwrap();

    let shards = [
        (
            "a",
            shard(&ns.name, "sharding.secprov.dev/key=a", "shard-a"),
        ),
        (
            "b",
            shard(&ns.name, "sharding.secprov.dev/key=b", "shard-b"),
        ),
    ];
    let mut manifests = Vec::new();
    for (key, _) in &shards {
        for i in 0..PER_SHARD {
            manifests.push(provider(&format!("{key}-{i}"), Some(key)));
        }
    }
    ns.apply(&manifests.join("---\n")).unwrap();
    for (key, op) in &shards {
        for i in 0..PER_SHARD {
            ns.wait_condition(&format!("securityprovider/{key}-{i}"), "Ready", "120s")
                .unwrap_or_else(|e| panic!("{e}\nshard {key} log:\n{}", op.log_text()));
        }
    }
    // Each shard holds its own Lease, and leads it.
    for (key, op) in &shards {
        let holder = ns
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

    // The unlabelled object, applied while both shards are demonstrably active: their
    // reconcile counters keep moving (resync every 2 s) through the window.
    let before: Vec<f64> = shards
        .iter()
        .map(|(_, op)| op.metric_sum("secprov_reconciles_total", &[]))
        .collect();
    ns.apply(&provider("unlabelled", None)).unwrap();
    for ((_, op), before) in shards.iter().zip(&before) {
        eventually(Duration::from_secs(60), "shard reconciling", || {
            (op.metric_sum("secprov_reconciles_total", &[]) >= before + 2.0 * PER_SHARD as f64)
                .then_some(())
        });
    }
    let unlabelled = ns.get_json("securityprovider/unlabelled").unwrap();
    assert!(unlabelled["status"].is_null(), "{unlabelled}");
    assert!(
        unlabelled["metadata"]["finalizers"].is_null(),
        "{unlabelled}"
    );
    assert!(sim.provider("unlabelled").is_none());
    for (key, _) in &shards {
        for i in 0..PER_SHARD {
            assert!(
                sim.provider(&format!("{key}-{i}")).is_some(),
                "{key}-{i} not created"
            );
        }
    }

    // Every remote write came from exactly one shard, the one the object is labelled for.
    let writes = sim.faults().writes();
    let id = |op: &Operator| format!("-{})", op.pid());
    for (key, op) in &shards {
        let mine: Vec<_> = writes
            .iter()
            .filter(|w| w.user_agent.contains(&id(op)))
            .collect();
        assert!(mine.len() >= PER_SHARD, "shard {key} wrote {mine:#?}");
        // No write names an object of the other shard (or the unlabelled one).
        for w in &mine {
            for (other, _) in shards.iter().filter(|(o, _)| o != key) {
                for i in 0..PER_SHARD {
                    let name = format!("{other}-{i}");
                    assert!(!w.path.contains(&name), "shard {key} wrote {name}: {w:?}");
                }
            }
            assert!(!w.path.contains("unlabelled"), "shard {key}: {w:?}");
        }
    }
    let total = writes.len();
    let attributed: usize = shards
        .iter()
        .map(|(_, op)| {
            writes
                .iter()
                .filter(|w| w.user_agent.contains(&id(op)))
                .count()
        })
        .sum();
    assert_eq!(attributed, total, "writes by neither shard: {writes:#?}");
    // Status and finalizer writes on the Kubernetes side, per shard.
    for (key, op) in &shards {
        let patches = op.metric_sum("secprov_status_patches_total", &[]);
        assert!(
            patches >= PER_SHARD as f64,
            "shard {key}: {patches} status patches"
        );
    }
    println!(
        "sharding: {} remote writes, {} by a, {} by b; unlabelled untouched",
        total,
        writes
            .iter()
            .filter(|w| w.user_agent.contains(&id(&shards[0].1)))
            .count(),
        writes
            .iter()
            .filter(|w| w.user_agent.contains(&id(&shards[1].1)))
            .count(),
    );
}
