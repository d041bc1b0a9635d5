//! The ed25519 key file format (docs/cli.md), shared by the CLI, the node and devnet:
//! JSON with the public key and the 32-byte seed in hex. Parsing and rendering only; the
//! callers own the file IO (and its 0600 mode).

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// The only key file format version.
pub const KEY_FILE_FORMAT: u32 = 1;
/// The only algorithm.
pub const KEY_FILE_ALGORITHM: &str = "ed25519";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    algorithm: String,
    public_key: String,
    secret_key: String,
}

/// Why a key file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("not a key file: {0}")]
    Json(String),
    #[error("format {format} / algorithm {algorithm:?} not supported")]
    Unsupported { format: u32, algorithm: String },
    #[error("secret_key must be 64 hex digits")]
    BadSeed,
    #[error("public_key does not match secret_key")]
    Mismatch,
}

/// Parses a key file and checks that its public key matches its seed.
pub fn parse_key_file(text: &str) -> Result<SigningKey, KeyFileError> {
    let kf: KeyFile = serde_json::from_str(text).map_err(|e| KeyFileError::Json(e.to_string()))?;
    if kf.format != KEY_FILE_FORMAT || kf.algorithm != KEY_FILE_ALGORITHM {
        return Err(KeyFileError::Unsupported { format: kf.format, algorithm: kf.algorithm });
    }
    let seed: [u8; 32] =
        hex::decode(&kf.secret_key).ok().and_then(|v| v.try_into().ok()).ok_or(KeyFileError::BadSeed)?;
    let key = SigningKey::from_bytes(&seed);
    if hex::encode(key.verifying_key().to_bytes()) != kf.public_key {
        return Err(KeyFileError::Mismatch);
    }
    Ok(key)
}

/// The key file text for `key`, newline-terminated.
pub fn render_key_file(key: &SigningKey) -> String {
    let body = KeyFile {
        format: KEY_FILE_FORMAT,
        algorithm: KEY_FILE_ALGORITHM.to_string(),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        secret_key: hex::encode(key.to_bytes()),
    };
    serde_json::to_string_pretty(&body).expect("a key file serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let text = render_key_file(&key);
        assert_eq!(parse_key_file(&text).unwrap().to_bytes(), key.to_bytes());
        let other = hex::encode(SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes());
        let mismatched = text.replace(&hex::encode(key.verifying_key().to_bytes()), &other);
        assert_eq!(parse_key_file(&mismatched).unwrap_err(), KeyFileError::Mismatch);
        assert_eq!(
            parse_key_file(&text.replace("\"format\": 1", "\"format\": 2")).unwrap_err(),
            KeyFileError::Unsupported { format: 2, algorithm: "ed25519".into() }
        );
        assert!(matches!(parse_key_file("{}"), Err(KeyFileError::Json(_))));
    }
}
