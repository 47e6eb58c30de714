//! A ledger entry, as kept on disk: one small JSON file per entry in a [`crate::json_store::JsonStore`], named by the
//! entry's key (a hash).

use prost::Message;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::SystemTime;

use super::{LedgerError, entry_key};
use crate::json_store::JsonRecord;

/// One successful call: what was asked (as a digest) and what was answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Entry {
    pub rpc: String,
    pub request_id: String,
    /// SHA-256 of the encoded request, hex.
    pub request_digest: String,
    #[serde(with = "crate::timefmt")]
    pub created: SystemTime,
    /// The encoded response, hex.
    pub response: String,
}

impl Entry {
    pub fn new(
        rpc: &str,
        request_id: &str,
        request_digest: String,
        response: &impl Message,
        created: SystemTime,
    ) -> Self {
        let response = crate::hex::encode(&response.encode_to_vec());
        Self { rpc: rpc.to_owned(), request_id: request_id.to_owned(), request_digest, created, response }
    }

    /// The stored response for a repeat of the request whose digest is `digest`.
    pub fn replay<Resp: Message + Default>(&self, digest: &str) -> Result<Resp, LedgerError> {
        if self.request_digest != digest {
            return Err(LedgerError::RequestIdReused { rpc: self.rpc.clone(), request_id: self.request_id.clone() });
        }
        let corrupt = |reason: String| LedgerError::Corrupt {
            rpc: self.rpc.clone(),
            request_id: self.request_id.clone(),
            reason,
        };
        let bytes = crate::hex::decode(&self.response).ok_or_else(|| corrupt("not hex".into()))?;
        Resp::decode(bytes.as_slice()).map_err(|e| corrupt(e.to_string()))
    }
}

/// An entry's file is `<key>.json`, its key the hash of its RPC and request_id: an entry under
/// another name would never be found or pruned.
impl JsonRecord for Entry {
    const KIND: &'static str = "request record";

    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(entry_key(&self.rpc, &self.request_id))
    }
}
