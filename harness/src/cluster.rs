//! The local control plane (tests/controlplane/up.sh) and `kubectl` against it.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Repository root.
pub fn repo() -> PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.parent().unwrap_or(harness).to_path_buf()
}

/// Starts (or reuses) the control plane whose state lives in `dir` (tests/controlplane/up.sh;
/// its progress goes to stderr), applies crds/ and waits until they are established. Returns
/// the kubeconfig.
pub fn control_plane_up(dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(repo().join("tests/controlplane/up.sh"))
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run tests/controlplane/up.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("tests/controlplane/up.sh {} failed", dir.display()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .ok_or("tests/controlplane/up.sh printed no kubeconfig path")?;
    apply_crds(&kubeconfig)?;
    Ok(kubeconfig)
}

/// Stops the control plane of `dir` (`purge`: and deletes its state).
pub fn control_plane_down(dir: &Path, purge: bool) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/controlplane/down.sh")).arg(dir);
    if purge {
        cmd.arg("--purge");
    }
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Applies crds/ server-side and waits until both CRDs are established.
pub fn apply_crds(kubeconfig: &Path) -> Result<(), String> {
    let crds = repo().join("crds");
    let crds = crds.to_string_lossy();
    run_kubectl(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", &crds],
        None,
    )?;
    run_kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/securityproviders.secprov.dev",
            "crd/providerconnections.secprov.dev",
        ],
        None,
    )
    .map(drop)
}

/// The kubeconfig of the tests' shared control plane: `SECPROV_E2E_KUBECONFIG` when set (make
/// test starts one), otherwise one started (or reused) under target/e2e-controlplane. The CRDs
/// are applied once per test binary.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| match std::env::var("SECPROV_E2E_KUBECONFIG") {
        Ok(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            apply_crds(&path).unwrap_or_else(|e| panic!("{e}"));
            path
        }
        _ => control_plane_up(&repo().join("target/e2e-controlplane"))
            .unwrap_or_else(|e| panic!("{e}")),
    })
}

/// `kubectl --kubeconfig <kubeconfig> <args>` with `stdin` piped in; stdout, or the failure
/// with kubectl's stderr and stdout.
pub fn run_kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
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
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
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

/// Runs `cmd`; its stdout, or a panic naming the command with its output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl against the tests' shared control plane.
pub fn kubectl(args: &[&str]) -> Result<String, String> {
    run_kubectl(kubeconfig(), args, None)
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
