//! End-to-end benchmark on the real control plane (tests/controlplane): N SecurityProviders
//! against the in-process Coveo simulator with latency L, reconciled by the release operator
//! (or by the kopf peer in benches/peer-kopf with `--peer=kopf`).
//!
//! `make bench` runs it with defaults; parameters as `--name=value` after `--`, or BENCH_*
//! environment variables:
//!
//! ```text
//! cargo bench --bench operator -- --n=1000 --latency-ms=50 --concurrency=16 --resync-s=10 \
//!     --quiet-periods=3 [--peer=kopf] [--batch-observe=false] [--keep-cp]
//! ```
//!
//! Sequence: start (or reuse) the control plane in target/bench-controlplane, apply crds/,
//! start the simulator, create a namespace with a Secret and a ProviderConnection, create the
//! N objects with no operator running (so creation speed doesn't count), then start the
//! operator and measure until all are Ready; then a quiet window of several resync periods;
//! then a restart (writes after it) and one new object (time to Ready).
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use secprov::api::SecurityProvider;
use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use serde_json::json;

#[derive(Clone, Debug)]
struct Args {
    n: usize,
    latency_ms: u64,
    concurrency: usize,
    resync_s: u64,
    quiet_periods: u64,
    peer: Option<String>,
    batch_observe: bool,
    keep_cp: bool,
    restart: bool,
}

fn parse_args() -> Args {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut a = Args {
        n: env("BENCH_N", "1000").parse().unwrap(),
        latency_ms: env("BENCH_LATENCY_MS", "50").parse().unwrap(),
        concurrency: env("BENCH_CONCURRENCY", "16").parse().unwrap(),
        resync_s: env("BENCH_RESYNC_S", "10").parse().unwrap(),
        quiet_periods: env("BENCH_QUIET_PERIODS", "3").parse().unwrap(),
        peer: std::env::var("BENCH_PEER").ok().filter(|s| !s.is_empty()),
        batch_observe: env("BENCH_BATCH_OBSERVE", "true") == "true",
        keep_cp: std::env::var("BENCH_KEEP_CP").is_ok(),
        restart: env("BENCH_RESTART", "true") == "true",
    };
    for arg in std::env::args().skip(1) {
        let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), "true"));
        match k {
            "--n" => a.n = v.parse().unwrap(),
            "--latency-ms" => a.latency_ms = v.parse().unwrap(),
            "--concurrency" => a.concurrency = v.parse().unwrap(),
            "--resync-s" => a.resync_s = v.parse().unwrap(),
            "--quiet-periods" => a.quiet_periods = v.parse().unwrap(),
            "--peer" => a.peer = Some(v.to_owned()),
            "--batch-observe" => a.batch_observe = v == "true",
            "--keep-cp" => a.keep_cp = true,
            "--restart" => a.restart = v == "true",
            // `cargo bench` passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// apiserver_request_total for securityproviders writes, by "VERB[/subresource]", and events
/// writes.
fn apiserver_writes(kubeconfig: &Path) -> BTreeMap<String, f64> {
    let text = kubectl(kubeconfig, &["get", "--raw", "/metrics"], None);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("apiserver_request_total{") {
            continue;
        }
        let label = |name: &str| {
            let pat = format!("{name}=\"");
            line.split(&pat)
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
            continue;
        }
        let resource = label("resource");
        let sub = label("subresource");
        let key = match resource.as_str() {
            "securityproviders" if sub.is_empty() => verb,
            "securityproviders" => format!("{verb}/{sub}"),
            "events" => "events".into(),
            _ => continue,
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap_or(0.0);
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).unwrap_or(&0.0)) as u64))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn sp_writes(d: &BTreeMap<String, u64>) -> u64 {
    d.iter()
        .filter(|(k, _)| k.as_str() != "events")
        .map(|(_, v)| v)
        .sum()
}

/// VmRSS and VmHWM of a process, KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct Operator {
    child: Child,
}

impl Operator {
    fn start(args: &Args, kubeconfig: &Path, ns: &str, sim_url: &str, log: &Path) -> Operator {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = match args.peer.as_deref() {
            None => {
                let mut c = Command::new(repo().join("target/release/secprov-operator"));
                c.args([
                    "run",
                    "--namespace",
                    ns,
                    "--concurrency",
                    &args.concurrency.to_string(),
                    "--resync-interval",
                    &format!("{}s", args.resync_s),
                    "--batch-observe",
                    &args.batch_observe.to_string(),
                    "--metrics-addr",
                    "127.0.0.1:0",
                ])
                .env("RUST_LOG", "warn");
                c
            }
            Some("kopf") => {
                let mut c = Command::new(repo().join("target/peer-kopf-venv/bin/kopf"));
                c.args([
                    "run",
                    "--standalone",
                    "--namespace",
                    ns,
                    "--log-format=plain",
                    "-q",
                ])
                .arg(repo().join("benches/peer-kopf/operator.py"))
                .env("COVEO_URL", sim_url)
                .env("COVEO_ORG", "bench-org")
                .env("COVEO_API_KEY", "bench-key")
                .env("PEER_CONCURRENCY", args.concurrency.to_string())
                .env("PEER_RESYNC_S", args.resync_s.to_string());
                c
            }
            Some(other) => panic!("unknown peer {other}"),
        };
        let child = cmd
            .env("KUBECONFIG", kubeconfig)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start operator (cargo build --release first; for kopf see benches/peer-kopf)");
        Operator { child }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider(name: &str) -> SecurityProvider {
    serde_json::from_value(json!({
        "apiVersion": "secprov.dev/v1alpha1",
        "kind": "SecurityProvider",
        "metadata": {"name": name},
        "spec": {
            "connectionRef": "coveo",
            "displayName": format!("Bench provider {name}"),
            "coveo": {
                "type": "EXPANDED",
                "referencedBy": [{"type": "SOURCE", "id": "bench-org-source"}],
                "cascadingSecurityProviders": [{"id": "Email Security Provider", "type": "EMAIL"}]
            }
        }
    }))
    .unwrap()
}

fn is_ready(sp: &SecurityProvider) -> bool {
    sp.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn count_ready(api: &Api<SecurityProvider>) -> usize {
    // Paged, so that a 10k list doesn't time out on this small machine.
    match api.list(&ListParams::default().limit(2000)).await {
        Ok(first) => {
            let mut ready = first.items.iter().filter(|sp| is_ready(sp)).count();
            let mut token = first.metadata.continue_;
            while let Some(t) = token.filter(|t| !t.is_empty()) {
                let Ok(page) = api
                    .list(&ListParams::default().limit(2000).continue_token(&t))
                    .await
                else {
                    return 0;
                };
                ready += page.items.iter().filter(|sp| is_ready(sp)).count();
                token = page.metadata.continue_;
            }
            ready
        }
        Err(_) => 0,
    }
}

fn sim_snapshot(sim: &CoveoSimulator) -> BTreeMap<String, u64> {
    sim.counters().snapshot().by_method_and_operation
}

fn sim_delta(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).unwrap_or(&0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn sim_writes(d: &BTreeMap<String, u64>) -> u64 {
    d.iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .map(|(_, v)| v)
        .sum()
}

fn sim_reads(d: &BTreeMap<String, u64>) -> u64 {
    d.iter()
        .filter(|(k, _)| k.starts_with("GET "))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let name = args.peer.clone().unwrap_or_else(|| "secprov".into());
    eprintln!("==> {args:?}");
    let cp_dir = repo().join("target/bench-controlplane");
    let out = Command::new("bash")
        .arg(repo().join("tests/controlplane/up.sh"))
        .arg(&cp_dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("up.sh");
    assert!(out.status.success(), "tests/controlplane/up.sh failed");
    let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap());
    let crds = repo().join("crds");
    kubectl(
        &kubeconfig,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ],
        None,
    );
    kubectl(
        &kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/securityproviders.secprov.dev",
        ],
        None,
    );

    let sim = CoveoSimulator::start(
        "127.0.0.1:0".parse().unwrap(),
        CoveoSimConfig {
            organization_id: "bench-org".into(),
            api_key: "bench-key".into(),
            // Providers are usable at once, so Ready needs one reconcile (the ideal assumes so).
            refresh_duration: Duration::ZERO,
            latency: Duration::from_millis(args.latency_ms),
            ..CoveoSimConfig::new("bench-org", "bench-key")
        },
    )
    .await
    .unwrap();

    let ns = format!(
        "bench-{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    kubectl(&kubeconfig, &["create", "namespace", &ns], None);
    let setup = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: coveo-api-key, labels: {{secprov.dev/credential: "true"}}}}
stringData: {{apiKey: bench-key}}
---
apiVersion: secprov.dev/v1alpha1
kind: ProviderConnection
metadata: {{name: coveo}}
spec:
  coveo: {{organizationId: bench-org, endpoint: "{}", apiKeySecretRef: {{name: coveo-api-key, key: apiKey}}}}
  rateLimit: {{requestsPerSecond: 10000, burst: 10000, maxConcurrency: 1000}}
"#,
        sim.base_url()
    );
    kubectl(&kubeconfig, &["-n", &ns, "apply", "-f", "-"], Some(&setup));

    let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.read_timeout = Some(Duration::from_secs(120));
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<SecurityProvider> = Api::namespaced(client, &ns);

    eprintln!("==> creating {} SecurityProviders in {ns}", args.n);
    let created_at = Instant::now();
    futures::stream::iter(0..args.n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &provider(&format!("sp-{i:06}")))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create");
    eprintln!("    created in {:.1?}", created_at.elapsed());

    let logs = repo().join("target/bench-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join(format!("{ns}.log"));
    let writes0 = apiserver_writes(&kubeconfig);
    let sim0 = sim_snapshot(&sim);
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    eprintln!("==> starting the operator ({name}), waiting for all Ready");
    let started = Instant::now();
    let mut op = Operator::start(&args, &kubeconfig, &ns, &sim.base_url(), &log);
    let pid = op.child.id();
    let mut peak_kib = 0;
    let mut ready;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ready = count_ready(&api).await;
        peak_kib = peak_kib.max(rss(pid).1);
        if ready >= args.n {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            eprintln!("    timeout: {ready}/{} Ready", args.n);
            break;
        }
    }
    let converge = started.elapsed();
    eprintln!("    {ready}/{} Ready after {converge:.1?}", args.n);
    let writes1 = apiserver_writes(&kubeconfig);
    let sim1 = sim_snapshot(&sim);
    let conv_writes = delta(&writes1, &writes0);
    let conv_sim = sim_delta(&sim1, &sim0);

    // Quiet window: after a short settle (in-flight status writes), several resync periods.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes2 = apiserver_writes(&kubeconfig);
    let sim2 = sim_snapshot(&sim);
    let quiet = Duration::from_secs(args.resync_s * args.quiet_periods);
    eprintln!("==> quiet window of {quiet:?}");
    let mut rss_samples = Vec::new();
    let quiet_start = Instant::now();
    while quiet_start.elapsed() < quiet {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, hwm) = rss(pid);
        rss_samples.push(now);
        peak_kib = peak_kib.max(hwm);
    }
    let writes3 = apiserver_writes(&kubeconfig);
    let sim3 = sim_snapshot(&sim);
    let quiet_writes = delta(&writes3, &writes2);
    let quiet_sim = sim_delta(&sim3, &sim2);
    let steady_kib = *rss_samples.last().unwrap_or(&0);
    let steady_max_kib = rss_samples.iter().copied().max().unwrap_or(0);

    // Restart with everything converged, then one new object.
    let mut restart_rows = Vec::new();
    if args.restart {
        eprintln!("==> restart");
        op.stop();
        let writes4 = apiserver_writes(&kubeconfig);
        let sim4 = sim_snapshot(&sim);
        op = Operator::start(&args, &kubeconfig, &ns, &sim.base_url(), &log);
        // Long enough for the restarted operator to reconcile every object once.
        let settle = converge.max(Duration::from_secs(10));
        tokio::time::sleep(settle).await;
        let writes5 = apiserver_writes(&kubeconfig);
        let sim5 = sim_snapshot(&sim);
        let restart_writes = delta(&writes5, &writes4);
        let restart_sim = sim_delta(&sim5, &sim4);
        let new_start = Instant::now();
        api.create(&PostParams::default(), &provider("sp-new"))
            .await
            .unwrap();
        let mut new_ready = None;
        while new_start.elapsed() < Duration::from_secs(60) {
            if let Ok(sp) = api.get("sp-new").await
                && is_ready(&sp)
            {
                new_ready = Some(new_start.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        restart_rows.push((
            format!("restart, converged: API-server writes in {settle:.0?}"),
            format!("{} {:?}", sp_writes(&restart_writes), restart_writes),
        ));
        restart_rows.push((
            "restart, converged: remote writes / reads".into(),
            format!(
                "{} / {} {:?}",
                sim_writes(&restart_sim),
                sim_reads(&restart_sim),
                restart_sim
            ),
        ));
        restart_rows.push((
            "restart: new CR Ready after (target 1 s + 2 round trips)".into(),
            new_ready.map_or("not Ready within 60 s".into(), |d| format!("{d:.2?}")),
        ));
    }
    op.stop();
    let load1 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let n = args.n as f64;
    let k = (sim_reads(&conv_sim) + sim_writes(&conv_sim)) as f64 / n;
    let ideal = (args.n.div_ceil(args.concurrency)) as f64 * k * args.latency_ms as f64 / 1000.0;
    let conv_s = converge.as_secs_f64();
    let quiet_reads = sim_reads(&quiet_sim);
    let mut rows: Vec<(String, String)> = vec![
        ("operator".into(), name.clone()),
        (
            "N, L, C, resync".into(),
            format!(
                "{}, {} ms, {}, {} s{}",
                args.n,
                args.latency_ms,
                args.concurrency,
                args.resync_s,
                if args.batch_observe || args.peer.is_some() {
                    ""
                } else {
                    " (batch observation off)"
                }
            ),
        ),
        (
            "time to all Ready (from operator start)".into(),
            format!("{conv_s:.2} s"),
        ),
        (
            "k = remote requests per object while converging".into(),
            format!("{k:.2} {conv_sim:?}"),
        ),
        ("ideal ceil(N/C)*k*L".into(), format!("{ideal:.2} s")),
        (
            "ratio (target <= 1.5)".into(),
            format!("{:.2}", conv_s / ideal),
        ),
        (
            "API-server writes per object while converging".into(),
            format!(
                "{:.2} {:?}",
                sp_writes(&conv_writes) as f64 / n,
                conv_writes
            ),
        ),
        ("peak RSS (VmHWM)".into(), mib(peak_kib)),
        (
            "steady RSS (end of quiet window; max in window)".into(),
            format!("{} ({})", mib(steady_kib), mib(steady_max_kib)),
        ),
        (
            format!(
                "quiet {}x resync: remote writes (target 0)",
                args.quiet_periods
            ),
            format!("{}", sim_writes(&quiet_sim)),
        ),
        (
            "quiet: API-server writes to securityproviders (target 0)".into(),
            format!("{} {:?}", sp_writes(&quiet_writes), quiet_writes),
        ),
        (
            "quiet: remote reads per resync period (target <= N/100)".into(),
            format!(
                "{:.1} ({} in {} periods: {:?})",
                quiet_reads as f64 / args.quiet_periods as f64,
                quiet_reads,
                args.quiet_periods,
                quiet_sim
            ),
        ),
    ];
    rows.extend(restart_rows);
    rows.push((
        "load average before / after".into(),
        format!("{} / {}", load0.trim(), load1.trim()),
    ));

    let mut table = format!(
        "\n### {name}, N={} ({})\n\n| measure | value |\n| --- | --- |\n",
        args.n,
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    for (k, v) in &rows {
        table.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    }
    println!("{table}");
    let mut results = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(repo().join("target/bench-results.md"))
        .unwrap();
    writeln!(results, "{table}").unwrap();

    kubectl(
        &kubeconfig,
        &["delete", "namespace", &ns, "--wait=false"],
        None,
    );
    drop(op);
    sim.shutdown().await;
    if !args.keep_cp {
        let _ = Command::new("bash")
            .arg(repo().join("tests/controlplane/down.sh"))
            .arg(&cp_dir)
            .arg("--purge")
            .status();
    }
}
