//! The container image that `make image` writes (target/image/secprov-operator.oci.tar), for the
//! tests that unpack and run it (tests/image.rs, tests/chart_runs_image.rs).
use std::path::PathBuf;
use std::process::Command;

use crate::cluster::repo;

/// The image archive: `SECPROV_IMAGE_ARCHIVE` when set (scripts/test.sh builds it once), else
/// target/image/secprov-operator.oci.tar, built by scripts/image.sh when it does not exist yet.
pub fn image_archive() -> PathBuf {
    let path = std::env::var_os("SECPROV_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/image/secprov-operator.oci.tar"));
    if !path.exists() {
        let status = Command::new("bash")
            .arg(repo().join("scripts/image.sh"))
            .status()
            .unwrap_or_else(|e| panic!("run scripts/image.sh: {e}"));
        assert!(status.success(), "make image failed");
    }
    assert!(path.exists(), "{} missing after make image", path.display());
    path
}
