//! The container image that `make image` writes (target/image/secprov-operator.oci.tar): an
//! independent OCI implementation (umoci) unpacks it, and the binary runs from the unpacked
//! root filesystem as uid/gid 65532 with that root mounted read-only (a private mount namespace
//! and chroot). The archive is built by `make image` when missing (`make test` builds it first).
//!
//! Needs root (or password-less sudo) for the mount namespace and chroot, and `umoci`
//! (`apt-get install umoci`): the test fails, never skips, without them.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use secprov_harness::{repo, run};
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The image config the Dockerfile's final stage describes with `build_args` (`KEY=VALUE`), as
/// scripts/oci_image.py reads it for `make image`.
fn dockerfile_config(build_args: &[&str]) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/oci_image.py"))
        .args(["--print-config", "--dockerfile"])
        .arg(repo().join("Dockerfile"));
    for arg in build_args {
        cmd.arg("--build-arg").arg(arg);
    }
    serde_json::from_str(&run(&mut cmd)).expect("oci_image.py prints JSON")
}

/// The image is described once, in the Dockerfile: `make image` (scripts/oci_image.py) reads
/// its labels, env, user, port, entrypoint and cmd from there, and they are what the chart and
/// the install docs (docs/install.md) promise.
#[test]
fn the_dockerfile_describes_the_image_that_make_image_writes() {
    let c = dockerfile_config(&[
        "VERSION=1.2.3",
        "REVISION=abc123",
        "SOURCE=https://example.test/src",
    ]);
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/secprov-operator"])
    );
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["run", "--leader-election", "--log-json"])
    );
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        ])
    );
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "secprov-operator");
    assert_eq!(labels["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(labels["org.opencontainers.image.revision"], "abc123");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://example.test/src"
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains("license = \"Apache-2.0\""),
        "the label is the crate's licence"
    );
}

/// A command run as root: directly when this process is root, else through `sudo -n`.
fn as_root(program: &str) -> Command {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if root {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", program]);
        cmd
    }
}

/// Every regular file and symlink of a directory tree, relative to it.
fn files(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Runs the image's binary with `args` from `rootfs` mounted read-only, as 65532:65532, and
/// returns its stdout. The shell around it proves the root really was read-only.
fn run_in_image(rootfs: &Path, args: &[&str]) -> String {
    let script = r#"set -eu
r="$1"; shift
mount --bind "$r" "$r"
mount -o remount,bind,ro "$r"
if touch "$r/probe" 2>/dev/null; then echo "root is writable" >&2; exit 90; fi
exec chroot --userspec=65532:65532 "$r" /usr/local/bin/secprov-operator "$@""#;
    let mut cmd = as_root("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(rootfs)
    .args(args);
    run(&mut cmd)
}

#[test]
fn image_archive_unpacks_and_runs_as_65532_on_a_read_only_root() {
    let archive = secprov_harness::image_archive();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));

    // The OCI layout and the Docker manifest name the same image.
    let index = read_json(&layout.join("index.json"));
    let entry = &index["manifests"][0];
    let reference = entry["annotations"]["io.containerd.image.name"]
        .as_str()
        .expect("image name annotation");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        reference,
        format!("ghcr.io/secprov/secprov-operator:{version}")
    );
    let manifest = read_json(&blob(&layout, entry["digest"].as_str().unwrap()));
    let docker = read_json(&layout.join("manifest.json"));
    assert_eq!(docker[0]["RepoTags"][0], reference);
    assert_eq!(
        docker[0]["Config"],
        format!(
            "blobs/sha256/{}",
            manifest["config"]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        )
    );
    let config = read_json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"][0], "/usr/local/bin/secprov-operator");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://")),
        "{labels}"
    );
    // Every field is the Dockerfile's final stage, with the build arguments the labels show.
    let arg = |label: &str| {
        format!(
            "{}={}",
            label,
            labels[format!("org.opencontainers.image.{}", label.to_lowercase())]
                .as_str()
                .unwrap_or_default()
        )
    };
    let described = dockerfile_config(&[&arg("VERSION"), &arg("REVISION"), &arg("SOURCE")]);
    assert_eq!(
        c, &described,
        "the archive's config is the one the Dockerfile describes"
    );
    let head = run(Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "HEAD"]));
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(head.trim())),
        "revision label {} is not HEAD {}",
        labels["org.opencontainers.image.revision"],
        head.trim()
    );

    // umoci checks every digest and size while it unpacks.
    let tag = entry["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap();
    let bundle = dir.path().join("bundle");
    let mut unpack = as_root("umoci");
    unpack
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle);
    run(&mut unpack);
    let rootfs = bundle.join("rootfs");

    // Only the binary, the libraries it links, CA roots and passwd/group: no shell, no
    // package manager.
    let contents = files(&rootfs);
    for file in &contents {
        let allowed = file == "usr/local/bin/secprov-operator"
            || file == "etc/ssl/certs/ca-certificates.crt"
            || file == "etc/passwd"
            || file == "etc/group"
            || (file.starts_with("lib") && file.contains(".so"));
        assert!(
            allowed,
            "unexpected file in the image: {file}\n{contents:?}"
        );
    }
    for absent in ["bin/sh", "usr/bin/apt", "usr/bin/dpkg", "bin/bash"] {
        assert!(!rootfs.join(absent).exists(), "{absent} in the image");
    }
    let meta = std::fs::metadata(rootfs.join("usr/local/bin/secprov-operator")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta.uid(),
        0,
        "the binary must not be owned by the runtime user"
    );
    assert_eq!(
        meta.mode() & 0o022,
        0,
        "the binary must not be writable by others"
    );

    let crds = run_in_image(&rootfs, &["crd"]);
    let expected = std::fs::read_to_string(repo().join("crds/secprov.dev.yaml")).unwrap();
    assert_eq!(crds, expected, "`crd` from the image differs from crds/");
    let help = run_in_image(&rootfs, &["run", "--help"]);
    assert!(
        help.contains("--metrics-addr") && help.contains("--leader-election"),
        "{help}"
    );

    let compressed = std::fs::metadata(&archive).unwrap().len();
    let unpacked: u64 = contents
        .iter()
        .map(|f| std::fs::symlink_metadata(rootfs.join(f)).unwrap().len())
        .sum();
    eprintln!(
        "image {reference}: archive {:.1} MiB, unpacked {:.1} MiB, {} files",
        compressed as f64 / 1048576.0,
        unpacked as f64 / 1048576.0,
        contents.len()
    );
    let _ = as_root("rm").arg("-rf").arg(&bundle).status();
}
