//! Validation of identifiers that arrive over the API. Every check names the field and what is expected.

use thiserror::Error;

/// A field of a request that is not acceptable; maps to INVALID_ARGUMENT.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Instance ids: `^[a-z0-9][a-z0-9-]{0,62}$`. They become file names, unit names and
/// `/dev/mapper/dbagent-<id>`, so nothing else is accepted.
pub fn instance_id(field: &str, id: &str) -> Result<(), InvalidField> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "{:?} must match ^[a-z0-9][a-z0-9-]{{0,62}}$ (lower-case letters, digits and '-', at most 63 characters)",
                truncate_for_message(id)
            ),
        ))
    }
}

/// Client-chosen idempotency keys: 1..=128 characters of `[A-Za-z0-9._:/-]`.
pub fn request_id(id: &str) -> Result<(), InvalidField> {
    if id.is_empty() {
        return Err(InvalidField::new(
            "request_id",
            "is required: a client-chosen idempotency key of at most 128 characters",
        ));
    }
    if id.len() > MAX_REQUEST_ID_LEN {
        return Err(InvalidField::new(
            "request_id",
            format!("is {} characters long; at most {MAX_REQUEST_ID_LEN} are allowed", id.len()),
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b)) {
        return Err(InvalidField::new("request_id", "may contain only letters, digits and . - _ : /"));
    }
    Ok(())
}

/// Operation ids as the agent makes them: `op-` and 20 lower-case hex digits.
pub fn operation_id(id: &str) -> Result<(), InvalidField> {
    let ok = id.len() == 23
        && id.starts_with("op-")
        && id[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            "id",
            format!("{:?} is not an operation id (op- and 20 hex digits)", truncate_for_message(id)),
        ))
    }
}

/// Cuts a hostile value down before it is echoed in an error message.
pub fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX { s.to_owned() } else { format!("{}…", s.chars().take(MAX).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        for ok in ["a", "pg-42", "0abc", &"a".repeat(63)] {
            assert!(instance_id("id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "../x", "a/b", &"a".repeat(64), "é"] {
            let e = instance_id("id", bad).unwrap_err();
            assert_eq!(e.field, "id");
        }
    }

    #[test]
    fn request_ids() {
        assert!(request_id("7f0c-aa:1/x.y_z").is_ok());
        assert!(request_id("").unwrap_err().reason.contains("required"));
        assert!(request_id(&"x".repeat(129)).unwrap_err().reason.contains("129"));
        assert!(request_id("a b").is_err());
    }

    #[test]
    fn operation_ids() {
        assert!(operation_id("op-0123456789abcdef0123").is_ok());
        assert!(operation_id("op-0123456789ABCDEF0123").is_err());
        assert!(operation_id("op-1").is_err());
    }
}
