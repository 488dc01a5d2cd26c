//! The Helm chart runs for real: `helm install` of deploy/helm/secprov-operator on the local
//! API server, then the operator Deployment's Pod spec, as the release rendered it, run with the
//! image from `make image` under runc, the way a kubelet would run it: the image's entrypoint
//! with the container's args and env (the downward API resolved), its `securityContext` (user,
//! read-only root, capabilities, no new privileges), its resources as cgroup limits, a
//! ServiceAccount token from the TokenRequest API with `ca.crt` and `namespace` where kubelet
//! mounts them, and its probes polled at their periods. It reconciles a provider through the
//! chart's RBAC, goes ready, and exits cleanly on SIGTERM within the chart's grace period; a
//! `helm upgrade` to a second image with two replicas hands the leader Lease over without a
//! duplicate remote create, `helm rollback` goes back, and `helm uninstall` with the README's
//! uninstall steps removes the release.
//!
//! Network: each Pod gets a network namespace of its own holding only loopback (as each Pod
//! has its own address, two replicas both bind the chart's metrics port). The API server's and
//! the simulator's loopback ports are forwarded into it, so `KUBERNETES_SERVICE_HOST=127.0.0.1`
//! and the simulator's `http://127.0.0.1:PORT` mean the same there as on the host; no other
//! address is used.
//!
//! Needs root and `runc` (Debian's `runc` package; `.ci/run` installs it). Without runc the
//! test says so and passes, unless `SECPROV_REQUIRE_RUNC=1` (set by `.ci/run`), where it fails.
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use secprov_sim::coveo::CoveoSimConfig;
use serde::Deserialize;
use serde_json::{Value, json};
use support::*;

const CHART: &str = "deploy/helm/secprov-operator";
/// The tag of the second image (same binary, other version label) that `helm upgrade` moves to.
const NEXT_TAG: &str = "0.1.0-next";

/// runc's path, or None when it is missing and not required.
fn runc() -> Option<String> {
    let found = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("runc".into());
    }
    let required = std::env::var("SECPROV_REQUIRE_RUNC").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "runc not found and SECPROV_REQUIRE_RUNC=1: apt-get install runc"
    );
    eprintln!(
        "SKIPPED: runc not found (apt-get install runc); the chart's Pod spec was not run \
         under an OCI runtime"
    );
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Images: what the "kubelet" pulls, by the reference a Pod spec names.

/// Unpacked OCI layouts by image reference (`name:tag`).
struct Registry {
    layouts: BTreeMap<String, PathBuf>,
}

impl Registry {
    /// The archive of `make image`, and a second image of the same root filesystem tagged
    /// [`NEXT_TAG`] with that version label (scripts/oci_image.py, as `make image` writes it).
    fn new(dir: &Path) -> Self {
        let archive = image_archive();
        let mut layouts = BTreeMap::new();
        let first = unpack_layout(&archive, &dir.join("layout-0"));
        layouts.insert(image_name(&first), first);
        let rootfs = archive.parent().unwrap().join("rootfs");
        assert!(
            rootfs.join("usr/local/bin/secprov-operator").exists(),
            "{} missing: make image writes it beside the archive",
            rootfs.display()
        );
        let next_archive = dir.join("next.oci.tar");
        let next_ref = format!("ghcr.io/secprov/secprov-operator:{NEXT_TAG}");
        run(Command::new("python3")
            .arg(repo().join("scripts/oci_image.py"))
            .arg("--rootfs")
            .arg(&rootfs)
            .arg("--out")
            .arg(&next_archive)
            .args(["--ref", &next_ref, "--epoch", "0", "--dockerfile"])
            .arg(repo().join("Dockerfile"))
            .args(["--build-arg", &format!("VERSION={NEXT_TAG}")]));
        let next = unpack_layout(&next_archive, &dir.join("layout-1"));
        assert_eq!(image_name(&next), next_ref);
        layouts.insert(next_ref, next);
        Registry { layouts }
    }

    fn layout(&self, image: &str) -> &Path {
        self.layouts
            .get(image)
            .unwrap_or_else(|| panic!("no image {image}: have {:?}", self.layouts.keys()))
    }
}

fn unpack_layout(archive: &Path, layout: &Path) -> PathBuf {
    std::fs::create_dir_all(layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(layout));
    layout.to_path_buf()
}

fn index_entry(layout: &Path) -> Value {
    read_json(&layout.join("index.json"))["manifests"][0].clone()
}

fn image_name(layout: &Path) -> String {
    index_entry(layout)["annotations"]["io.containerd.image.name"]
        .as_str()
        .expect("image name annotation")
        .to_owned()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The image's config (`config` of the OCI image config: Entrypoint, Cmd, Env, User).
fn image_config(layout: &Path) -> Value {
    let manifest = read_json(&blob(
        layout,
        index_entry(layout)["digest"].as_str().unwrap(),
    ));
    read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))["config"]
        .clone()
}

// ---------------------------------------------------------------------------------------------
// The Pod's network: a namespace with only loopback, and the host ports forwarded into it.

/// A network namespace (`ip netns`) with only `lo`, up; deleted on drop.
struct PodNetwork {
    name: String,
}

impl PodNetwork {
    fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        run(Command::new("ip").args(["netns", "add", name]));
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        let links = run(Command::new("ip").args(["-n", name, "-o", "link"]));
        assert_eq!(links.lines().count(), 1, "only loopback: {links}");
        PodNetwork { name: name.into() }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that entered this network namespace (sockets it creates stay
    /// there).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&path);
                f()
            })
            .join()
            .expect("thread in the Pod's network namespace")
        })
    }

    /// Makes `127.0.0.1:port` inside the namespace reach `127.0.0.1:port` of the host: the
    /// listener is created inside, the connections to the host from a host thread.
    fn forward(&self, port: u16) {
        let listener = self
            .enter(|| TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("listen on {port} in {}: {e}", self.name));
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                std::thread::spawn(move || {
                    if let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)) {
                        pipe(inbound, outbound);
                    }
                });
            }
        });
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

fn enter_netns(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    // SAFETY: setns on a valid namespace file descriptor changes only this thread's network
    // namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path:?}: {}", std::io::Error::last_os_error());
}

/// Copies both directions until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a_read, mut b_write) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let one = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_read, &mut b_write);
        let _ = b_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut b_read, mut a_write) = (b, a);
    let _ = std::io::copy(&mut b_read, &mut a_write);
    let _ = a_write.shutdown(std::net::Shutdown::Write);
    let _ = one.join();
}

/// An HTTP GET from inside the namespace, as kubelet's httpGet probe: success is a status in
/// 200..400 within `timeout`.
fn probe_http(port: u16, path: &str, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}

// ---------------------------------------------------------------------------------------------
// The Pod spec as an OCI runtime config (what kubelet and a CRI runtime do for one container).

/// What a kubelet knows beside the Pod spec.
struct PodContext<'a> {
    name: &'a str,
    namespace: &'a str,
    api_port: u16,
    netns: PathBuf,
    service_account_dir: PathBuf,
    cgroup: String,
}

/// containerd's default capability set, which `capabilities.drop`/`add` change.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A quantity in milli-units (`500m`, `1`) or bytes (`256Mi`, `1G`).
fn quantity(q: &str, milli: bool) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    let factor: u64 = match (suffix, milli) {
        ("m", true) => return n,
        ("", true) => 1000,
        ("", false) => 1,
        ("Ki", false) => 1 << 10,
        ("Mi", false) => 1 << 20,
        ("Gi", false) => 1 << 30,
        ("k", false) => 1_000,
        ("M", false) => 1_000_000,
        ("G", false) => 1_000_000_000,
        _ => panic!("unsupported quantity {q}"),
    };
    n * factor
}

/// The container's environment: the image's, the API server's service variables kubelet
/// always sets (loopback here), then the container's `env` with the downward API resolved.
fn container_env(image: &Value, container: &Value, ctx: &PodContext) -> Vec<String> {
    let mut env: Vec<String> = image["Env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    env.push(format!("HOSTNAME={}", ctx.name));
    env.push("KUBERNETES_SERVICE_HOST=127.0.0.1".into());
    env.push(format!("KUBERNETES_SERVICE_PORT={}", ctx.api_port));
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name");
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => ctx.name.to_owned(),
                Some("metadata.namespace") => ctx.namespace.to_owned(),
                other => panic!("env {name}: unsupported source {other:?} in {var}"),
            }
        };
        env.push(format!("{name}={value}"));
    }
    env
}

/// The OCI runtime config of the Pod's only container: `base` is umoci's conversion of the
/// image config (mounts, masked paths), the rest comes from the Pod spec.
fn runtime_config(base: &Value, image: &Value, pod: &Value, ctx: &PodContext) -> Value {
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container: {pod}");
    let c = &containers[0];
    let (pod_sc, sc) = (&pod["securityContext"], &c["securityContext"]);
    let field = |key: &str| {
        if sc[key].is_null() {
            pod_sc[key].clone()
        } else {
            sc[key].clone()
        }
    };
    let uid = field("runAsUser").as_u64().expect("runAsUser");
    let gid = field("runAsGroup").as_u64().unwrap_or(uid);
    if field("runAsNonRoot") == true {
        assert_ne!(uid, 0, "runAsNonRoot with uid 0 is refused by kubelet");
    }
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    for drop in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        let drop = drop.as_str().unwrap();
        caps.retain(|c| drop != "ALL" && *c != format!("CAP_{drop}"));
    }
    for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        caps.push(format!("CAP_{}", add.as_str().unwrap()));
    }
    let mut args: Vec<Value> = match c["command"].as_array() {
        Some(command) => command.clone(),
        None => image["Entrypoint"].as_array().cloned().unwrap_or_default(),
    };
    match c["args"].as_array() {
        Some(a) => args.extend(a.iter().cloned()),
        None if c["command"].is_null() => {
            args.extend(image["Cmd"].as_array().cloned().unwrap_or_default())
        }
        None => {}
    }
    let limits = &c["resources"]["limits"];
    let cpu_limit = limits["cpu"].as_str().map(|q| quantity(q, true));
    let cpu_request = c["resources"]["requests"]["cpu"]
        .as_str()
        .map_or(2, |q| (quantity(q, true) * 1024 / 1000).max(2));
    let mut config = base.clone();
    config["process"] = json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": container_env(image, c, ctx),
        "cwd": image["WorkingDir"].as_str().filter(|d| !d.is_empty()).unwrap_or("/"),
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": [],
        },
        "noNewPrivileges": sc["allowPrivilegeEscalation"] == false,
    });
    config["root"] = json!({"path": "rootfs", "readonly": sc["readOnlyRootFilesystem"] == true});
    config["hostname"] = json!(ctx.name);
    config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/var/run/secrets/kubernetes.io/serviceaccount",
        "type": "bind",
        "source": ctx.service_account_dir,
        "options": ["rbind", "ro"],
    }));
    let linux = &mut config["linux"];
    for ns in linux["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            *ns = json!({"type": "network", "path": ctx.netns});
        }
    }
    linux["cgroupsPath"] = json!(ctx.cgroup);
    linux["resources"]["cpu"] = json!({"shares": cpu_request, "period": 100_000});
    if let Some(milli) = cpu_limit {
        linux["resources"]["cpu"]["quota"] = json!(milli * 100);
    }
    if let Some(memory) = limits["memory"].as_str() {
        linux["resources"]["memory"] = json!({"limit": quantity(memory, false)});
    }
    config
}

// ---------------------------------------------------------------------------------------------
// A Pod run under runc, with kubelet's probes.

/// What the probes have seen.
#[derive(Default)]
struct ProbeState {
    ready: bool,
    readiness_successes: u32,
    liveness_failures: u32,
    /// Liveness failed `failureThreshold` times in a row: kubelet would restart the container.
    restart_needed: bool,
}

/// One probe of the Pod spec.
struct Probe {
    path: String,
    port: u16,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
    initial_delay: Duration,
}

impl Probe {
    fn from_spec(probe: &Value, container: &Value) -> Option<Self> {
        let get = probe.get("httpGet")?;
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64().unwrap() as u16,
            Value::String(name) => container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == *name)?["containerPort"]
                .as_u64()? as u16,
            other => panic!("probe port {other}"),
        };
        let secs =
            |key: &str, default: u64| Duration::from_secs(probe[key].as_u64().unwrap_or(default));
        Some(Probe {
            path: get["path"].as_str().unwrap_or("/").to_owned(),
            port,
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            failure_threshold: probe["failureThreshold"].as_u64().unwrap_or(3) as u32,
            success_threshold: probe["successThreshold"].as_u64().unwrap_or(1) as u32,
            initial_delay: secs("initialDelaySeconds", 0),
        })
    }
}

struct RuncPod {
    name: String,
    image: String,
    bundle: PathBuf,
    process: Process,
    log: PathBuf,
    probes: Arc<Mutex<ProbeState>>,
    stop: Arc<AtomicBool>,
    grace: Duration,
    network: Arc<PodNetwork>,
}

impl RuncPod {
    /// Runs `pod` (a Pod spec as the chart rendered it) as Pod `name` in `namespace`.
    fn start(
        registry: &Registry,
        dir: &Path,
        name: &str,
        namespace: &str,
        pod: &Value,
        forwarded: &[u16],
    ) -> Self {
        assert_eq!(pod["enableServiceLinks"], false, "service links stay out");
        assert!(pod["hostNetwork"].is_null(), "the Pod has its own network");
        let container = &pod["containers"][0];
        let image = container["image"].as_str().expect("image").to_owned();
        let layout = registry.layout(&image);
        let bundle = dir.join(name);
        let tag = index_entry(layout)["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap()
            .to_owned();
        // umoci checks every digest while it unpacks, and writes the layer's modes.
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle));
        let network = Arc::new(PodNetwork::new(&format!("secprov-{name}")));
        let api_port = api_server_port();
        for port in std::iter::once(api_port).chain(forwarded.iter().copied()) {
            network.forward(port);
        }
        let ctx = PodContext {
            name,
            namespace,
            api_port,
            netns: network.path(),
            service_account_dir: service_account_volume(
                &dir.join(format!("{name}-sa")),
                pod["serviceAccountName"]
                    .as_str()
                    .expect("serviceAccountName"),
                namespace,
            ),
            cgroup: format!("/secprov-chart/{name}"),
        };
        let base = read_json(&bundle.join("config.json"));
        let config = runtime_config(&base, &image_config(layout), pod, &ctx);
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        let log = repo().join(format!("target/e2e-logs/chart-{name}.log"));
        let _ = std::fs::remove_file(&log);
        let process = Process::spawn(
            Command::new("runc")
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(name),
            &log,
        )
        .expect("runc run");
        let grace =
            Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
        let mut pod = RuncPod {
            name: name.into(),
            image,
            bundle,
            process,
            log,
            probes: Arc::default(),
            stop: Arc::default(),
            grace,
            network,
        };
        pod.start_probes(container);
        pod
    }

    /// Polls the container's liveness and readiness probes at their periods from inside its
    /// network namespace, as kubelet does.
    fn start_probes(&mut self, container: &Value) {
        let liveness = Probe::from_spec(&container["livenessProbe"], container).expect("liveness");
        let readiness =
            Probe::from_spec(&container["readinessProbe"], container).expect("readiness");
        let (state, stop, network) = (self.probes.clone(), self.stop.clone(), self.network.clone());
        let path = network.path();
        std::thread::spawn(move || {
            enter_netns(&path);
            let start = Instant::now();
            let (mut next_live, mut next_ready) = (
                start + liveness.initial_delay,
                start + readiness.initial_delay,
            );
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next_ready {
                    let ok = probe_http(readiness.port, &readiness.path, readiness.timeout);
                    let mut s = state.lock().unwrap();
                    if ok {
                        s.readiness_successes += 1;
                        if s.readiness_successes >= readiness.success_threshold {
                            s.ready = true;
                        }
                    } else {
                        s.readiness_successes = 0;
                        s.ready = false;
                    }
                    next_ready = now + readiness.period;
                }
                if now >= next_live {
                    let ok = probe_http(liveness.port, &liveness.path, liveness.timeout);
                    let mut s = state.lock().unwrap();
                    s.liveness_failures = if ok { 0 } else { s.liveness_failures + 1 };
                    if s.liveness_failures >= liveness.failure_threshold {
                        s.restart_needed = true;
                    }
                    next_live = now + liveness.period;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(network);
        });
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the readiness probe passed (at most `timeout`); fails when liveness would
    /// have restarted the container or it exited.
    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.probes.lock().unwrap();
                assert!(
                    !s.restart_needed,
                    "{}: liveness failed:\n{}",
                    self.name,
                    self.log_text()
                );
                if s.ready {
                    return;
                }
            }
            if let Some(status) = self.process.exit_status() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {timeout:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Liveness never failed enough for a restart.
    fn assert_alive(&self) {
        let s = self.probes.lock().unwrap();
        assert!(
            !s.restart_needed,
            "{}: liveness failed:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// The container's init process on the host (from `runc state`).
    fn host_pid(&self) -> u32 {
        let state: Value =
            serde_json::from_str(&run(Command::new("runc").args(["state", &self.name]))).unwrap();
        state["pid"].as_u64().expect("pid") as u32
    }

    /// SIGTERM (runc passes it to the container), then SIGKILL after the grace period, as
    /// kubelet stops a container. The exit status when it ended by itself.
    fn terminate(&mut self) -> Option<ExitStatus> {
        self.stop.store(true, Ordering::Relaxed);
        let status = self.process.terminate(self.grace);
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.name])
            .output();
        // Everything the operator did went through the RBAC it was installed with.
        let log = self.log_text();
        let forbidden: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .collect();
        assert!(
            forbidden.is_empty(),
            "{}: a permission was missing:\n{forbidden:#?}",
            self.name
        );
        status
    }
}

impl Drop for RuncPod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.process.kill();
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

fn admin_kubeconfig() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(kubeconfig()).unwrap()).unwrap()
}

fn api_server_port() -> u16 {
    let config = admin_kubeconfig();
    let server = config["clusters"][0]["cluster"]["server"].as_str().unwrap();
    assert!(
        server.starts_with("https://127.0.0.1:"),
        "the API server must be on loopback: {server}"
    );
    secprov_harness::http::port_of(server).expect("API server port")
}

/// The projected volume kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: a
/// token of `account` from the TokenRequest API, the cluster CA and the namespace, readable by
/// any uid (defaultMode 0644).
fn service_account_volume(dir: &Path, account: &str, namespace: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let token = kubectl(&[
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration=3607s",
    ])
    .expect("TokenRequest");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            admin_kubeconfig()["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .expect("certificate-authority-data"),
        )
        .expect("base64 CA");
    for (file, content) in [
        ("token", token.trim().as_bytes()),
        ("ca.crt", &ca[..]),
        ("namespace", namespace.as_bytes()),
    ] {
        std::fs::write(dir.join(file), content).unwrap();
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Helm.

fn helm(args: &[&str]) -> String {
    helm_result(args).unwrap_or_else(|e| panic!("{e}"))
}

/// helm's stdout, or its stderr when it fails.
fn helm_result(args: &[&str]) -> Result<String, String> {
    let helm = go_tool("helm", "SECPROV_HELM");
    let out = Command::new(helm)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Namespace `name` made from deploy/namespace.yaml (its Pod Security labels).
fn labelled_namespace(name: &str) -> TestNamespace {
    let manifest = std::fs::read_to_string(repo().join("deploy/namespace.yaml"))
        .unwrap()
        .replace("name: secprov-system", &format!("name: {name}"));
    assert!(manifest.contains(name));
    run_kubectl(kubeconfig(), &["apply", "-f", "-"], Some(&manifest)).expect("namespace");
    TestNamespace { name: name.into() }
}

/// The API server (PodSecurity admission `restricted` on the namespace) admits a Pod with this
/// spec, as it would the Deployment's Pods (a server-side dry run: no kubelet here).
fn admitted_as_a_pod(namespace: &str, spec: &Value) {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "admission-check", "namespace": namespace},
        "spec": spec,
    });
    let out = run_kubectl(
        kubeconfig(),
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&pod.to_string()),
    )
    .unwrap_or_else(|e| panic!("PodSecurity refused the Pod: {e}"));
    assert!(!out.contains("Warning"), "{out}");
}

/// The Deployment the release installed (`helm get manifest`): its replicas and Pod spec.
fn installed_deployment(release: &str, namespace: &str) -> (u64, Value) {
    let manifest = helm(&["get", "manifest", release, "-n", namespace]);
    let deployment = serde_yaml::Deserializer::from_str(&manifest)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment in the release");
    let deployment: Value = serde_json::to_value(deployment).unwrap();
    (
        deployment["spec"]["replicas"].as_u64().unwrap_or(1),
        deployment["spec"]["template"]["spec"].clone(),
    )
}

fn lease_holder(namespace: &str) -> Option<String> {
    kubectl(&[
        "get",
        "lease",
        "secprov-operator",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .ok()
    .filter(|h| !h.is_empty())
}

/// The example provider under another name.
fn provider(name: &str, endpoint: &str) -> String {
    example("coveo/10-securityprovider.yaml", endpoint).replace("push-source-provider", name)
}

fn wait_provider_ready(ns: &TestNamespace, name: &str, pods: &[&RuncPod]) {
    if let Err(e) = ns.wait_condition(&format!("securityprovider/{name}"), "Ready", "90s") {
        let logs: Vec<String> = pods
            .iter()
            .map(|p| format!("--- {} ({})\n{}", p.name, p.image, p.log_text()))
            .collect();
        panic!("{e}\n{}", logs.join("\n"));
    }
}

/// Facts about the running container seen from the host: its user, capabilities, no new
/// privileges, read-only root and cgroup limits are the Pod spec's.
fn assert_confined_as_the_pod_spec_says(pod: &RuncPod, spec: &Value) {
    let pid = pod.host_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    let c = &spec["containers"][0];
    let uid = spec["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap()
        .to_string();
    assert_eq!(line("Uid:"), [uid.as_str(); 4], "{status}");
    assert_eq!(line("CapEff:"), ["0000000000000000"]);
    assert_eq!(line("CapBnd:"), ["0000000000000000"]);
    assert_eq!(line("NoNewPrivs:"), ["1"]);
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("root mount");
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{root}"
    );
    let sa = mounts
        .lines()
        .find(|l| l.contains(" /var/run/secrets/kubernetes.io/serviceaccount "))
        .expect("service account mount");
    assert!(
        sa.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{sa}"
    );
    let cgroup = format!("secprov-chart/{}", pod.name);
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}/{cgroup}/{file}"))
            .unwrap_or_else(|e| panic!("{controller}/{cgroup}/{file}: {e}"))
            .trim()
            .to_owned()
    };
    let limits = &c["resources"]["limits"];
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        quantity(limits["memory"].as_str().unwrap(), false).to_string()
    );
    assert_eq!(
        read("cpu", "cpu.cfs_quota_us"),
        (quantity(limits["cpu"].as_str().unwrap(), true) * 100).to_string()
    );
    assert!(
        read("pids", "cgroup.procs")
            .lines()
            .any(|p| p == pid.to_string()),
        "the container runs in its cgroup"
    );
}

// ---------------------------------------------------------------------------------------------

/// Runs the Pod spec as the first Pod (`pods_dir`, name, namespace), checks it is confined as
/// the spec says and goes ready, and has it reconcile the provider `provider_name`.
fn first_pod_reconciles(
    registry: &Registry,
    (pods_dir, name, namespace): (&Path, &str, &str),
    spec: &Value,
    env: &Env<secprov_sim::coveo::CoveoSimulator>,
    provider_name: &str,
) -> RuncPod {
    let sim_port = secprov_harness::http::port_of(&env.sim.base_url()).unwrap();
    let mut pod = RuncPod::start(registry, pods_dir, name, namespace, spec, &[sim_port]);
    pod.wait_ready(Duration::from_secs(60));
    assert_confined_as_the_pod_spec_says(&pod, spec);
    env.ns
        .apply(&provider(provider_name, &env.sim.base_url()))
        .unwrap();
    wait_provider_ready(&env.ns, provider_name, &[&pod]);
    pod
}

#[test]
fn quantities_are_read_as_kubernetes_writes_them() {
    assert_eq!(quantity("500m", true), 500);
    assert_eq!(quantity("2", true), 2000);
    assert_eq!(quantity("256Mi", false), 256 << 20);
    assert_eq!(quantity("1G", false), 1_000_000_000);
}

#[test]
fn helm_install_runs_the_image_under_runc_upgrades_rolls_back_and_uninstalls() {
    if runc().is_none() {
        return;
    }
    assert!(is_root(), "runc and network namespaces need root");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(dir.path());
    let env = Env::coveo("chart-teams", CoveoSimConfig::new(COVEO_ORG, "chart-key"));
    let sim_port = secprov_harness::http::port_of(&env.sim.base_url()).unwrap();
    // The release namespace as deploy/namespace.yaml makes it (Helm cannot create it); the chart
    // refuses one that does not enforce Pod Security `restricted`, such as the teams' one.
    let release_ns = labelled_namespace(&format!("chart-{}", std::process::id()));
    let (release, namespace) = (release_ns.name.clone(), release_ns.name.clone());
    let chart = repo().join(CHART).to_string_lossy().into_owned();
    let refused = helm_result(&[
        "install",
        &release,
        &chart,
        "-n",
        &env.ns.name,
        "--dry-run=server",
    ])
    .expect_err("an install into a namespace without Pod Security restricted");
    assert!(
        refused.contains("does not enforce Pod Security")
            && refused.contains(&format!("kubectl label namespace {}", env.ns.name)),
        "{refused}"
    );
    // The shared control plane holds other tests' providers: the operator watches only the
    // test's namespace (the chart's extraArgs) and may read Secrets there (credentialNamespaces).
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        json!({
            "replicas": 1,
            "credentialNamespaces": [env.ns.name],
            "extraArgs": [format!("--namespace={}", env.ns.name)],
        })
        .to_string(),
    )
    .unwrap();
    let values = values.to_string_lossy().into_owned();
    helm(&["install", &release, &chart, "-n", &namespace, "-f", &values]);
    let (replicas, spec) = installed_deployment(&release, &namespace);
    assert_eq!(replicas, 1);
    admitted_as_a_pod(&namespace, &spec);

    // Revision 1: one replica of the first image.
    let pods_dir = dir.path().join("pods");
    let mut first = first_pod_reconciles(
        &registry,
        (&pods_dir, &format!("{release}-a"), &namespace),
        &spec,
        &env,
        "chart-one",
    );
    assert!(env.sim.provider("chart-one").is_some());
    assert_eq!(
        lease_holder(&namespace).as_deref(),
        Some(first.name.as_str())
    );
    first.assert_alive();
    eprintln!(
        "installed, reconciled and ready after {:?}",
        started.elapsed()
    );

    // Revision 2: the second image, two replicas. A rolling update starts the new Pods, then
    // stops the old one; a provider created during the hand-over is reconciled once.
    helm(&[
        "upgrade",
        &release,
        &chart,
        "-n",
        &namespace,
        "--reuse-values",
        "--set",
        &format!("image.tag={NEXT_TAG}"),
        "--set",
        "replicas=2",
    ]);
    let (replicas, next_spec) = installed_deployment(&release, &namespace);
    assert_eq!(replicas, 2);
    assert!(
        next_spec["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with(NEXT_TAG)
    );
    let mut next: Vec<RuncPod> = ["b", "c"]
        .iter()
        .map(|s| {
            RuncPod::start(
                &registry,
                &pods_dir,
                &format!("{release}-{s}"),
                &namespace,
                &next_spec,
                &[sim_port],
            )
        })
        .collect();
    for pod in &mut next {
        pod.wait_ready(Duration::from_secs(60));
    }
    assert_eq!(
        lease_holder(&namespace).as_deref(),
        Some(first.name.as_str()),
        "the old leader leads until it stops"
    );
    let status = first.terminate().expect("exits within the grace period");
    assert!(status.success(), "{status}:\n{}", first.log_text());
    assert!(
        first.log_text().contains("shutdown requested"),
        "{}",
        first.log_text()
    );
    env.ns
        .apply(&provider("chart-two", &env.sim.base_url()))
        .unwrap();
    wait_provider_ready(&env.ns, "chart-two", &[&next[0], &next[1]]);
    let holder = lease_holder(&namespace).expect("a leader");
    assert!(
        next.iter().any(|p| p.name == holder),
        "{holder} is a new Pod"
    );
    assert_eq!(
        env.sim.committed_creates(),
        2,
        "one remote create per provider"
    );
    assert_eq!(env.sim.create_conflicts(), 0);
    eprintln!("upgraded with hand-over after {:?}", started.elapsed());

    // Revision 3: rollback to revision 1 (first image, one replica).
    helm(&["rollback", &release, "1", "-n", &namespace]);
    let (replicas, back_spec) = installed_deployment(&release, &namespace);
    assert_eq!((replicas, &back_spec), (1, &spec), "revision 1's Pod spec");
    let mut back = RuncPod::start(
        &registry,
        &pods_dir,
        &format!("{release}-d"),
        &namespace,
        &back_spec,
        &[sim_port],
    );
    back.wait_ready(Duration::from_secs(60));
    for pod in &mut next {
        let status = pod.terminate().expect("exits within the grace period");
        assert!(status.success(), "{status}:\n{}", pod.log_text());
    }
    env.ns
        .apply(&provider("chart-three", &env.sim.base_url()))
        .unwrap();
    wait_provider_ready(&env.ns, "chart-three", &[&back]);
    assert_eq!(
        lease_holder(&namespace).as_deref(),
        Some(back.name.as_str())
    );
    assert_eq!(
        env.sim.committed_creates(),
        3,
        "one remote create per provider"
    );
    for name in ["chart-one", "chart-two", "chart-three"] {
        let obj = env
            .ns
            .get_json(&format!("securityprovider/{name}"))
            .unwrap();
        assert_eq!(
            condition(&obj, "Ready").unwrap()["status"],
            "True",
            "{name}: {obj}"
        );
    }
    back.assert_alive();

    // Uninstall as the README says: providers first while the operator runs, then the
    // release, then the CRDs (a server-side dry run here: the control plane is shared) and the
    // fingerprint key.
    env.ns
        .kubectl(&[
            "delete",
            "securityproviders",
            "--all",
            "--wait",
            "--timeout=60s",
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", back.log_text()));
    assert!(
        env.sim.provider_ids().is_empty(),
        "{:?}",
        env.sim.provider_ids()
    );
    let status = back.terminate().expect("exits within the grace period");
    assert!(status.success(), "{status}:\n{}", back.log_text());
    helm(&["uninstall", &release, "-n", &namespace]);
    for object in [
        format!("clusterrole/{release}-secprov-operator"),
        format!("clusterrolebinding/{release}-secprov-operator"),
    ] {
        assert!(kubectl(&["get", &object]).is_err(), "{object} left behind");
    }
    assert!(
        release_ns
            .kubectl(&["get", "serviceaccount", "secprov-operator"])
            .is_err()
    );
    let dry_run = kubectl(&[
        "delete",
        "crd",
        "securityproviders.secprov.dev",
        "providerconnections.secprov.dev",
        "--dry-run=server",
    ])
    .expect("the documented CRD removal");
    assert!(dry_run.contains("deleted (server dry run)"), "{dry_run}");
    release_ns
        .kubectl(&["delete", "secret", "secprov-operator-fingerprint-key"])
        .expect("the fingerprint key the operator created, kept by helm uninstall");
    eprintln!("chart scenario took {:?}", started.elapsed());
}

/// The Deployment of `kubectl apply -k deploy/` runs the same way: one replica in
/// secprov-system, ready, reconciling through deploy/'s RBAC, stopping cleanly. On the shared
/// control plane its watch is narrowed to the test's namespace and its Lease named after it,
/// the two flags appended to deploy/'s args (a kustomize patch would do the same).
#[test]
fn kustomize_deployment_runs_the_image_under_runc() {
    if runc().is_none() {
        return;
    }
    assert!(is_root(), "runc and network namespaces need root");
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(dir.path());
    let deploy = repo().join("deploy");
    let deploy = deploy.to_str().unwrap();
    kubectl(&["apply", "-k", deploy]).expect("kubectl apply -k deploy/");
    let rendered = kubectl(&["kustomize", deploy]).expect("kubectl kustomize deploy/");
    let deployment = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment in deploy/");
    let deployment: Value = serde_json::to_value(deployment).unwrap();
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut spec = deployment["spec"]["template"]["spec"].clone();
    admitted_as_a_pod(&namespace, &spec);

    let env = Env::coveo(
        "kustomize-teams",
        CoveoSimConfig::new(COVEO_ORG, "kustomize-key"),
    );
    env.ns
        .kubectl(&[
            "create",
            "rolebinding",
            "secprov-credential-reader",
            "--clusterrole=secprov-credential-reader",
            &format!("--serviceaccount={namespace}:secprov-operator"),
        ])
        .unwrap();
    let args = spec["containers"][0]["args"].as_array_mut().expect("args");
    args.push(json!(format!("--namespace={}", env.ns.name)));
    args.push(json!(format!(
        "--leader-election-id=secprov-operator-{}",
        env.ns.name
    )));
    let name = format!("kustomize-{}", std::process::id());
    let mut pod = first_pod_reconciles(
        &registry,
        (&dir.path().join("pods"), &name, &namespace),
        &spec,
        &env,
        "kustomize-one",
    );
    assert_eq!(env.sim.committed_creates(), 1);
    pod.assert_alive();
    let status = pod.terminate().expect("exits within the grace period");
    assert!(status.success(), "{status}:\n{}", pod.log_text());
    assert!(
        pod.log_text().contains("released leadership lease"),
        "{}",
        pod.log_text()
    );
}
