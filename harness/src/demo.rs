//! `make demo` (scripts/demo.sh runs the `demo` binary): a local control plane, the three
//! simulators on free loopback ports, the operator, examples/ applied with the simulators'
//! addresses filled in, 40 security identities pushed through the Coveo Push API, and the
//! reconciled status, until Ctrl-C.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use secprov_sim::jitsudo::{JitsudoSimConfig, JitsudoSimulator};
use secprov_sim::keystone::{KeystoneSimConfig, KeystoneSimulator};

use crate::cluster::{control_plane_down, control_plane_up, repo, run_kubectl};
use crate::env::runtime;
use crate::examples::{
    COVEO_ORG, DEMO_COVEO_API_KEY, DEMO_JITSUDO_API_KEY, DEMO_KEYSTONE_PASSWORD, EXAMPLE_BACKENDS,
    demo_endpoint, example,
};
use crate::http::{http_request, port_of};
use crate::operator::Operator;

/// The Coveo provider the demo pushes identities into (examples/coveo/10-securityprovider.yaml).
const PUSH_PROVIDER: &str = "push-source-provider";

/// The three simulators, kept running while they are held.
struct Simulators {
    coveo: CoveoSimulator,
    keystone: KeystoneSimulator,
    jitsudo: JitsudoSimulator,
}

impl Simulators {
    /// The base URL of the simulator of `backend` (one of [`EXAMPLE_BACKENDS`]).
    fn base_url(&self, backend: &str) -> String {
        match backend {
            "coveo" => self.coveo.base_url(),
            "keystone" => self.keystone.base_url(),
            _ => self.jitsudo.base_url(),
        }
    }
}

/// Stops the demo's control plane when dropped (an error or the end of the demo).
struct ControlPlane(PathBuf);

impl Drop for ControlPlane {
    fn drop(&mut self) {
        println!("==> stopping the operator, the simulators and the control plane");
        control_plane_down(&self.0, false);
    }
}

/// What runs during the demo; dropped in this order (the control plane last).
struct Running {
    operator: Operator,
    sims: Simulators,
    rt: tokio::runtime::Runtime,
    kubeconfig: PathBuf,
    examples: PathBuf,
    _control_plane: ControlPlane,
}

/// Runs the demo until Ctrl-C (or SIGTERM); an error is one line saying what failed.
pub fn run() -> Result<(), String> {
    let mut demo = start()?;
    show(&demo)?;
    demo.rt.block_on(until_stopped());
    demo.operator.terminate(Duration::from_secs(10));
    Ok(())
}

/// Starts the control plane, the simulators and the operator, and fills in the examples.
fn start() -> Result<Running, String> {
    let state = repo().join("target/demo");
    std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let cp_dir = repo().join("target/demo-controlplane");
    let what = format!("starting the control plane in {}", cp_dir.display());
    step(&what, control_plane_estimate());
    let started = Instant::now();
    let control_plane = ControlPlane(cp_dir);
    let kubeconfig = control_plane_up(&control_plane.0)?;
    println!("    ready after {}s", started.elapsed().as_secs());

    let rt = runtime();
    step(
        "starting the simulators on loopback ports",
        "about a second",
    );
    let sims = rt.block_on(start_simulators())?;
    let examples = fill_examples(&state, &sims)?;

    let log = state.join("operator.log");
    step(
        &format!("starting the operator (log: {})", log.display()),
        "seconds",
    );
    let args = ["--resync-interval", "30s", "--progress-interval", "2s"];
    let operator = Operator::launch(&kubeconfig, log, &args, "info");
    Ok(Running {
        operator,
        sims,
        rt,
        kubeconfig,
        examples,
        _control_plane: control_plane,
    })
}

/// Applies the examples, pushes identities, requests a refresh and prints the result.
fn show(demo: &Running) -> Result<(), String> {
    let kubectl = |args: &[&str]| run_kubectl(&demo.kubeconfig, args, None);
    let examples = demo.examples.to_string_lossy();
    step(&format!("kubectl apply -R -f {examples}"), "seconds");
    print!("{}", kubectl(&["apply", "-R", "-f", &examples])?);
    step(
        "waiting for every SecurityProvider to be Ready",
        "about 10 seconds",
    );
    let ready = [
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "securityprovider",
        "--all",
    ];
    kubectl(&ready).map_err(|e| with_log(e, &demo.operator))?;

    let what =
        "pushing 40 security identities through the Push API (as a secured Push source would)";
    step(what, "a second");
    push_identities(port_of(&demo.sims.coveo.base_url()).unwrap_or_default())?;
    request_refresh(&kubectl).map_err(|e| with_log(e, &demo.operator))?;

    let resources = kubectl(&["get", "securityproviders,providerconnections"])?;
    println!("\n{resources}");
    explore(&demo.kubeconfig, &demo.sims, demo.operator.metrics_port);
    Ok(())
}

/// Prints a step and how long it should take.
fn step(what: &str, estimate: &str) {
    println!("==> {what} ({estimate})");
}

/// How long starting the control plane takes: the first run builds kube-apiserver,
/// kube-controller-manager and etcd from source.
fn control_plane_estimate() -> &'static str {
    let cached = std::process::Command::new("bash")
        .arg(repo().join("tests/controlplane/up.sh"))
        .arg("--check-cache")
        .status()
        .is_ok_and(|s| s.success());
    if cached {
        "binaries cached: about 20 seconds"
    } else {
        "first run: builds kube-apiserver, kube-controller-manager and etcd, about 8-9 minutes on 2 cores"
    }
}

/// The three simulators with the example connections' credentials, each on the loopback port
/// `SECPROV_DEMO_<BACKEND>_PORT` names, or a free one.
async fn start_simulators() -> Result<Simulators, String> {
    let coveo = CoveoSimConfig {
        refresh_duration: Duration::from_secs(2),
        ..CoveoSimConfig::new(COVEO_ORG, DEMO_COVEO_API_KEY)
    };
    let keystone = KeystoneSimConfig {
        password: DEMO_KEYSTONE_PASSWORD.into(),
        ..Default::default()
    };
    let jitsudo = JitsudoSimConfig {
        api_key: DEMO_JITSUDO_API_KEY.into(),
        sync_duration: Duration::from_secs(2),
        ..Default::default()
    };
    let sims = Simulators {
        coveo: CoveoSimulator::start(listen("coveo")?, coveo)
            .await
            .map_err(|e| bind_error("coveo", e))?,
        keystone: KeystoneSimulator::start(listen("keystone")?, keystone)
            .await
            .map_err(|e| bind_error("keystone", e))?,
        jitsudo: JitsudoSimulator::start(listen("jitsudo")?, jitsudo)
            .await
            .map_err(|e| bind_error("jitsudo", e))?,
    };
    for backend in EXAMPLE_BACKENDS {
        println!(
            "    {backend} simulator listening on {}",
            sims.base_url(backend)
        );
    }
    Ok(sims)
}

/// The override variable of `backend`'s port.
fn port_variable(backend: &str) -> String {
    format!("SECPROV_DEMO_{}_PORT", backend.to_uppercase())
}

/// `127.0.0.1:<port>`: the override, or 0 (the system picks a free port).
fn listen(backend: &str) -> Result<std::net::SocketAddr, String> {
    let var = port_variable(backend);
    let port = match std::env::var(&var) {
        Ok(v) if !v.is_empty() => v
            .parse::<u16>()
            .map_err(|_| format!("{var}={v} is not a port"))?,
        _ => 0,
    };
    Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

fn bind_error(backend: &str, e: std::io::Error) -> String {
    format!(
        "cannot start the {backend} simulator on {}: {e} (unset {} to use a free port)",
        listen(backend).map(|a| a.to_string()).unwrap_or_default(),
        port_variable(backend)
    )
}

/// Writes examples/ to `state`/examples with each example connection's endpoint replaced by
/// its simulator's address; returns that folder.
fn fill_examples(state: &Path, sims: &Simulators) -> Result<PathBuf, String> {
    let out = state.join("examples");
    let _ = std::fs::remove_dir_all(&out);
    for backend in EXAMPLE_BACKENDS {
        let dir = repo().join("examples").join(backend);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let target = out.join(backend);
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text = example(&format!("{backend}/{name}"), &sims.base_url(backend));
            std::fs::write(target.join(&name), text).map_err(|e| format!("{name}: {e}"))?;
        }
        println!(
            "    examples/{backend}: {} -> {}",
            demo_endpoint(backend),
            sims.base_url(backend)
        );
    }
    Ok(out)
}

/// An error with the end of the operator's log.
fn with_log(error: String, operator: &Operator) -> String {
    let log = operator.log_text();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "{error}\noperator log (last 40 lines):\n{}",
        tail.join("\n")
    )
}

/// What a secured Push source does: pushes its security identities into the provider through
/// the Push API. Most users alias to the Email Security Provider; three alias to a directory
/// that does not exist in the organization (their mapping is broken, so the refresh puts them
/// IN_ERROR); four groups; one user left and is disabled.
fn push_identities(port: u16) -> Result<(), String> {
    let api = format!("/push/v1/organizations/{COVEO_ORG}/providers/{PUSH_PROVIDER}");
    for i in 1..=36 {
        let provider = if [7, 19, 28].contains(&i) {
            "Legacy LDAP"
        } else {
            "Email Security Provider"
        };
        let body = serde_json::json!({
            "identity": {"name": format!("user{i:02}"), "type": "USER"},
            "mappings": [{"name": format!("user{i:02}@example.com"), "type": "USER", "provider": provider}],
        });
        push(port, "PUT", &format!("{api}/mappings"), &body)?;
    }
    for group in ["engineering", "sales", "support", "finance"] {
        let body = serde_json::json!({
            "identity": {"name": group, "type": "GROUP"},
            "members": [{"name": "user01", "type": "USER"}, {"name": "user02", "type": "USER"}],
        });
        push(port, "PUT", &format!("{api}/permissions"), &body)?;
    }
    let disabled = serde_json::json!({"identity": {"name": "user36", "type": "USER"}});
    push(port, "DELETE", &format!("{api}/permissions"), &disabled)
}

fn push(port: u16, method: &str, path: &str, body: &serde_json::Value) -> Result<(), String> {
    let auth = format!("Bearer {DEMO_COVEO_API_KEY}");
    let (status, text) = http_request(
        port,
        method,
        path,
        &[("Authorization", &auth)],
        Some(&body.to_string()),
    )
    .map_err(|e| format!("{method} {path}: {e}"))?;
    if status >= 300 {
        return Err(format!("{method} {path}: {status} {text}"));
    }
    Ok(())
}

/// Requests a refresh through the annotation and waits until status shows it completed.
fn request_refresh(kubectl: &dyn Fn(&[&str]) -> Result<String, String>) -> Result<(), String> {
    let now = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map_err(|e| format!("date: {e}"))?;
    let annotation = format!(
        "secprov.dev/refresh-requested-at={}",
        String::from_utf8_lossy(&now.stdout).trim()
    );
    step(
        &format!(
            "requesting a refresh: kubectl annotate securityprovider {PUSH_PROVIDER} {annotation}"
        ),
        "REFRESHING for 2 seconds, then IDLE",
    );
    let resource = format!("securityprovider/{PUSH_PROVIDER}");
    kubectl(&["annotate", "--overwrite", &resource, &annotation])?;
    kubectl(&[
        "wait",
        "--for=jsonpath={.status.lastRefreshOperation.operationType}=SECURITY_PROVIDER_REFRESH",
        "--timeout=120s",
        &resource,
    ])
    .map(drop)
    .map_err(|e| format!("the refresh did not complete in time: {e}"))
}

/// The commands to explore the running demo.
fn explore(kubeconfig: &Path, sims: &Simulators, metrics_port: u16) {
    let kubeconfig = kubeconfig.display();
    println!("Explore further:");
    println!("  kubectl --kubeconfig {kubeconfig} get securityproviders -o yaml");
    println!("  kubectl --kubeconfig {kubeconfig} describe securityprovider {PUSH_PROVIDER}");
    println!("  curl -s 127.0.0.1:{metrics_port}/metrics | grep secprov_");
    println!("  curl -s {}/_sim/stats", sims.coveo.base_url());
    println!();
    println!("Running; press Ctrl-C to stop and clean up.");
}

/// Returns at Ctrl-C or SIGTERM.
async fn until_stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
