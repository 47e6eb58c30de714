//! The escrow token: sealed to the recipients, bound to its instance and key version, bounded and
//! checked before anything of it is used.

use zeroize::Zeroizing;

use super::*;
use crate::error::ErrorCode;

fn operator() -> (RecoveryIdentity, RecoveryRecipients) {
    let identity = RecoveryIdentity::generate();
    let recipients = RecoveryRecipients::parse(&[identity.recipient()]).unwrap();
    (identity, recipients)
}

fn edit(json: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    change(&mut value);
    value.to_string()
}

fn key(byte: u8) -> VolumeKey {
    VolumeKey::new(Zeroizing::new(vec![byte; 32]))
}

#[test]
fn the_recipient_opens_the_escrowed_key_and_another_identity_is_denied() {
    let (identity, recipients) = operator();
    let token = EscrowToken::seal(&recipients, "pg-1", 3, &key(0x42)).unwrap();
    let json = token.to_json();
    assert!(!json.contains(&hex::encode(&[0x42; 32])), "the key is in the token in the clear");
    let parsed = EscrowToken::parse("pg-1", &json).unwrap();
    assert_eq!(parsed.open(&identity, "pg-1", 3).unwrap().as_bytes(), &[0x42; 32]);

    let (stranger, _) = operator();
    let e = parsed.open(&stranger, "pg-1", 3).unwrap_err();
    assert!(matches!(e, EscrowError::Recovery(RecoveryKeyError::WrongKey { .. })), "{e}");
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
}

#[test]
fn a_token_of_another_instance_or_version_is_refused() {
    let (identity, recipients) = operator();
    let json = EscrowToken::seal(&recipients, "pg-1", 1, &key(1)).unwrap().to_json();
    let token = EscrowToken::parse("pg-2", &json).unwrap();
    let e = token.open(&identity, "pg-2", 1).unwrap_err();
    assert!(matches!(e, EscrowError::OtherInstance { .. }), "{e}");
    let e = token.open(&identity, "pg-1", 2).unwrap_err();
    assert!(matches!(e, EscrowError::OtherVersion { token: 1, record: 2, .. }), "{e}");

    // Editing the plain fields does not move the sealed key to another volume: its context is
    // sealed with it.
    let edited = edit(&json, |v| {
        v["instance_id"] = "pg-2".into();
        v["key_version"] = 2.into();
    });
    let token = EscrowToken::parse("pg-2", &edited).unwrap();
    let e = token.open(&identity, "pg-2", 2).unwrap_err();
    assert!(matches!(e, EscrowError::Recovery(RecoveryKeyError::WrongContext { .. })), "{e}");
    // The untouched token still opens for its own volume.
    assert!(EscrowToken::parse("pg-1", &json).unwrap().open(&identity, "pg-1", 1).is_ok());
}

#[test]
fn oversized_or_malformed_tokens_are_refused_before_use() {
    let (_, recipients) = operator();
    let good = EscrowToken::seal(&recipients, "pg-1", 1, &key(1)).unwrap().to_json();
    assert!(EscrowToken::parse("pg-1", &good).is_ok());

    let huge = good.replace("\"sealed\":\"", &format!("\"sealed\":\"{}", "00".repeat(MAX_TOKEN_JSON)));
    let e = EscrowToken::parse("pg-1", &huge).unwrap_err();
    assert!(matches!(e, EscrowError::Malformed { .. }) && e.to_string().contains("bytes, more than"), "{e}");

    let long_sealed = good.replace("\"sealed\":\"", &format!("\"sealed\":\"{}", "00".repeat(MAX_SEALED_BYTES)));
    assert!(long_sealed.len() <= MAX_TOKEN_JSON);
    let e = EscrowToken::parse("pg-1", &long_sealed).unwrap_err();
    assert!(e.to_string().contains("hex digits"), "{e}");

    let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("age1fake{i}")).collect();
    let crowded = edit(&good, |v| v["recipients"] = serde_json::json!(many));
    let e = EscrowToken::parse("pg-1", &crowded).unwrap_err();
    assert!(e.to_string().contains("recipients, more than"), "{e}");

    for bad in [good.replace(TOKEN_TYPE, "luks2-keyring"), edit(&good, |v| v["format"] = 9.into()), "[]".into()] {
        assert!(matches!(EscrowToken::parse("pg-1", &bad), Err(EscrowError::Malformed { .. })), "{bad}");
    }
    let not_hex = good.replace("\"sealed\":\"", "\"sealed\":\"zz");
    let (identity, _) = operator();
    let e = EscrowToken::parse("pg-1", &not_hex).unwrap().open(&identity, "pg-1", 1).unwrap_err();
    assert!(e.to_string().contains("not hex"), "{e}");
}

#[test]
fn a_token_is_current_only_for_its_volume_version_and_recipients() {
    let (_, recipients) = operator();
    let (_, others) = operator();
    let token = EscrowToken::seal(&recipients, "pg-1", 2, &key(1)).unwrap();
    assert!(token.is_current("pg-1", 2, &recipients));
    assert!(!token.is_current("pg-1", 3, &recipients), "a rotated key needs a new escrow");
    assert!(!token.is_current("pg-2", 2, &recipients));
    assert!(!token.is_current("pg-1", 2, &others), "changed recipients need a new escrow");
    let both = RecoveryRecipients::parse(&[others.ids()[0].clone(), recipients.ids()[0].clone()]).unwrap();
    let token = EscrowToken::seal(&both, "pg-1", 2, &key(1)).unwrap();
    let reversed = RecoveryRecipients::parse(&[recipients.ids()[0].clone(), others.ids()[0].clone()]).unwrap();
    assert!(token.is_current("pg-1", 2, &reversed), "the order of the recipients does not matter");
}
