//! The client against an in-process KeyService on 127.0.0.1 with mutual TLS (dev PKI).

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct FakeKeyService {
    keys: Mutex<HashMap<(String, u32), Vec<u8>>>,
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for FakeKeyService {
    async fn get_instance_key(
        &self,
        req: Request<pb::GetInstanceKeyRequest>,
    ) -> Result<Response<pb::InstanceKey>, Status> {
        assert!(req.peer_certs().is_some_and(|c| !c.is_empty()), "the client presented no certificate");
        let r = req.into_inner();
        let mut keys = self.keys.lock().unwrap();
        let entry = (r.instance_id.clone(), r.key_version);
        let key = match keys.get(&entry) {
            Some(k) => k.clone(),
            None if r.create => {
                let k = vec![r.key_version as u8; (r.key_bits / 8) as usize];
                keys.insert(entry, k.clone());
                k
            }
            None => return Err(Status::not_found("no such key")),
        };
        Ok(Response::new(pb::InstanceKey { instance_id: r.instance_id, key_version: r.key_version, key }))
    }
    async fn wrap_key(&self, _: Request<pb::WrapKeyRequest>) -> Result<Response<pb::WrappedKey>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn unwrap_key(&self, _: Request<pb::UnwrapKeyRequest>) -> Result<Response<pb::UnwrappedKey>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

#[tokio::test]
async fn gets_and_creates_keys_over_mtls() {
    let (config, _dir, server) = crate::keyservice_client::serve_for_tests(FakeKeyService::default()).await;
    let read = |f: &str| std::fs::read(config.ca.with_file_name(f)).unwrap();
    let keys = RemoteKeys::connect(&config, "host-a".into()).unwrap();
    let e = keys.key("pg-1", 1, false, 256).await.unwrap_err();
    assert!(matches!(e, KeyError::Missing { .. }), "{e}");
    let k = keys.key("pg-1", 1, true, 256).await.unwrap();
    assert_eq!(k.as_bytes(), &[1u8; 32]);
    assert_eq!(keys.key("pg-1", 1, false, 256).await.unwrap().as_bytes(), k.as_bytes());
    let e = keys.key("pg-1", 1, false, 512).await.unwrap_err();
    assert!(
        matches!(e, KeyError::WrongAnswer { bits: 512, got_bits: 256, .. }),
        "a key of the wrong size is refused: {e}"
    );

    // Without a client certificate the server refuses the connection.
    let no_client =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.crt"))).domain_name("localhost");
    let channel = Endpoint::from_shared(config.endpoint.clone()).unwrap().tls_config(no_client).unwrap().connect_lazy();
    let anonymous = RemoteKeys { client: pb::key_service_client::KeyServiceClient::new(channel), host: "x".into() };
    let e = anonymous.key("pg-1", 1, false, 256).await.unwrap_err();
    assert!(matches!(e, KeyError::Service { .. }), "{e}");
    assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::Unavailable);
    server.abort();
}
