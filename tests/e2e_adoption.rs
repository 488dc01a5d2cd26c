//! Onboarding existing providers: export then apply (zero remote writes), observe-only, and
//! plan, on the real API server with the Coveo simulator.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use support::*;

const API_KEY: &str = "e2e-adoption-key-51d2";

type Env = support::Env<CoveoSimulator>;
/// How long the simulator's CREATING and REFRESHING last.
const REFRESH: Duration = Duration::from_millis(100);

fn remote_writes(sim: &CoveoSimulator) -> u64 {
    ["create", "update", "delete", "refresh"]
        .iter()
        .map(|op| sim.operation_count(op))
        .sum()
}

#[test]
fn export_then_apply_adopts_everything_with_zero_remote_writes() {
    let env = Env::coveo("adopt-export", coveo_config(API_KEY, REFRESH));
    env.create_remotely(
        serde_json::json!({"id": "zeta-provider", "type": "EXPANDED",
        "referencedBy": [{"type": "SOURCE", "id": "src-1"}],
        "cascadingSecurityProviders": {"EmailSecurityProvider": {"id": "Email Security Provider", "type": "EMAIL"}}}),
    );
    env.create_remotely(
        serde_json::json!({"id": "alpha-provider", "type": "EXPANDED", "displayName": "Alpha", "caseSensitive": true}),
    );
    env.create_remotely(serde_json::json!({"id": "Hand Made Provider", "type": "EXPANDED"}));

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
    operator.wait_reconciles(2 * names.len() as u32); // a couple of resyncs each
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
    let env = Env::coveo("adopt-observe", coveo_config(API_KEY, REFRESH));
    env.create_remotely(
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
    let obj = env.ns.wait_reason(
        "securityprovider/watched",
        "Synced",
        "ObserveOnly",
        Duration::from_secs(30),
    );
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
    operator.wait_reconciles(3); // resyncs (1 s) of the observed object
    env.ns.delete("securityprovider/watched");
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
    let env = Env::coveo("adopt-plan", coveo_config(API_KEY, REFRESH));
    env.create_remotely(
        serde_json::json!({"id": "same", "type": "EXPANDED", "displayName": "Same"}),
    );
    env.create_remotely(
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
    // --detailed-exitcode: 2, changes pending (and every row can be applied).
    let detailed = [
        "plan",
        "--detailed-exitcode",
        "-f",
        file.to_str().unwrap(),
        "-n",
        ns,
    ];
    assert_eq!(operator_cli_exit(&detailed).0, 2, "{out}");
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
    // --detailed-exitcode: 1, a row cannot be applied; a plan that cannot run: 1 too.
    assert_eq!(operator_cli_exit(&detailed).0, 1, "{out}");
    let missing = [
        "plan",
        "--detailed-exitcode",
        "-f",
        "/nonexistent.yaml",
        "-n",
        ns,
    ];
    assert_eq!(operator_cli_exit(&missing).0, 1);
}

#[test]
fn a_provider_this_operator_once_created_exports_and_applies_without_a_write() {
    let env = Env::coveo("adopt-evidence", coveo_config(API_KEY, REFRESH));
    // Created by an earlier object of this operator, then orphaned: the creation evidence
    // is still on the remote provider.
    env.create_remotely(
        serde_json::json!({"id": "orphaned", "type": "EXPANDED", "displayName": "Orphaned",
        "parameters": {"secprov.dev/create-attempt": {"value": "old-uid/a1", "sensitive": false}}}),
    );
    let ns = &env.ns.name;
    let exported = operator_cli(&["export", "--connection", "coveo", "-n", ns]);
    assert!(exported.contains("name: orphaned"), "{exported}");
    assert!(!exported.contains("create-attempt"), "{exported}");
    let file = std::env::temp_dir().join(format!("evidence-{ns}.yaml"));
    std::fs::write(&file, &exported).unwrap();
    let plan = [
        "plan",
        "--detailed-exitcode",
        "-f",
        file.to_str().unwrap(),
        "-n",
        ns,
    ];
    let (code, out) = operator_cli_exit(&plan);
    assert!(out.contains(&format!("= no change {ns}/orphaned")), "{out}");
    assert_eq!(code, 0, "{out}");

    env.sim.reset_counters();
    let operator = env.start_operator(&["--resync-interval", "5s"]);
    env.ns.apply(&exported).unwrap();
    env.ns
        .wait_condition("securityprovider/orphaned", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    // Six resyncs (30 s) later: nothing written, no drift seen.
    let reconciles = operator.metric_sum("secprov_reconciles_total", &[]);
    eventually(Duration::from_secs(60), "six more reconciles", || {
        (operator.metric_sum("secprov_reconciles_total", &[]) >= reconciles + 6.0).then_some(())
    });
    assert_eq!(remote_writes(&env.sim), 0, "{}", operator.log_text());
    let events = env.ns.events_for("orphaned");
    assert!(
        !events.iter().any(|(reason, _)| reason == "DriftCorrected"),
        "{events:?}"
    );
}

#[test]
fn a_provider_managed_in_the_cluster_is_not_exported_nor_adopted_twice() {
    let env = Env::coveo("adopt-managed", coveo_config(API_KEY, REFRESH));
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
    assert_eq!(
        owner["status"]["ownership"]["scope"], COVEO_ORG,
        "{owner:#}"
    );
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
    let obj = env.ns.wait_reason(
        "securityprovider/copy",
        "Ready",
        "AlreadyManaged",
        Duration::from_secs(60),
    );
    let message = condition_message(&obj, "Ready");
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
    env.ns.delete("securityprovider/copy");
    assert!(env.sim.provider("shared").is_some());
}
