//! The `keyservice-v1` wrap: `WrapKey`/`UnwrapKey` of the orchestrator's KeyService (with
//! `[keys] provider = "remote"`), purpose `dbagent-backup-data-key/v1/<instance>/<backup>`. The
//! KeyService binds the purpose to the wrap and decides which host may unwrap which instance's
//! keys, so a host that never held an instance cannot open its backups.

use zeroize::Zeroizing;

use super::super::BackupError;
use super::super::manifest::KeyWrap;
use crate::config::RemoteKeysConfig;
use crate::keyservice_client::{self, KeyServiceClient};
use dbagent_proto::v1 as pb;

pub const KEYSERVICE_WRAPPER: &str = "keyservice-v1";

fn purpose(instance_id: &str, backup_id: &str) -> String {
    format!("dbagent-backup-data-key/v1/{instance_id}/{backup_id}")
}

pub struct KeyServiceWrapper {
    client: KeyServiceClient,
    host: String,
}

impl KeyServiceWrapper {
    pub fn connect(config: &RemoteKeysConfig, host: String) -> Result<Self, BackupError> {
        let client = keyservice_client::connect(config).map_err(|e| BackupError::KeyServiceSetup(e.to_string()))?;
        Ok(Self { client, host })
    }

    pub async fn wrap(&self, instance_id: &str, backup_id: &str, data_key: &[u8]) -> Result<KeyWrap, BackupError> {
        let request = pb::WrapKeyRequest {
            host: self.host.clone(),
            purpose: purpose(instance_id, backup_id),
            plaintext: data_key.to_vec(),
        };
        let reply = self.client.clone().wrap_key(request).await.map_err(|s| refusal("WrapKey", &s))?.into_inner();
        if reply.ciphertext.is_empty() || reply.key_id.is_empty() {
            return Err(BackupError::KeyService {
                call: "WrapKey",
                code: tonic::Code::Internal,
                message: "the reply holds no ciphertext or no key id".into(),
            });
        }
        Ok(KeyWrap {
            wrapper: KEYSERVICE_WRAPPER.into(),
            key_id: reply.key_id,
            wrapped: crate::hex::encode(&reply.ciphertext),
        })
    }

    pub async fn unwrap(
        &self,
        instance_id: &str,
        backup_id: &str,
        wrap: &KeyWrap,
    ) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let ciphertext = crate::hex::decode(&wrap.wrapped)
            .ok_or_else(|| BackupError::WrappedKeyInvalid { backup: backup_id.into() })?;
        let request = pb::UnwrapKeyRequest {
            host: self.host.clone(),
            purpose: purpose(instance_id, backup_id),
            key_id: wrap.key_id.clone(),
            ciphertext,
        };
        let reply = self.client.clone().unwrap_key(request).await.map_err(|s| refusal("UnwrapKey", &s))?;
        Ok(Zeroizing::new(reply.into_inner().plaintext))
    }
}

/// The status message is the KeyService's; it never carries key bytes.
fn refusal(call: &'static str, s: &tonic::Status) -> BackupError {
    BackupError::KeyService { call, code: s.code(), message: s.message().to_owned() }
}

#[cfg(test)]
#[path = "keyservice_tests.rs"]
mod tests;
