//! Backup data keys held off the host (docs/backups.md, "Key hierarchy"): the KeyService test server
//! itself, then real agents that restore with nothing from the host that made the backup.

use dbagent_integration::keyservice::{KeyServiceHandle, MASTER_KEY_ID, RemoteKeyFiles};
use dbagent_proto::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

async fn keyservice_client(keys: &KeyServiceHandle, files: &RemoteKeyFiles) -> KeyServiceClient<Channel> {
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)))
        .identity(Identity::from_pem(read(&files.cert), read(&files.key)))
        .domain_name("localhost");
    let channel =
        Endpoint::from_shared(keys.endpoint.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    KeyServiceClient::new(channel)
}

fn wrap(purpose: &str, plaintext: &[u8]) -> pb::WrapKeyRequest {
    pb::WrapKeyRequest { host: "ignored".into(), purpose: purpose.into(), plaintext: plaintext.to_vec() }
}

fn unwrap(purpose: &str, wrapped: &pb::WrappedKey) -> pb::UnwrapKeyRequest {
    pb::UnwrapKeyRequest {
        host: "ignored".into(),
        purpose: purpose.into(),
        key_id: wrapped.key_id.clone(),
        ciphertext: wrapped.ciphertext.clone(),
    }
}

#[tokio::test]
async fn keyservice_test_server_binds_wraps_to_their_purpose_and_enforces_its_allow_list() {
    let keys = KeyServiceHandle::start(&[("host-1", "pg-a"), ("host-1", "pg-b"), ("host-2", "pg-a")]).await;
    let (mut host1, mut host2) = (
        keyservice_client(&keys, &keys.client("host-1")).await,
        keyservice_client(&keys, &keys.client("host-2")).await,
    );
    let (purpose_a, purpose_b) = ("dbagent-backup-data-key/v1/pg-a/b1", "dbagent-backup-data-key/v1/pg-b/b1");
    let key = [7u8; 32];

    let wrapped_a = host1.wrap_key(wrap(purpose_a, &key)).await.unwrap().into_inner();
    assert_eq!(wrapped_a.key_id, MASTER_KEY_ID);
    assert!(!wrapped_a.ciphertext.windows(key.len()).any(|w| w == key), "the key is not in the ciphertext in clear");
    let wrapped_b = host1.wrap_key(wrap(purpose_b, &key)).await.unwrap().into_inner();

    // Another host allowed for pg-a unwraps pg-a's key.
    let plain = host2.unwrap_key(unwrap(purpose_a, &wrapped_a)).await.unwrap().into_inner().plaintext;
    assert_eq!(plain, key);
    // ... but not pg-b's, which it is not allowed.
    let refused = host2.unwrap_key(unwrap(purpose_b, &wrapped_b)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("host-2") && refused.message().contains("pg-b"), "{refused:?}");
    // pg-b's wrap presented under pg-a's purpose does not open: the purpose is the associated data.
    let moved = host2.unwrap_key(unwrap(purpose_a, &wrapped_b)).await.unwrap_err();
    assert_eq!(moved.code(), tonic::Code::InvalidArgument, "{moved:?}");
    // Allowed later, it does.
    keys.allow("host-2", "pg-b");
    assert_eq!(host2.unwrap_key(unwrap(purpose_b, &wrapped_b)).await.unwrap().into_inner().plaintext, key);

    let calls = keys.calls();
    assert_eq!((calls.wrap_ok, calls.unwrap_ok, calls.denied, calls.failed), (2, 2, 1, 1), "{calls:?}");
}
