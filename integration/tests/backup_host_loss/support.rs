//! What the host-loss tests share: the hosts' agent configs (three Garage buckets, the engines'
//! connections, the key source), the engines' data and checksums, the API calls, and the two
//! off-host key sources.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::config::{custom_config, toml_path};
use dbagent_integration::garage::{Garage, KEY_ID, REGION, SECRET};
use dbagent_integration::keyservice::KeyServiceHandle;
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::servers::{MariaServer, PG_BIN, PgServer, RedisServer, run_as};
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    BackupMethod, Engine, ListBackupsRequest, ListBackupsResponse, Operation, OperationState, RegisterInstanceRequest,
    StartBackupRequest, WatchOperationRequest,
};
use tonic::transport::Channel;

pub const OP_TIMEOUT: Duration = Duration::from_secs(180);

/// Where each engine's server of one host is, for the agent's config.
#[derive(Default, Clone)]
pub struct Servers {
    pub pg_port: Option<u16>,
    pub maria_port: Option<u16>,
    pub redis_port: Option<u16>,
}

/// The off-host key source agent 2 is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The orchestrator's KeyService (a test server over mTLS); the agent has no recovery key.
    KeyService,
    /// The operator's age identity, given in each verify and restore request.
    RecoveryKey,
}

/// What differs between the hosts' agents.
pub struct Host {
    pub pki: Rc<ServerPki>,
    pub garage_endpoint: String,
    pub buckets: Vec<String>,
    /// The agent's own KEK: this byte 32 times.
    pub kek_byte: u8,
    pub data_roots: Vec<PathBuf>,
    pub servers: Servers,
    /// The key source lines of `[keys]`.
    pub keys: String,
}

impl Host {
    pub fn new(
        garage: &Garage,
        pki: &Rc<ServerPki>,
        kek_byte: u8,
        data_roots: Vec<PathBuf>,
        servers: Servers,
        keys: String,
    ) -> Self {
        Self {
            pki: pki.clone(),
            garage_endpoint: garage.endpoint(),
            buckets: garage.buckets.clone(),
            kek_byte,
            data_roots,
            servers,
            keys,
        }
    }

    pub fn start(self) -> Agent {
        AgentBuilder::config(move |ctx: &LaunchContext| agent_config(ctx, &self)).start()
    }
}

/// An agent's TOML: its own KEK file, the data roots, the three buckets as `s3` destinations, the
/// engines' connections and the key source.
pub fn agent_config(ctx: &LaunchContext, host: &Host) -> String {
    let Host { pki, garage_endpoint, buckets, kek_byte, data_roots, servers, keys } = host;
    let kek_byte = *kek_byte;
    let files = pki.write(&ctx.work_dir.join("pki"));
    let kek = ctx.work_dir.join("kek");
    std::fs::write(&kek, [kek_byte; 32]).expect("write the KEK");
    std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod the KEK");
    let mut toml = format!(
        "{base}\n[keys]\nkek_file = {kek}\n{keys}\n\n[instances]\ndata_roots = [{roots}]\n\n[backup]\nscheduler_interval_secs = 3600\npart_size = 5242880\n{zones}",
        base = custom_config(ctx, &files, &[], &["orchestrator"], &["monitor"]),
        // The three buckets stand for three zones but are served from this host's loopback: said
        // in so many words, as production requires.
        zones = "accept_on_host_destinations = true\n",
        kek = toml_path(&kek),
        roots = data_roots.iter().map(|r| toml_path(r)).collect::<Vec<_>>().join(", "),
    );
    for (i, bucket) in buckets.iter().enumerate() {
        let _ = write!(
            toml,
            "\n[[backup.destinations]]\nkind = \"s3\"\nname = \"az{n}\"\nbucket = \"{bucket}\"\nendpoint = \"{garage_endpoint}\"\nregion = \"{REGION}\"\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SECRET}\"\nallow_http = true\n",
            n = i + 1,
        );
    }
    if let Some(port) = servers.pg_port {
        let _ = write!(
            toml,
            "\n[backup.postgresql]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\ndatabase = \"bench\"\nbin_dir = {bin}\n",
            bin = toml_path(Path::new(PG_BIN)),
        );
    }
    if let Some(port) = servers.maria_port {
        // The tenant's database: the system schema is the new server's own.
        let _ = write!(
            toml,
            "\n[backup.mariadb]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\ndatabase = \"shop\"\n"
        );
    }
    if let Some(port) = servers.redis_port {
        let _ = write!(toml, "\n[backup.redis]\nhost = \"127.0.0.1\"\nport = {port}\n");
    }
    toml
}

// --- the engines' data and checksums -------------------------------------------------------------

/// pgbench data (scale 2) and a table holding the checksum of pgbench_accounts taken before the
/// backup; returns the fingerprint of every pgbench table.
pub fn seed_postgres(pg: &PgServer) -> String {
    pg.psql("postgres", "CREATE DATABASE bench");
    let port = pg.port.to_string();
    run_as(
        "postgres",
        &format!("{PG_BIN}/pgbench"),
        &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-i", "-s", "2", "-q", "bench"],
    );
    pg.psql("bench", &format!("CREATE TABLE checksum AS SELECT ({PG_ACCOUNTS_MD5}) AS accounts_md5"));
    pg.pgbench_fingerprint("bench")
}

pub const PG_ACCOUNTS_MD5: &str = "SELECT md5(string_agg(a::text, ',' ORDER BY a.aid)) FROM pgbench_accounts a";

/// The fingerprint, and that the checksum table matches the accounts as restored.
pub fn check_postgres(pg: &PgServer, expected: &str) {
    assert_eq!(pg.pgbench_fingerprint("bench"), expected);
    let stored = pg.psql("bench", "SELECT accounts_md5 FROM checksum");
    assert_eq!(pg.psql("bench", PG_ACCOUNTS_MD5), stored, "the checksum table matches the restored rows");
}

pub const MARIA_CHECK: &str =
    "SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(':', id, v, n) ORDER BY id SEPARATOR ',')) FROM shop.items";

/// 5,000 InnoDB rows in shop.items; returns their [`MARIA_CHECK`].
pub fn seed_mariadb(server: &MariaServer) -> String {
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64), n DOUBLE) ENGINE=InnoDB");
    server.sql("INSERT INTO shop.items (v, n) SELECT MD5(seq), seq / 7 FROM shop.seq_1_to_5000");
    server.sql("SET GLOBAL innodb_fast_shutdown = 0");
    let check = server.sql(MARIA_CHECK);
    assert!(check.starts_with("5000\t"), "{check}");
    check
}

/// 1,000 strings and a list.
pub fn seed_redis(server: &RedisServer) -> String {
    for i in 0..1000 {
        server.cli(&["SET", &format!("key:{i}"), &format!("value-{}", i * 31)]);
    }
    server.cli(&["RPUSH", "list", "a", "b", "c"]);
    redis_digest(server)
}

/// Every key with its value, sorted by key: a digest of the whole data set.
pub fn redis_digest(server: &RedisServer) -> String {
    let mut keys: Vec<String> = server.cli(&["--raw", "KEYS", "*"]).lines().map(str::to_owned).collect();
    keys.sort();
    let mut out = String::new();
    for key in keys {
        let value = match server.cli(&["TYPE", &key]).as_str() {
            "list" => server.cli(&["--raw", "LRANGE", &key, "0", "-1"]),
            _ => server.cli(&["--raw", "GET", &key]),
        };
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

// --- the API -------------------------------------------------------------------------------------

pub struct Client {
    pub channel: Channel,
}

impl Client {
    pub async fn connect(agent: &Agent, pki: &ServerPki) -> Self {
        let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
        Self { channel: agent.channel(&orchestrator).await }
    }

    pub fn backups(&self) -> BackupsClient<Channel> {
        BackupsClient::new(self.channel.clone())
    }

    pub async fn register(&self, agent: &Agent, id: &str, engine: Engine, os_user: &str, data_dir: &Path) {
        let mut spec = instance_spec(id, Path::new("/unused"));
        spec.engine = engine as i32;
        spec.engine_version = match engine {
            Engine::Mariadb => "10.11",
            Engine::Redis => "7.0",
            _ => "15",
        }
        .into();
        spec.os_user = os_user.into();
        spec.systemd_unit = format!("dbagent-test-{id}.service");
        spec.data_dir = data_dir.to_string_lossy().into_owned();
        // No scheduled backups beside the test's own.
        spec.backup_policy = None;
        InstancesClient::new(self.channel.clone())
            .register_instance(RegisterInstanceRequest {
                request_id: format!("reg-{id}"),
                id: id.into(),
                spec: Some(spec),
            })
            .await
            .unwrap_or_else(|s| panic!("RegisterInstance {id}: {s:?}\n{}", agent.log()));
    }

    pub async fn backup(&self, agent: &Agent, id: &str, method: BackupMethod) -> String {
        let op = self
            .backups()
            .start_backup(StartBackupRequest {
                request_id: format!("backup-{id}"),
                instance_id: id.into(),
                method: method as i32,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("StartBackup {id}: {s:?}\n{}", agent.log()))
            .into_inner();
        let done = self.finish(agent, &op).await;
        assert_eq!(state_of(&done), OperationState::Succeeded, "{id}: {:?}\n{}", done.error, agent.log());
        let result: serde_json::Value = serde_json::from_str(&done.result_json).expect("result_json is JSON");
        assert_eq!(result["state"], "complete", "{}", done.result_json);
        result["backup_id"].as_str().expect("backup_id").to_owned()
    }

    pub async fn list_found(&self, instance_id: &str) -> ListBackupsResponse {
        self.backups()
            .list_backups(ListBackupsRequest { instance_id: instance_id.into(), from_destinations: true })
            .await
            .unwrap_or_else(|s| panic!("ListBackups from_destinations {instance_id:?}: {s:?}"))
            .into_inner()
    }

    /// Follows the operation to its end.
    pub async fn finish(&self, agent: &Agent, op: &Operation) -> Operation {
        let mut stream = OperationsClient::new(self.channel.clone())
            .watch_operation(WatchOperationRequest { id: op.id.clone() })
            .await
            .unwrap_or_else(|s| panic!("WatchOperation {}: {s:?}", op.id))
            .into_inner();
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut last = op.clone();
        while !matches!(state_of(&last), OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled)
        {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, stream.message()).await {
                Ok(Ok(Some(next))) => last = next,
                Ok(Ok(None)) => break,
                Ok(Err(s)) => panic!("WatchOperation {} broke: {s:?}", op.id),
                Err(_) => panic!("operation {} ({}) did not finish: {last:?}\n{}", op.id, op.kind, agent.log()),
            }
        }
        last
    }

    pub async fn succeed(&self, agent: &Agent, op: &Operation) -> Operation {
        let done = self.finish(agent, op).await;
        assert_eq!(state_of(&done), OperationState::Succeeded, "{}: {:?}\n{}", done.kind, done.error, agent.log());
        done
    }
}

pub fn state_of(op: &Operation) -> OperationState {
    OperationState::try_from(op.state).unwrap_or(OperationState::Unspecified)
}

// --- the off-host key sources --------------------------------------------------------------------

/// The two off-host key sources, made once for both hosts: a KeyService test server over mTLS
/// (both hosts allowed for the test's instances, each by its client certificate) and an operator's
/// age identity (`age-keygen`) whose recipient agent 1 seals every data key to.
pub struct OffHostKeys {
    pub service: KeyServiceHandle,
    pub identity: Vec<u8>,
    pub recipient: String,
    pub _dir: tempfile::TempDir,
}

/// The wrappers agent 1 must have sealed each backup's data key with (names of h-K's format 3).
pub const KEYSERVICE_WRAPPER: &str = "keyservice-v1";
pub const RECOVERY_WRAPPER: &str = "age-x25519-v1";

impl OffHostKeys {
    pub async fn start(instances: &[&str]) -> Self {
        let allow: Vec<(&str, &str)> =
            ["host-1", "host-2"].iter().flat_map(|h| instances.iter().map(move |i| (*h, *i))).collect();
        let service = KeyServiceHandle::start(&allow).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("recovery.age");
        let out = std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(&file)
            .output()
            .expect("run age-keygen (apt-get install age)");
        assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
        let identity = std::fs::read(&file).expect("read the identity");
        let recipient = String::from_utf8_lossy(&identity)
            .lines()
            .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
            .expect("age-keygen writes the public key as a comment");
        Self { service, identity, recipient, _dir: dir }
    }

    /// `[keys]` lines of agent 1: the KeyService as key provider, and the recovery recipient.
    pub fn writer_config(&self) -> String {
        format!("recovery_recipients = [\"{}\"]\n{}", self.recipient, self.remote("host-1"))
    }

    /// `[keys]` lines of agent 2 with `source` only: the KeyService, or nothing (its own new KEK;
    /// the recovery key comes with each request).
    pub fn reader_config(&self, source: KeySource) -> String {
        match source {
            KeySource::KeyService => self.remote("host-2"),
            KeySource::RecoveryKey => String::new(),
        }
    }

    /// `provider = "remote"` and the `[keys.remote]` table, for `host`'s client certificate.
    pub fn remote(&self, host: &str) -> String {
        // The lines `configure` adds to an empty config, without the `[keys]` header ours has.
        self.service.configure("", host).replacen("\n[keys]\n", "\n", 1)
    }

    /// What a verify or restore request of agent 2 carries: the recovery key's identity file.
    pub fn request_key(&self, source: KeySource) -> Vec<u8> {
        match source {
            KeySource::KeyService => Vec::new(),
            KeySource::RecoveryKey => self.identity.clone(),
        }
    }
}
