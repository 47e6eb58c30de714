//! The `remote` key provider: a client of `dbagent.v1.KeyService`, which the orchestrator serves,
//! over mutual TLS. The orchestrator owns the keys' lifecycle; this client only asks for them.

use dbagent_proto::v1 as pb;
use zeroize::Zeroizing;

use super::key::{KeyError, KeyProvider, VolumeKey};
use crate::config::RemoteKeysConfig;
use crate::keyservice_client::{self, KeyServiceChannelError, KeyServiceClient};

pub struct RemoteKeys {
    client: KeyServiceClient,
    host: String,
}

impl RemoteKeys {
    /// Prepares a lazily connecting channel (`keyservice_client::connect`): the KeyService being
    /// down at start-up is reported per volume, not as a failed agent start.
    pub fn connect(config: &RemoteKeysConfig, host: String) -> Result<Self, KeyError> {
        let client = keyservice_client::connect(config).map_err(|e| match e {
            KeyServiceChannelError::Io { context, source } => KeyError::Io { context, source },
            KeyServiceChannelError::Endpoint { endpoint, source } => KeyError::Endpoint { endpoint, source },
        })?;
        Ok(Self { client, host })
    }
}

#[tonic::async_trait]
impl KeyProvider for RemoteKeys {
    fn name(&self) -> &'static str {
        "remote"
    }

    async fn key(&self, instance: &str, version: u32, create: bool, bits: u32) -> Result<VolumeKey, KeyError> {
        let request = pb::GetInstanceKeyRequest {
            host: self.host.clone(),
            instance_id: instance.to_owned(),
            key_bits: bits,
            create,
            key_version: version,
        };
        let reply = match self.client.clone().get_instance_key(request).await {
            Ok(reply) => reply.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(KeyError::Missing { provider: "remote", instance: instance.to_owned(), version });
            }
            // The status message is the server's; it never carries key bytes.
            Err(s) => return Err(KeyError::Service { code: s.code(), message: s.message().to_owned() }),
        };
        let key = Zeroizing::new(reply.key);
        if reply.instance_id != instance || reply.key_version != version || key.len() * 8 != bits as usize {
            return Err(KeyError::WrongAnswer {
                instance: instance.to_owned(),
                version,
                bits,
                got_instance: reply.instance_id,
                got_version: reply.key_version,
                got_bits: u32::try_from(key.len() * 8).unwrap_or(u32::MAX),
            });
        }
        Ok(VolumeKey::new(key))
    }

    async fn forget(&self, instance: &str, keep: Option<u32>) -> Result<(), KeyError> {
        tracing::debug!(instance, ?keep, "remote key provider: the orchestrator retires old key versions");
        Ok(())
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
