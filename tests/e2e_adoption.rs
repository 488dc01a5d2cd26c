//! Onboarding existing providers: export then apply (zero remote writes), observe-only, and
//! plan, on the real API server with the Coveo simulator.
mod support;

use std::process::Command;
use std::time::Duration;

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use support::*;

const API_KEY: &str = "e2e-adoption-key-51d2";
const ORG: &str = "demo-org";

struct Env {
    ns: TestNamespace,
    sim: CoveoSimulator,
    rt: tokio::runtime::Runtime,
}

fn setup(prefix: &str) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(CoveoSimulator::start(
            "127.0.0.1:0".parse().unwrap(),
            CoveoSimConfig {
                refresh_duration: Duration::from_millis(100),
                ..CoveoSimConfig::new(ORG, API_KEY)
            },
        ))
        .unwrap();
    let ns = TestNamespace::new(prefix);
    ns.apply(
        &example("coveo/00-connection.yaml", &sim.base_url()).replace("demo-api-key", API_KEY),
    )
    .unwrap();
    Env { ns, sim, rt }
}

/// Creates a provider directly in the remote system, as a console user would.
fn create_remotely(env: &Env, body: serde_json::Value) {
    let url = format!(
        "{}/rest/organizations/{ORG}/securityproviders",
        env.sim.base_url()
    );
    env.rt.block_on(async {
        {
            secprov::backend::http::install_tls_provider();
            reqwest::Client::new()
        }
        .post(url)
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    });
}

fn operator_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_secprov-operator"))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "secprov-operator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn remote_writes(sim: &CoveoSimulator) -> u64 {
    ["create", "update", "delete", "refresh"]
        .iter()
        .map(|op| sim.operation_count(op))
        .sum()
}

#[test]
fn export_then_apply_adopts_everything_with_zero_remote_writes() {
    let env = setup("adopt-export");
    create_remotely(
        &env,
        serde_json::json!({"id": "zeta-provider", "type": "EXPANDED",
        "referencedBy": [{"type": "SOURCE", "id": "src-1"}],
        "cascadingSecurityProviders": {"EmailSecurityProvider": {"id": "Email Security Provider", "type": "EMAIL"}}}),
    );
    create_remotely(
        &env,
        serde_json::json!({"id": "alpha-provider", "type": "EXPANDED", "displayName": "Alpha", "caseSensitive": true}),
    );
    create_remotely(
        &env,
        serde_json::json!({"id": "Hand Made Provider", "type": "EXPANDED"}),
    );

    let exported = operator_cli(&["export", "--connection", "coveo", "-n", &env.ns.name]);
    assert!(
        !exported.contains("status"),
        "no status in exported manifests:\n{exported}"
    );
    assert!(
        !exported.contains("resourceVersion") && !exported.contains("uid"),
        "no server fields:\n{exported}"
    );
    let names: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    assert_eq!(names.len(), 3, "{exported}");
    assert!(
        exported.contains("providerId: Hand Made Provider"),
        "ids that aren't object names keep their id:\n{exported}"
    );
    assert!(
        !exported.contains("Email Security Provider\n  namespace"),
        "the built-in provider is not exported"
    );
    assert_eq!(exported.matches("adopt: true").count(), 3);
    assert_eq!(
        exported.matches("deletionPolicy: Orphan").count(),
        3,
        "safe default for adopted providers"
    );

    env.sim.reset_counters();
    let operator = Operator::start(
        &env.ns.name,
        &["--resync-interval", "2s", "--progress-interval", "500ms"],
    );
    env.ns.apply(&exported).unwrap();
    for name in &names {
        env.ns
            .wait_condition(&format!("securityprovider/{name}"), "Ready", "60s")
            .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    }
    std::thread::sleep(Duration::from_secs(5)); // a couple of resyncs
    assert_eq!(
        remote_writes(&env.sim),
        0,
        "adopting exported manifests writes nothing remotely"
    );
    assert_eq!(env.sim.provider_ids().len(), 3);
    assert_eq!(
        env.sim.provider("alpha-provider").unwrap()["caseSensitive"],
        true
    );
}

#[test]
fn observe_only_never_writes_even_when_the_spec_differs() {
    let env = setup("adopt-observe");
    create_remotely(
        &env,
        serde_json::json!({"id": "watched", "type": "EXPANDED", "displayName": "Remote name"}),
    );
    let operator = Operator::start(
        &env.ns.name,
        &["--resync-interval", "1s", "--progress-interval", "500ms"],
    );
    env.sim.reset_counters();
    env.ns
        .apply(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: watched\nspec:\n  connectionRef: coveo\n  managementPolicy: Observe\n  displayName: Desired name\n  coveo:\n    type: EXPANDED\n",
        )
        .unwrap();
    let obj = eventually(Duration::from_secs(30), "observed status", || {
        let obj = env.ns.get_json("securityprovider/watched")?;
        (condition(&obj, "Synced")?["reason"] == "ObserveOnly").then_some(obj)
    });
    let synced = condition(&obj, "Synced").unwrap();
    assert_eq!(synced["status"], "False");
    assert!(
        synced["message"].as_str().unwrap().contains("displayName"),
        "{synced}"
    );
    // Observing records no ownership: a later switch to Manage must not take it over.
    assert!(obj["status"]["remoteId"].is_null(), "{obj:#}");
    assert!(obj["status"]["ownership"].is_null(), "{obj:#}");
    assert!(
        obj["status"]["currentStatus"]["type"].is_string(),
        "status is still mirrored"
    );
    std::thread::sleep(Duration::from_secs(4));
    env.ns
        .kubectl(&["delete", "securityprovider/watched", "--timeout=60s"])
        .unwrap();
    assert_eq!(
        remote_writes(&env.sim),
        0,
        "observe-only never writes or deletes"
    );
    assert_eq!(
        env.sim.provider("watched").unwrap()["displayName"],
        "Remote name"
    );
    drop(operator);
}

#[test]
fn plan_shows_create_update_and_no_change_without_writing() {
    let env = setup("adopt-plan");
    create_remotely(
        &env,
        serde_json::json!({"id": "same", "type": "EXPANDED", "displayName": "Same"}),
    );
    create_remotely(
        &env,
        serde_json::json!({"id": "changed", "type": "EXPANDED", "displayName": "Before"}),
    );
    let manifest = |name: &str, display: &str| {
        format!(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: {name}\nspec:\n  connectionRef: coveo\n  adopt: true\n  displayName: {display}\n  coveo:\n    type: EXPANDED\n"
        )
    };
    let file = std::env::temp_dir().join(format!("plan-{}.yaml", env.ns.name));
    let yaml = [
        manifest("same", "Same"),
        manifest("changed", "After"),
        manifest("brand-new", "New"),
    ]
    .join("---\n");
    std::fs::write(
        &file,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ignored}}\n---\n{yaml}"),
    )
    .unwrap();
    env.sim.reset_counters();

    let out = operator_cli(&["plan", "-f", file.to_str().unwrap(), "-n", &env.ns.name]);
    let ns = &env.ns.name;
    assert!(out.contains(&format!("= no change {ns}/same")), "{out}");
    assert!(out.contains(&format!("~ update    {ns}/changed (remote id \"changed\")\n      displayName: \"Before\" -> \"After\"")), "{out}");
    assert!(
        out.contains(&format!(
            "+ create    {ns}/brand-new (remote id \"brand-new\")"
        )),
        "{out}"
    );
    assert!(
        out.contains("Plan: 1 to create, 1 to update, 1 unchanged, 0 not applicable."),
        "{out}"
    );
    assert_eq!(remote_writes(&env.sim), 0, "plan never writes remotely");
    assert!(
        env.ns.get_json("securityprovider/same").is_none(),
        "plan never writes to the cluster"
    );

    // Without adopt, an existing provider shows why it would not be touched.
    std::fs::write(
        &file,
        manifest("same", "Same").replace("  adopt: true\n", ""),
    )
    .unwrap();
    let out = operator_cli(&["plan", "-f", file.to_str().unwrap(), "-n", &env.ns.name]);
    assert!(out.contains(&format!("! AlreadyExists {ns}/same")), "{out}");
}

#[test]
fn a_provider_managed_in_the_cluster_is_not_exported_nor_adopted_twice() {
    let env = setup("adopt-managed");
    let operator = Operator::start(&env.ns.name, &["--resync-interval", "2s"]);
    env.ns
        .apply(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: owner\nspec:\n  connectionRef: coveo\n  providerId: shared\n  displayName: Owner's name\n  coveo:\n    type: EXPANDED\n",
        )
        .unwrap();
    let owner = eventually(Duration::from_secs(60), "owner Ready", || {
        let obj = env.ns.get_json("securityprovider/owner")?;
        (condition(&obj, "Ready")?["status"] == "True").then_some(obj)
    });
    assert_eq!(owner["status"]["ownership"]["scope"], ORG, "{owner:#}");
    let ns = &env.ns.name;

    // export leaves it out, saying why.
    let exported = operator_cli(&["export", "--connection", "coveo", "-n", ns]);
    assert!(
        exported.contains(&format!(
            "# skipped \"shared\": already managed by SecurityProvider {ns}/owner"
        )),
        "{exported}"
    );
    assert!(!exported.contains("providerId: shared"), "{exported}");

    // A hand-made adopting copy (as an export from before would be): plan says so.
    let copy = "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: copy\nspec:\n  connectionRef: coveo\n  providerId: shared\n  adopt: true\n  deletionPolicy: Orphan\n  displayName: Copy's name\n  coveo:\n    type: EXPANDED\n";
    let file = std::env::temp_dir().join(format!("managed-{ns}.yaml"));
    std::fs::write(&file, copy).unwrap();
    let plan = operator_cli(&["plan", "-f", file.to_str().unwrap(), "-n", ns]);
    assert!(
        plan.contains(&format!("! AlreadyManaged {ns}/copy:"))
            && plan.contains(&format!("{ns}/owner")),
        "{plan}"
    );

    // Applied anyway: refused, naming the owner; the provider is not written.
    let updates = env.sim.operation_count("update");
    env.ns.apply(copy).unwrap();
    let obj = eventually(Duration::from_secs(60), "copy AlreadyManaged", || {
        let obj = env.ns.get_json("securityprovider/copy")?;
        (condition(&obj, "Ready")?["reason"] == "AlreadyManaged").then_some(obj)
    });
    let message = condition(&obj, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains(&format!("{ns}/owner")), "{message}");
    assert!(obj["status"]["remoteId"].is_null(), "{obj:#}");
    // Several resyncs of both objects later: still no write, the owner's name stays.
    let reconciles = operator.metric_sum("secprov_reconciles_total", &[]);
    eventually(Duration::from_secs(60), "three more reconciles", || {
        (operator.metric_sum("secprov_reconciles_total", &[]) >= reconciles + 3.0).then_some(())
    });
    assert_eq!(
        env.sim.operation_count("update"),
        updates,
        "{}",
        operator.log_text()
    );
    assert_eq!(
        env.sim.provider("shared").unwrap()["displayName"],
        "Owner's name"
    );
    env.ns
        .kubectl(&["delete", "securityprovider/copy", "--timeout=60s"])
        .unwrap();
    assert!(env.sim.provider("shared").is_some());
}
