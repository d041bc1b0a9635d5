//! ed25519 key files in the format of `veritrace key gen` (docs/cli.md): JSON with the public
//! key and the 32-byte seed in hex, mode 0600. Organisation keys and node keys share it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use veritrace_ledger::keyfile::{parse_key_file, render_key_file};

/// Key files are secrets: owner read/write only.
pub const KEY_FILE_MODE: u32 = 0o600;

/// A fresh random key from the operating system's generator.
pub fn generate_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("operating system random generator: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to a new file at `path` with mode 0600; refuses to overwrite, so a
/// network's keys can never be replaced behind its genesis.
pub fn write_key_file(path: &Path, key: &SigningKey) -> Result<()> {
    let text = render_key_file(key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .with_context(|| format!("create key file {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("write key file {}", path.display()))?;
    f.sync_all().with_context(|| format!("sync key file {}", path.display()))?;
    Ok(())
}

/// Reads a key file and checks that its public key matches its seed.
pub fn read_key_file(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read key file {}", path.display()))?;
    let key = parse_key_file(&text).with_context(|| format!("key file {}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn key_file_round_trips_with_mode_0600_and_refuses_overwrite() {
        let dir = crate::testdir::TestDir::new("keyfile");
        let path = dir.path().join("k.key");
        let key = generate_key().expect("random key");
        write_key_file(&path, &key).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, KEY_FILE_MODE, "key file mode is {mode:o}");
        assert_eq!(read_key_file(&path).expect("read").to_bytes(), key.to_bytes());
        assert!(write_key_file(&path, &key).is_err(), "an existing key file must not be overwritten");
    }

    #[test]
    fn mismatched_public_key_is_refused() {
        let dir = crate::testdir::TestDir::new("keyfile-bad");
        let path = dir.path().join("k.key");
        let a = generate_key().expect("random key");
        let b = generate_key().expect("random key");
        let text = serde_json::json!({
            "format": 1, "algorithm": "ed25519",
            "public_key": hex::encode(b.verifying_key().to_bytes()),
            "secret_key": hex::encode(a.to_bytes()),
        });
        std::fs::write(&path, text.to_string()).expect("write");
        let err = read_key_file(&path).expect_err("mismatch must be refused");
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    }
}
