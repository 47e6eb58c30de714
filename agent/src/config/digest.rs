//! The config digest GetInfo reports. The monitor role reads it, so it is computed over the config
//! with every secret left out: a hash over a password or an access key would let whoever reads it
//! test guesses offline, and would change when only a secret rotates.
//!
//! Secrets are found by the key's name, not by a list of today's fields, so a secret field added
//! later is left out too as long as its name says what it is. URL user-info (`user:pass@`) is cut
//! from every string value.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Config;

/// Key names (or parts of them) that hold secrets; such keys are removed before hashing.
const SECRET_KEY_PARTS: &[&str] =
    &["secret", "password", "passwd", "passphrase", "token", "credential", "access_key", "private_key"];

pub(super) fn public_digest(config: &Config) -> String {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    strip_secrets(&mut value);
    // serde_json's maps are ordered by key, so equal configs give equal text.
    let text = serde_json::to_string(&value).unwrap_or_default();
    crate::hex::encode(&Sha256::digest(text.as_bytes()))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

fn strip_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !is_secret_key(key));
            map.values_mut().for_each(strip_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        Value::String(text) => {
            if let Some(cut) = without_userinfo(text) {
                *text = cut;
            }
        }
        _ => {}
    }
}

/// `scheme://user:pass@host/...` -> `scheme://host/...`; `None` when there is no user-info.
fn without_userinfo(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{}", &rest[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::settings::DestinationConfig;

    fn s3(secret: &str, bucket: &str) -> DestinationConfig {
        DestinationConfig::S3 {
            name: "az1".into(),
            bucket: bucket.into(),
            endpoint: "https://s3.example".into(),
            region: "us-east-1".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: secret.into(),
            prefix: String::new(),
            allow_http: false,
        }
    }

    fn with_destination(d: DestinationConfig) -> Config {
        let mut c = Config::default();
        c.backup.destinations = vec![d];
        c
    }

    #[test]
    fn digest_changes_with_config() {
        let a = Config::default();
        let mut b = Config::default();
        b.operations.max_concurrent = 5;
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
    }

    #[test]
    fn digest_is_not_computed_over_secrets() {
        let one = with_destination(s3("first-secret", "bucket"));
        let other_secret = with_destination(s3("second-secret", "bucket"));
        assert_eq!(one.digest(), other_secret.digest(), "the digest must not depend on secret_access_key");
        // Beside it, a public field of the same destination still counts.
        let other_bucket = with_destination(s3("first-secret", "another-bucket"));
        assert_ne!(one.digest(), other_bucket.digest(), "the bucket is not a secret");
    }

    #[test]
    fn url_user_info_is_cut_before_hashing() {
        let mut a = Config::default();
        a.metrics.otlp_endpoint = Some("https://alice:hunter2@otel.example:4317/v1".into());
        let mut b = a.clone();
        b.metrics.otlp_endpoint = Some("https://bob:other@otel.example:4317/v1".into());
        assert_eq!(a.digest(), b.digest());
        let mut c = a.clone();
        c.metrics.otlp_endpoint = Some("https://otel.example:4318/v1".into());
        assert_ne!(a.digest(), c.digest(), "the host and port still count");
        assert_eq!(without_userinfo("https://u:p@h/x@y").as_deref(), Some("https://h/x@y"));
        assert_eq!(without_userinfo("https://h/x@y"), None);
    }

    #[test]
    fn secret_names_are_recognised() {
        for key in ["secret_access_key", "password", "db_passwd", "api_token", "credentials", "access_key_id"] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["bucket", "key_bits", "kek_file", "endpoint", "max_connections"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
