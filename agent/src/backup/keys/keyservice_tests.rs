//! The KeyService wrap against an in-process KeyService on 127.0.0.1 with mutual TLS (dev PKI).
//! The stand-in binds a wrap to its purpose in the clear (purpose ‖ 0 ‖ key): enough to show what
//! the agent sends and that a wrap presented for another backup is refused; the real binding
//! (AES-GCM with the purpose as AAD) is the integration test server's.

use super::*;
use crate::backup::BackupKeys;
use crate::backup::keywrap::KekWrapper;
use crate::backup::manifest::Manifest;
use crate::error::{ErrorCode, HasErrorCode};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct StandIn {
    /// The `host` of every WrapKey, shared with the test.
    hosts: Arc<Mutex<Vec<String>>>,
    refuse_wrap: bool,
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for StandIn {
    async fn get_instance_key(
        &self,
        _: Request<pb::GetInstanceKeyRequest>,
    ) -> Result<Response<pb::InstanceKey>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn wrap_key(&self, req: Request<pb::WrapKeyRequest>) -> Result<Response<pb::WrappedKey>, Status> {
        let r = req.into_inner();
        self.hosts.lock().unwrap().push(r.host);
        if self.refuse_wrap {
            return Err(Status::permission_denied("this host may not wrap keys of that instance"));
        }
        let mut ciphertext = r.purpose.into_bytes();
        ciphertext.push(0);
        ciphertext.extend_from_slice(&r.plaintext);
        Ok(Response::new(pb::WrappedKey { key_id: "stand-in-1".into(), ciphertext }))
    }
    async fn unwrap_key(&self, req: Request<pb::UnwrapKeyRequest>) -> Result<Response<pb::UnwrappedKey>, Status> {
        let r = req.into_inner();
        let prefix = [r.purpose.as_bytes(), &[0]].concat();
        match r.ciphertext.strip_prefix(prefix.as_slice()) {
            Some(key) if r.key_id == "stand-in-1" => Ok(Response::new(pb::UnwrappedKey { plaintext: key.to_vec() })),
            _ => Err(Status::invalid_argument("the ciphertext does not open under this purpose")),
        }
    }
}

async fn serve(service: StandIn) -> (KeyServiceWrapper, tempfile::TempDir) {
    let (config, dir, _server) = crate::keyservice_client::serve_for_tests(service).await;
    (KeyServiceWrapper::connect(&config, "host-a".into()).unwrap(), dir)
}

#[tokio::test]
async fn a_keyservice_wrap_names_the_host_and_opens_only_for_its_instance_and_backup() {
    let service = StandIn::default();
    let hosts = service.hosts.clone();
    let (ks, _dir) = serve(service).await;
    let wrap = ks.wrap("i1", "b1", &[9u8; 32]).await.unwrap();
    assert_eq!(*hosts.lock().unwrap(), ["host-a"], "WrapKey names the agent's host");
    assert_eq!((wrap.wrapper.as_str(), wrap.key_id.as_str()), (KEYSERVICE_WRAPPER, "stand-in-1"));
    assert_eq!(ks.unwrap("i1", "b1", &wrap).await.unwrap().as_slice(), [9u8; 32]);
    // Presented for another backup or another instance, the purpose differs and the wrap is refused.
    for (instance, backup) in [("i1", "b2"), ("i2", "b1")] {
        let e = ks.unwrap(instance, backup, &wrap).await.unwrap_err();
        assert!(matches!(&e, BackupError::KeyService { call: "UnwrapKey", .. }), "{e:?}");
        assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    }
}

#[tokio::test]
async fn a_keyservice_refusal_fails_the_wrap_of_a_backup_with_its_reason() {
    let service = StandIn { refuse_wrap: true, ..StandIn::default() };
    let (ks, _dir) = serve(service).await;
    let keys = BackupKeys::host_only(Arc::new(KekWrapper::from_kek(&[7u8; 32]).unwrap())).with_keyservice(ks);
    let e = keys.wrap_all("i1", "b1", &[9u8; 32]).await.unwrap_err();
    assert!(e.to_string().contains("WrapKey") && e.to_string().contains("may not wrap"), "{e}");
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    // The same keys open a manifest whose KEK wrap they made, with no KeyService call needed.
    let mut m = Manifest::for_tests("i1", "b1");
    m.key_wraps = BackupKeys::host_only(Arc::new(KekWrapper::from_kek(&[7u8; 32]).unwrap()))
        .wrap_all("i1", "b1", &[9u8; 32])
        .await
        .unwrap();
    assert_eq!(keys.unwrap(&m).await.unwrap().as_slice(), [9u8; 32]);
}
