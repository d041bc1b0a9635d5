//! A temporary directory for unit tests, removed when dropped unless the test panicked.

use std::path::{Path, PathBuf};

pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(prefix: &str) -> TestDir {
        TestDir(crate::fsutil::unique_temp_dir(&format!("veritrace-devnet-unit-{prefix}")).expect("temp dir"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A stand-in for `veritrace-node` that reads its listen addresses from the config,
/// announces them like the node does, then sleeps until signalled.
pub const FAKE_SERVING_NODE: &str = r#"cfg="$2"
grpc=$(sed -n 's/^grpc_listen = "\(.*\)"$/\1/p' "$cfg")
http=$(sed -n 's/^http_listen = "\(.*\)"$/\1/p' "$cfg")
echo "fake node starting" >&2
echo "{\"event\":\"serving\",\"grpc\":\"$grpc\",\"http\":\"$http\"}"
exec sleep 600"#;

/// Writes an executable `/bin/sh` script with `body` as a fake node binary.
pub fn fake_node(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-node");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake node");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod fake node");
    path
}
