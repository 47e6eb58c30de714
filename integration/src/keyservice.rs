//! A KeyService test server: what the orchestrator serves to agents with `[keys] provider = "remote"`,
//! reduced to what backups need, and real where it matters.
//!
//! - tonic over mutual TLS on 127.0.0.1 with an ephemeral port, certificates from [`crate::pki`];
//! - `WrapKey`/`UnwrapKey` with AES-256-GCM (ring) under the server's own random master key, the
//!   request's `purpose` as associated data, so a wrap made for one purpose never unwraps under another;
//! - an allow list of (host, instance): the host is the caller's **client certificate** (issued by
//!   [`KeyServiceHandle::client`] with that common name), never the unauthenticated `host` field of the
//!   request; the instance is parsed from the purpose (`<prefix>/v1/<instance>/<rest>`). A call for an
//!   instance the host is not allowed answers PERMISSION_DENIED, for wrapping and unwrapping alike;
//! - counters of the calls it answered and refused ([`KeyServiceHandle::calls`]).
//!
//! `GetInstanceKey` answers UNIMPLEMENTED: volume keys are not its business.
//!
//! ```ignore
//! let keys = KeyServiceHandle::start(&[("host-1", "pg-a"), ("host-2", "pg-a")]).await;
//! let toml = keys.configure(&agent_toml, "host-1"); // `[keys] provider = "remote"`, `[keys.remote]`
//! // ... agent 1 backs up pg-a; agent 2 (keys.remote_toml("host-2")) restores it ...
//! assert_eq!(keys.calls().unwrap_ok, 1);
//! ```
//!
//! The server stops when the handle drops.

use dbagent_proto::v1 as pb;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tempfile::TempDir;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::config::toml_path;
use crate::pki::{CertAuthority, Validity};

/// The `key_id` of every wrap this server makes: the name of its one master key.
pub const MASTER_KEY_ID: &str = "test-master-1";

/// The files an agent's `[keys.remote]` needs to reach this server as one host.
#[derive(Debug, Clone)]
pub struct RemoteKeyFiles {
    /// `[keys.remote] ca`: the CA the server's certificate chains to.
    pub ca: PathBuf,
    /// `[keys.remote] cert` and `key`: a client certificate whose common name is the host.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How many calls the server answered or refused, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyServiceCalls {
    pub wrap_ok: u64,
    pub unwrap_ok: u64,
    /// Calls refused with PERMISSION_DENIED (host not allowed for the instance, or unknown certificate).
    pub denied: u64,
    /// Calls refused otherwise (malformed purpose, wrong key id, a ciphertext that does not open).
    pub failed: u64,
}

/// A running KeyService; dropping it stops the server and removes its files.
pub struct KeyServiceHandle {
    /// `https://127.0.0.1:PORT`, for `[keys.remote] endpoint`.
    pub endpoint: String,
    /// The CA certificate (PEM file) clients must trust; also the CA of the client certificates.
    pub ca: PathBuf,
    ca_authority: CertAuthority,
    state: Arc<State>,
    dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KeyServiceHandle {
    /// Starts the server with a fresh CA, a fresh random master key and `allow` as the allow list of
    /// (host, instance). Needs a tokio runtime.
    pub async fn start(allow: &[(&str, &str)]) -> Self {
        crate::install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("dbagent-keyservice-").tempdir().expect("create a temp dir");
        let ca_authority = CertAuthority::new("dbagent test KeyService CA");
        let ca = dir.path().join("ca.crt");
        ca_authority.write(&ca);
        let server = ca_authority.server();
        let mut master = [0u8; 32];
        SystemRandom::new().fill(&mut master).expect("random master key");
        let state = Arc::new(State {
            master: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &master).expect("an AES-256 key")),
            allow: Mutex::new(allow.iter().map(|(h, i)| ((*h).to_owned(), (*i).to_owned())).collect()),
            hosts: Mutex::new(HashMap::new()),
            calls: Mutex::new(KeyServiceCalls::default()),
        });
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server.cert_pem, &server.key_pem))
            .client_ca_root(Certificate::from_pem(ca_authority.cert_pem()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let endpoint = format!("https://127.0.0.1:{}", listener.local_addr().expect("local address").port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = pb::key_service_server::KeyServiceServer::new(TestKeyService { state: state.clone() });
        let serve = Server::builder()
            .tls_config(tls)
            .expect("the KeyService's TLS config")
            .add_service(service)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(async move {
            if let Err(e) = serve.await {
                eprintln!("test KeyService stopped: {e}");
            }
        });
        Self { endpoint, ca, ca_authority, state, dir, stop: Some(stop) }
    }

    /// Issues a client certificate for `host` (its common name, which is what the allow list names)
    /// and writes it under the server's folder.
    pub fn client(&self, host: &str) -> RemoteKeyFiles {
        let issued = self.ca_authority.client(host, Validity::Current);
        let der = pem_to_der(&issued.cert_pem);
        let (cert, key) = issued.write(self.dir.path(), &format!("client-{host}"));
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod the key");
        self.state.hosts.lock().expect("hosts lock").insert(der, host.to_owned());
        RemoteKeyFiles { ca: self.ca.clone(), cert, key }
    }

    /// `agent_toml` with `provider = "remote"` in its `[keys]` table (added when missing) and a
    /// `[keys.remote]` table reaching this server as `host` (a new client certificate).
    pub fn configure(&self, agent_toml: &str, host: &str) -> String {
        let files = self.client(host);
        let with_provider = crate::config::with_lines(agent_toml, "keys", "provider = \"remote\"");
        format!(
            "{with_provider}\n[keys.remote]\nendpoint = \"{endpoint}\"\nca = {ca}\ncert = {cert}\nkey = {key}\nserver_name = \"localhost\"\ntimeout_secs = 10\n",
            endpoint = self.endpoint,
            ca = toml_path(&files.ca),
            cert = toml_path(&files.cert),
            key = toml_path(&files.key),
        )
    }

    /// Allows `host` to wrap and unwrap `instance`'s keys from now on.
    pub fn allow(&self, host: &str, instance: &str) {
        self.state.allow.lock().expect("allow lock").insert((host.to_owned(), instance.to_owned()));
    }

    /// The calls answered and refused so far.
    pub fn calls(&self) -> KeyServiceCalls {
        *self.state.calls.lock().expect("calls lock")
    }
}

impl Drop for KeyServiceHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct State {
    master: LessSafeKey,
    allow: Mutex<HashSet<(String, String)>>,
    /// Client certificate (DER) -> host, for the certificates [`KeyServiceHandle::client`] issued.
    hosts: Mutex<HashMap<Vec<u8>, String>>,
    calls: Mutex<KeyServiceCalls>,
}

impl State {
    fn count(&self, f: impl FnOnce(&mut KeyServiceCalls)) {
        f(&mut self.calls.lock().expect("calls lock"));
    }

    /// The host the caller's certificate names, if it may act on the instance `purpose` names.
    fn authorize<T>(&self, request: &Request<T>, purpose: &str) -> Result<(), Status> {
        let Some(instance) = instance_of(purpose) else {
            self.count(|c| c.failed += 1);
            return Err(Status::invalid_argument(format!(
                "purpose {purpose:?} names no instance (<prefix>/v1/<instance>/...)"
            )));
        };
        let host = request.peer_certs().and_then(|chain| {
            chain.first().and_then(|c| self.hosts.lock().expect("hosts lock").get(c.as_ref()).cloned())
        });
        let Some(host) = host else {
            self.count(|c| c.denied += 1);
            return Err(Status::permission_denied("unknown client certificate"));
        };
        if !self.allow.lock().expect("allow lock").contains(&(host.clone(), instance.to_owned())) {
            self.count(|c| c.denied += 1);
            return Err(Status::permission_denied(format!("host {host} may not use the keys of instance {instance}")));
        }
        Ok(())
    }
}

/// `dbagent-backup-data-key/v1/<instance>/<backup>` -> `<instance>`.
fn instance_of(purpose: &str) -> Option<&str> {
    let mut parts = purpose.split('/');
    let (_prefix, version, instance) = (parts.next()?, parts.next()?, parts.next()?);
    (version == "v1" && !instance.is_empty() && parts.next().is_some()).then_some(instance)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    rustls_pemfile::certs(&mut reader).next().expect("one certificate").expect("a PEM certificate").to_vec()
}

struct TestKeyService {
    state: Arc<State>,
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for TestKeyService {
    async fn get_instance_key(
        &self,
        _: Request<pb::GetInstanceKeyRequest>,
    ) -> Result<Response<pb::InstanceKey>, Status> {
        Err(Status::unimplemented("the test KeyService wraps and unwraps only"))
    }

    async fn wrap_key(&self, request: Request<pb::WrapKeyRequest>) -> Result<Response<pb::WrappedKey>, Status> {
        self.state.authorize(&request, &request.get_ref().purpose)?;
        let r = request.into_inner();
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| Status::internal("no randomness"))?;
        let mut sealed = r.plaintext;
        self.state
            .master
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(r.purpose.as_bytes()), &mut sealed)
            .map_err(|_| Status::internal("seal"))?;
        let mut ciphertext = nonce.to_vec();
        ciphertext.extend_from_slice(&sealed);
        self.state.count(|c| c.wrap_ok += 1);
        Ok(Response::new(pb::WrappedKey { key_id: MASTER_KEY_ID.to_owned(), ciphertext }))
    }

    async fn unwrap_key(&self, request: Request<pb::UnwrapKeyRequest>) -> Result<Response<pb::UnwrappedKey>, Status> {
        self.state.authorize(&request, &request.get_ref().purpose)?;
        let r = request.into_inner();
        if r.key_id != MASTER_KEY_ID {
            self.state.count(|c| c.failed += 1);
            return Err(Status::not_found(format!("no master key {:?}", r.key_id)));
        }
        let opened = (r.ciphertext.len() > NONCE_LEN)
            .then(|| {
                let (nonce, sealed) = r.ciphertext.split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let mut sealed = sealed.to_vec();
                let n =
                    self.state.master.open_in_place(nonce, Aad::from(r.purpose.as_bytes()), &mut sealed).ok()?.len();
                sealed.truncate(n);
                Some(sealed)
            })
            .flatten();
        let Some(plaintext) = opened else {
            self.state.count(|c| c.failed += 1);
            return Err(Status::invalid_argument("the ciphertext does not open under this purpose"));
        };
        self.state.count(|c| c.unwrap_ok += 1);
        Ok(Response::new(pb::UnwrappedKey { plaintext }))
    }
}

#[cfg(test)]
mod tests {
    use super::instance_of;

    #[test]
    fn the_instance_is_the_third_part_of_the_purpose() {
        assert_eq!(instance_of("dbagent-backup-data-key/v1/pg-a/pg-a-20260101"), Some("pg-a"));
        assert_eq!(instance_of("dbagent-backup-data-key/v1/pg-a"), None, "a purpose needs a part after the instance");
        assert_eq!(instance_of("dbagent-backup-data-key/v2/pg-a/b"), None);
        assert_eq!(instance_of("dbagent-backup-data-key/v1//b"), None);
    }
}
