//! The real `secprov-operator run` binary as a subprocess, and its /metrics.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::cluster::{kubeconfig, repo};
use crate::http::{free_port, http_get_result};
use crate::process::Process;
use crate::wait::eventually;

/// The operator binary: `SECPROV_OPERATOR_BIN` when set, otherwise the `secprov-operator`
/// beside the running executable in cargo's target directory (a test binary in
/// target/debug/deps finds target/debug/secprov-operator, the demo in target/release finds
/// target/release/secprov-operator).
pub fn operator_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SECPROV_OPERATOR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("secprov-operator")
}

/// A running `secprov-operator run`, killed on drop.
pub struct Operator {
    process: Process,
    pub log: PathBuf,
    pub metrics_port: u16,
    args: Vec<String>,
    rust_log: String,
    kubeconfig: PathBuf,
}

impl Operator {
    /// Starts the operator watching one namespace.
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with_log(namespace, extra, "info,secprov=debug")
    }

    /// Starts the operator with a given `RUST_LOG` filter.
    pub fn start_with_log(namespace: &str, extra: &[&str], rust_log: &str) -> Self {
        Self::start_logging_to(namespace, namespace, extra, rust_log)
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
        Self::launch(kubeconfig(), log, extra, rust_log)
    }

    /// Starts `secprov-operator run <args>` against the control plane of `kubeconfig`, with
    /// `--metrics-addr` on a free loopback port, logging to `log`.
    pub fn launch(kubeconfig: &Path, log: PathBuf, args: &[&str], rust_log: &str) -> Self {
        let args: Vec<String> = std::iter::once("run")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        start_log_for_this_run(&log);
        let (process, metrics_port) = spawn(kubeconfig, &log, &args, rust_log);
        Operator {
            process,
            log,
            metrics_port,
            args,
            rust_log: rust_log.to_owned(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited by itself in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        !self.process.is_running() || self.process.terminate(timeout).is_some()
    }

    /// SIGTERM, then the exit status when the process ended by itself within `timeout`
    /// (None when it had to be killed).
    pub fn terminate_status(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.terminate(timeout)
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        (self.process, self.metrics_port) =
            spawn(&self.kubeconfig, &self.log, &self.args, &self.rust_log);
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// The exit status once the process has ended by itself, None while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Operator {
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

    /// Waits (up to 90 s) until the operator completes `n` more reconciles than it had when
    /// called: proof that it was active in a window in which a test then asserts that nothing
    /// happened. Returns how long the window lasted.
    pub fn wait_reconciles(&self, n: u32) -> Duration {
        self.wait_metric_advance("secprov_reconciles_total", &[], n)
    }

    /// Like [`Operator::wait_reconciles`], counting only successful reconciles.
    pub fn wait_successes(&self, n: u32) -> Duration {
        self.wait_metric_advance("secprov_reconciles_total", &["result=\"success\""], n)
    }

    /// Like [`Operator::wait_reconciles`] for any counter: waits (up to 90 s) until the sum of
    /// `name`'s samples matching `filters` (see [`Operator::metric_sum`]) grew by `n`.
    pub fn wait_metric_advance(&self, name: &str, filters: &[&str], n: u32) -> Duration {
        let (start, since) = (Instant::now(), self.metric_sum(name, filters));
        let what = format!("{name}{filters:?} to grow by {n} from {since}");
        eventually(Duration::from_secs(90), &what, || {
            (self.metric_sum(name, filters) >= since + f64::from(n)).then_some(())
        });
        start.elapsed()
    }
}

/// Empties `log` the first time this test process starts an operator logging to it. Restarts
/// and other operators of this run append to it; what an earlier run wrote must not appear in
/// a failure's excerpt as if this run had written it.
fn start_log_for_this_run(log: &Path) {
    static STARTED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if !started.iter().any(|p| p == log) {
        let _ = std::fs::remove_file(log);
        started.push(log.to_path_buf());
    }
}

/// Spawns the operator binary with `args` and a free metrics port; returns both.
fn spawn(kubeconfig: &Path, log: &Path, args: &[String], rust_log: &str) -> (Process, u16) {
    let metrics_port = free_port();
    let binary = operator_binary();
    let mut cmd = Command::new(&binary);
    cmd.args(args)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", rust_log);
    let process = Process::spawn(&mut cmd, log)
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    (process, metrics_port)
}

/// `secprov-operator <args>` (a CLI subcommand: `export`, `plan`, ...) against the tests'
/// control plane; its stdout. Panics with its output when it fails.
pub fn operator_cli(args: &[&str]) -> String {
    let (code, output) = operator_cli_exit(args);
    assert_eq!(code, 0, "secprov-operator {args:?} failed:\n{output}");
    output
}

/// The exit status and stdout (stderr appended) of `secprov-operator <args>` against the tests'
/// control plane.
pub fn operator_cli_exit(args: &[&str]) -> (i32, String) {
    let out = Command::new(operator_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("run secprov-operator");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    (code, text + &String::from_utf8_lossy(&out.stderr))
}
