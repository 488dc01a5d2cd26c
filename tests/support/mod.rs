//! End-to-end harness: a real control plane (tests/controlplane/up.sh, once per test run),
//! real `kubectl`, the real `secprov-operator run` binary as a subprocess, and in-process
//! simulators. Each test gets its own namespace and its own operator scoped to it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

mod env;
#[allow(unused_imports)] // not every test binary uses the builder
pub use env::*;

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubeconfig of the shared control plane: `SECPROV_E2E_KUBECONFIG` when set (make test
/// starts one), otherwise one started (or reused) under target/e2e-controlplane.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        let path = match std::env::var("SECPROV_E2E_KUBECONFIG") {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let dir = repo().join("target/e2e-controlplane");
                let out = Command::new("bash")
                    .arg(repo().join("tests/controlplane/up.sh"))
                    .arg(&dir)
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("run tests/controlplane/up.sh");
                assert!(out.status.success(), "tests/controlplane/up.sh failed");
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(
                    stdout
                        .lines()
                        .last()
                        .expect("up.sh prints the kubeconfig path")
                        .trim(),
                )
            }
        };
        let crds = repo().join("crds");
        run_kubectl(
            &path,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crds.to_str().unwrap(),
            ],
            None,
        )
        .expect("apply crds/");
        run_kubectl(
            &path,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/securityproviders.secprov.dev",
                "crd/providerconnections.secprov.dev",
            ],
            None,
        )
        .expect("CRDs established");
        path
    })
}

fn run_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out: Output = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// A namespace of its own for one test.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        kubectl(&["create", "namespace", &name]).expect("create namespace");
        TestNamespace { name }
    }

    /// kubectl with `-n <namespace>`.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        kubectl(&full)
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        run_kubectl(
            kubeconfig(),
            &["-n", &self.name, "apply", "-f", "-"],
            Some(yaml),
        )
    }

    /// The object as JSON.
    pub fn get_json(&self, resource: &str) -> Option<Value> {
        self.kubectl(&["get", resource, "-o", "json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    /// `kubectl wait --for=condition=<c>`.
    pub fn wait_condition(
        &self,
        resource: &str,
        condition: &str,
        timeout: &str,
    ) -> Result<String, String> {
        self.kubectl(&[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("--timeout={timeout}"),
            resource,
        ])
    }

    /// Events of an object, as (reason, message) pairs.
    pub fn events_for(&self, name: &str) -> Vec<(String, String)> {
        let json = self
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "json",
            ])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .unwrap_or(Value::Null);
        json["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        (
                            e["reason"].as_str().unwrap_or("").to_owned(),
                            e["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// kubectl against the shared control plane.
pub fn kubectl(args: &[&str]) -> Result<String, String> {
    run_kubectl(kubeconfig(), args, None)
}

/// A running `secprov-operator run`, killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    pub metrics_port: u16,
    args: Vec<String>,
    rust_log: String,
}

impl Operator {
    /// Starts the operator watching one namespace.
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with_log(namespace, extra, "info,secprov=debug")
    }

    /// Starts the operator with a given `RUST_LOG` filter.
    pub fn start_with_log(namespace: &str, extra: &[&str], rust_log: &str) -> Self {
        let mut args = vec!["--namespace", namespace];
        args.extend_from_slice(extra);
        Self::start_args(namespace, &args, rust_log)
    }

    /// Starts one of several operators of a namespace, logging to
    /// `target/e2e-logs/<log_name>.log`.
    pub fn start_logging_to(
        namespace: &str,
        log_name: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> Self {
        let mut args = vec!["--namespace", namespace];
        args.extend_from_slice(extra);
        Self::start_args(log_name, &args, rust_log)
    }

    /// Starts the operator watching every namespace; `extra` should hold a
    /// `--watch-label-selector` that keeps it to the test's own SecurityProviders. The log is
    /// `target/e2e-logs/{log_name}.log`.
    pub fn start_all_namespaces(log_name: &str, extra: &[&str]) -> Self {
        Self::start_args(log_name, extra, "info,secprov=debug")
    }

    fn start_args(log_name: &str, extra: &[&str], rust_log: &str) -> Self {
        let log = repo().join(format!("target/e2e-logs/{log_name}.log"));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut op = Operator {
            child: None,
            log,
            metrics_port: 0,
            args,
            rust_log: rust_log.to_owned(),
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        self.metrics_port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_secprov-operator"))
            .args(&self.args)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .env("KUBECONFIG", kubeconfig())
            .env("RUST_LOG", &self.rust_log)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start secprov-operator");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited by itself in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The operator's /metrics text. Panics with the URL and the error when /metrics cannot be
    /// read within 30 s (an operator still starting gets that long): an empty text would make
    /// every "this counter is 0" assertion pass without the operator being there.
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http_get_result(self.metrics_port, "/metrics") {
                Ok(text) => return text,
                Err(e) if Instant::now() >= deadline => {
                    panic!("operator /metrics unreachable at {url}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Sum of one metric family's samples whose line contains every `filters` string.
    pub fn metric_sum(&self, name: &str, filters: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Reconciles the operator completed so far (every result and reason).
    pub fn reconciles(&self) -> f64 {
        self.metric_sum("secprov_reconciles_total", &[])
    }

    /// Waits (up to 60 s) until the operator completes `n` more reconciles than it had when
    /// called: proof that it was active in a window in which a test then asserts that nothing
    /// happened. Returns how long the window lasted.
    pub fn wait_reconciles(&self, n: u32) -> Duration {
        self.wait_metric_advance("secprov_reconciles_total", &[], n)
    }

    /// Like [`Operator::wait_reconciles`] for any counter: waits (up to 60 s) until the sum of
    /// `name`'s samples matching `filters` (see [`Operator::metric_sum`]) grew by `n`.
    pub fn wait_metric_advance(&self, name: &str, filters: &[&str], n: u32) -> Duration {
        let (start, since) = (Instant::now(), self.metric_sum(name, filters));
        let what = format!("{name}{filters:?} to grow by {n} from {since}");
        eventually(Duration::from_secs(60), &what, || {
            (self.metric_sum(name, filters) >= since + f64::from(n)).then_some(())
        });
        start.elapsed()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.1 GET on loopback.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_result(port, path).ok()
}

/// Like [`http_get`], with the reason when there is no body (connection refused, timeout, a
/// response that is not HTTP).
pub fn http_get_result(port: u16, path: &str) -> Result<String, String> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))
}

/// Polls `check` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demo's fixed simulator endpoints used in examples/: Coveo, Keystone, JITSudo.
pub const DEMO_ENDPOINTS: [&str; 3] = [
    "http://127.0.0.1:18089",
    "http://127.0.0.1:18090",
    "http://127.0.0.1:18091",
];

/// An example manifest with the demo's simulator endpoints replaced by `endpoint` (a path
/// after the endpoint, such as Keystone's `/v3`, is kept).
pub fn example(path: &str, endpoint: &str) -> String {
    let text = std::fs::read_to_string(repo().join("examples").join(path)).expect("read example");
    DEMO_ENDPOINTS
        .iter()
        .fold(text, |text, demo| text.replace(demo, endpoint))
}

/// A condition of an object's status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

impl Operator {
    /// SIGTERM, then the exit status when the process ended by itself within `timeout`
    /// (None when it had to be killed).
    pub fn terminate_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Operator {
    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The exit status once the process has ended by itself, None while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// The path of the Go tool `name` pinned under scripts/tools/ (`env_var` when it names one,
/// else what scripts/tools/build.sh builds from the Go module proxy, cached after the first
/// build). A machine without it fails here instead of skipping the checks.
pub fn go_tool(name: &str, env_var: &str) -> String {
    if let Ok(path) = std::env::var(env_var)
        && !path.is_empty()
    {
        return path;
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/tools/build.sh"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/tools/build.sh {name}: {e}"));
    assert!(out.status.success(), "scripts/tools/build.sh {name} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or_default().trim().to_owned()
}
