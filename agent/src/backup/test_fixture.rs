//! The service against `dir` destinations with stand-in tools, so the service tests run without
//! any database server. The stand-ins live in one `bin` folder used as every engine's `bin_dir`:
//! - `redis-cli` and `pg_dump` print `dump.bin`; asked for their data directory (`CONFIG GET dir`,
//!   `psql ... SHOW data_directory`) they print the folder in `served`.
//! - `pg_restore` copies its stdin to `restored.bin` and its arguments to `restore.args`; `psql`
//!   asked for a database's owner names `shop_owner`.
//! - Files switch faults on: `flood-stderr` (1 MiB of stderr before the dump), `fail-dump`,
//!   `fail-query` and `fail-restore` (exit 3 / 1 with a reason on stderr).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use super::settings::DestinationConfig;
use super::{BackupConfig, BackupKeys, BackupService, KekWrapper};
use crate::instances::{Engine, Instance, PlanName, fixtures};
use crate::locks::ResourceLocks;
use crate::ops::{self, OperationRecord, OpsSettings};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub engine: ops::OperationEngine,
    pub data: Vec<u8>,
}

const DUMP_TOOL: &str = r#"#!/bin/sh
cd "$(dirname "$0")/.."
[ -f flood-stderr ] && head -c 1048576 /dev/zero | tr '\0' w >&2
[ -f fail-dump ] && { echo "$(basename "$0"): THE-DUMP-REASON" >&2; exit 3; }
exec cat dump.bin
"#;

const QUERY_TOOL: &str = r#"#!/bin/sh
cd "$(dirname "$0")/.."
[ -f fail-query ] && { echo "Could not connect to the server" >&2; exit 1; }
exec cat served
"#;

/// Asked for a database's owner it names `shop_owner`; otherwise the data directory query.
const PSQL_TOOL: &str = r#"#!/bin/sh
case "$*" in *datdba*) echo shop_owner; exit 0;; esac
exec "$(dirname "$0")/query"
"#;

const RESTORE_TOOL: &str = r#"#!/bin/sh
cd "$(dirname "$0")/.."
echo "$@" > restore.args
cat > restored.bin
[ -f fail-restore ] && { echo "pg_restore: error: THE-RESTORE-REASON" >&2; exit 1; }
exit 0
"#;

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = ops::OperationEngine::open(
            &dir.path().join("ops"),
            OpsSettings { max_concurrent: 4, retention: Duration::from_secs(3600), max_finished: 100 },
            ResourceLocks::default(),
            CancellationToken::new(),
        )
        .unwrap();
        // Compressible but not trivial: 3 MiB, several chunks of 64 KiB once compressed.
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| ((i / 7) ^ (i >> 11)) as u8).collect();
        std::fs::write(dir.path().join("dump.bin"), &data).unwrap();
        // The instance's folder, unless a test changes it (redis-cli prints `dir` first).
        std::fs::write(dir.path().join("served"), "dir\n/srv/db/r1\n").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let redis = "#!/bin/sh\ncase \"$*\" in *'CONFIG GET dir'*) exec \"$(dirname \"$0\")/query\";; esac\nexec \"$(dirname \"$0\")/dump\"\n";
        for (name, script) in [
            ("dump", DUMP_TOOL),
            ("query", QUERY_TOOL),
            ("redis-cli", redis),
            ("pg_dump", "#!/bin/sh\nexec \"$(dirname \"$0\")/dump\"\n"),
            ("psql", PSQL_TOOL),
            ("pg_restore", RESTORE_TOOL),
        ] {
            std::fs::write(bin.join(name), script).unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { dir, engine, data }
    }

    /// Switches a fault of the stand-in tools on (see the module comment).
    pub fn fault(&self, name: &str) {
        std::fs::write(self.dir.path().join(name), b"").unwrap();
    }

    pub fn clear_fault(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    pub fn config(&self, broken: Option<&str>) -> BackupConfig {
        // Three folders on the test's disk: on the host, said in so many words (`zones.rs`).
        let mut c = BackupConfig { chunk_size: 64 << 10, accept_on_host_destinations: true, ..BackupConfig::default() };
        c.redis.bin_dir = self.dir.path().join("bin");
        c.postgresql.bin_dir = self.dir.path().join("bin");
        for az in ["az1", "az2", "az3"] {
            let path = if broken == Some(az) {
                self.dir.path().join("dump.bin/x")
            } else {
                self.dir.path().join("dest").join(az)
            };
            c.destinations.push(DestinationConfig::Dir { name: az.into(), path });
        }
        c
    }

    pub fn service(&self, broken: Option<&str>, key: u8) -> Arc<BackupService> {
        self.service_with(broken, BackupKeys::host_only(Arc::new(KekWrapper::from_kek(&[key; 32]).unwrap())))
    }

    pub fn service_with(&self, broken: Option<&str>, keys: BackupKeys) -> Arc<BackupService> {
        // The fixture's folder is the data root: restores go into folders below it.
        let roots = vec![self.dir.path().to_path_buf()];
        BackupService::new(self.config(broken), self.dir.path(), keys, roots, self.engine.clone()).unwrap()
    }

    pub fn data_file(&self, az: &str, b: &str) -> PathBuf {
        self.dir.path().join("dest").join(az).join("r1").join(b).join("data")
    }

    pub async fn wait(&self, op: &OperationRecord) -> OperationRecord {
        let mut rx = self.engine.watch(&op.id).unwrap();
        loop {
            let r = rx.borrow_and_update().clone();
            if r.state.is_finished() {
                return r;
            }
            tokio::time::timeout(Duration::from_secs(30), rx.changed()).await.unwrap().unwrap();
        }
    }
}

/// Instance `r1`: Redis, served from `/srv/db/r1`, a unit that is never active.
pub fn instance(plan: PlanName) -> Instance {
    let mut spec = fixtures::spec("r1");
    spec.engine = Engine::Redis;
    spec.os_user = String::new();
    spec.systemd_unit = "dbagent-test-never-active.service".into();
    spec.plan.name = plan;
    Instance { id: "r1".into(), spec, created: SystemTime::now(), updated: SystemTime::now(), generation: 1 }
}

/// `r1` as a PostgreSQL instance (same id, same folder): logical backups go through `pg_dump`,
/// restores into its server through `pg_restore`.
pub fn postgres_instance() -> Instance {
    let mut i = instance(PlanName::Starter);
    i.spec.engine = Engine::Postgresql;
    i
}

pub fn backup_id(op: &OperationRecord) -> String {
    op.result.as_ref().unwrap()["backup_id"].as_str().unwrap().to_owned()
}
