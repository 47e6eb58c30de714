//! The engine side of a plan change, behind a small trait: read a setting from the running
//! server, set a dynamic one, write the settings that wait for a restart. The real one talks to the
//! server with its client tools as the instance's user (the backup conventions,
//! `backup::engine_commands`) and writes PostgreSQL's file beneath `/etc/postgresql` through
//! directory handles; the in-memory one serves the unit tests.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::PlanError;
use super::engine_settings::{EngineSetting, mariadb_cnf, postgresql_conf};
use crate::backup::engine_commands::statement_tool;
use crate::backup::settings::BackupConfig;
use crate::beneath::DirHandle;
use crate::instances::{Engine, Instance};

/// The file the agent owns in a Debian PostgreSQL cluster's `conf.d` (read last: `90-`).
pub const POSTGRESQL_FILE: &str = "90-dbagent-plan.conf";

#[async_trait::async_trait]
pub trait EngineControl: Send + Sync {
    /// The running server's value of `setting`, as a number (bytes or a count).
    async fn read(&self, instance: &Instance, setting: &str) -> Result<u64, PlanError>;
    /// Sets a dynamic setting in the running server.
    async fn set_runtime(&self, instance: &Instance, setting: &EngineSetting) -> Result<(), PlanError>;
    /// Writes the settings that take effect at the next start; returns where.
    async fn write_for_restart(&self, instance: &Instance, settings: &[EngineSetting]) -> Result<PathBuf, PlanError>;
    /// Keeps the settings set at runtime for the server's next start (MariaDB: the agent's file in
    /// its `conf.d`; Redis: `CONFIG REWRITE` of the server's own config file); returns where.
    async fn keep_for_next_start(&self, instance: &Instance, settings: &[EngineSetting]) -> Result<String, PlanError>;
}

/// The real engines. `postgresql_config_root` is `/etc/postgresql`, `mariadb_config_dir`
/// `/etc/mysql/mariadb.conf.d` (a test points them elsewhere).
pub struct ToolEngineControl {
    pub backup: BackupConfig,
    pub data_roots: Vec<PathBuf>,
    pub postgresql_config_root: PathBuf,
    pub mariadb_config_dir: PathBuf,
}

/// The file the agent owns for one MariaDB instance in `plans.mariadb_config_dir`.
pub fn mariadb_file(instance: &str) -> String {
    format!("90-dbagent-plan-{instance}.cnf")
}

fn read_statement(engine: Engine, setting: &str) -> String {
    match (engine, setting) {
        (Engine::Postgresql, "shared_buffers") => "SELECT pg_size_bytes(current_setting('shared_buffers'))".into(),
        (Engine::Postgresql, name) => format!("SELECT current_setting('{name}')"),
        (Engine::Mariadb, name) => format!("SELECT @@{name}"),
        (Engine::Redis, name) => format!("CONFIG GET {name}"),
    }
}

/// `None`: the engine takes none of the plan's settings at runtime (PostgreSQL's need a restart).
fn set_statement(engine: Engine, s: &EngineSetting) -> Option<String> {
    match engine {
        Engine::Mariadb => Some(format!("SET GLOBAL {} = {}", s.name, s.value)),
        Engine::Redis => Some(format!("CONFIG SET {} {}", s.name, s.value)),
        Engine::Postgresql => None,
    }
}

/// `postgresql@15-main.service` -> (`15`, `main`): Debian's cluster units.
pub fn debian_cluster(unit: &str) -> Option<(&str, &str)> {
    let rest = unit.strip_suffix(".service").unwrap_or(unit).strip_prefix("postgresql@")?;
    let (version, cluster) = rest.split_once('-')?;
    // One path component each, never `..`: they name folders below the configuration root.
    let plain = |s: &str| {
        !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    (plain(version) && plain(cluster)).then_some((version, cluster))
}

impl ToolEngineControl {
    async fn run(&self, instance: &Instance, statement: &str) -> Result<String, PlanError> {
        let conn = self.backup.connection_for(instance, &self.data_roots).await;
        let tool = statement_tool(instance.spec.engine, &conn, statement).run_as(&instance.spec.os_user)?;
        let out = tool.output().await.map_err(|source| PlanError::Engine {
            instance: instance.id.clone(),
            what: statement.to_owned(),
            source,
        })?;
        let out = String::from_utf8_lossy(&out);
        Ok(out.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().to_owned())
    }
}

#[async_trait::async_trait]
impl EngineControl for ToolEngineControl {
    async fn read(&self, instance: &Instance, setting: &str) -> Result<u64, PlanError> {
        let said = self.run(instance, &read_statement(instance.spec.engine, setting)).await?;
        said.parse().map_err(|_| PlanError::EngineAnswer {
            instance: instance.id.clone(),
            setting: setting.to_owned(),
            answer: said.chars().take(200).collect(),
        })
    }

    async fn set_runtime(&self, instance: &Instance, setting: &EngineSetting) -> Result<(), PlanError> {
        let Some(statement) = set_statement(instance.spec.engine, setting) else {
            return Err(PlanError::EngineAnswer {
                instance: instance.id.clone(),
                setting: setting.name.clone(),
                answer: "not settable at runtime: it needs a restart".into(),
            });
        };
        let said = self.run(instance, &statement).await?;
        // redis-cli exits 0 on a refused command and prints the error instead of OK.
        if instance.spec.engine == Engine::Redis && said != "OK" {
            return Err(PlanError::EngineAnswer {
                instance: instance.id.clone(),
                setting: setting.name.clone(),
                answer: said.chars().take(200).collect(),
            });
        }
        Ok(())
    }

    async fn write_for_restart(&self, instance: &Instance, settings: &[EngineSetting]) -> Result<PathBuf, PlanError> {
        let unit = instance.spec.systemd_unit.clone();
        let Some((version, cluster)) = debian_cluster(&unit) else {
            return Err(PlanError::NoSettingsFile { instance: instance.id.clone(), unit });
        };
        let rel = PathBuf::from(version).join(cluster).join("conf.d");
        let root = self.postgresql_config_root.clone();
        let contents = postgresql_conf(settings);
        let id = instance.id.clone();
        tokio::task::spawn_blocking(move || write_beneath(&root, &rel, POSTGRESQL_FILE, contents.as_bytes()))
            .await
            .map_err(|e| PlanError::SettingsFile { instance: id.clone(), message: e.to_string() })?
            .map_err(|message| PlanError::SettingsFile { instance: id, message })
    }

    async fn keep_for_next_start(&self, instance: &Instance, settings: &[EngineSetting]) -> Result<String, PlanError> {
        let not_kept = |message: String| PlanError::NotKept { instance: instance.id.clone(), message };
        match instance.spec.engine {
            Engine::Mariadb => {
                let (dir, name) = (self.mariadb_config_dir.clone(), mariadb_file(&instance.id));
                let contents = mariadb_cnf(&instance.spec.systemd_unit, settings);
                let written =
                    tokio::task::spawn_blocking(move || write_beneath(&dir, Path::new(""), &name, contents.as_bytes()))
                        .await
                        .map_err(|e| not_kept(e.to_string()))?
                        .map_err(not_kept)?;
                Ok(written.display().to_string())
            }
            // Redis writes its own config file (the one it was started with) from what runs now.
            Engine::Redis => match self.run(instance, "CONFIG REWRITE").await?.as_str() {
                "OK" => Ok("CONFIG REWRITE".into()),
                said => {
                    Err(not_kept(format!("CONFIG REWRITE answered {:?}", said.chars().take(200).collect::<String>())))
                }
            },
            // PostgreSQL takes none at runtime: its settings file is written for the restart.
            Engine::Postgresql => Ok(String::new()),
        }
    }
}

/// Writes `name` in `root/rel` atomically. The cluster's folders under `/etc/postgresql` belong to
/// the postgres user, who could plant a link there: the folder is reached through directory
/// handles (no link followed), the new file is created `O_EXCL` and renamed over the old one
/// through the same handle.
pub fn write_beneath(root: &Path, rel: &Path, name: &str, contents: &[u8]) -> Result<PathBuf, String> {
    let root = DirHandle::open_root(root).map_err(|e| e.to_string())?;
    let dir = root.open_dir(rel).map_err(|e| e.to_string())?;
    let tmp = format!(".{name}.dbagent-tmp");
    // A temporary file left by a crash (or planted) is removed, never opened.
    match dir.remove_file(OsStr::new(&tmp)) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.to_string()),
    }
    let mut file = dir.create_file(OsStr::new(&tmp), 0o644).map_err(|e| e.to_string())?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(|e| format!("write {tmp}: {e}"))?;
    dir.rename_over(OsStr::new(&tmp), &dir, OsStr::new(name)).map_err(|e| e.to_string())?;
    dir.sync().map_err(|e| e.to_string())?;
    Ok(dir.path().join(name))
}

/// The in-memory engines: per instance, the running settings and what was written for a restart.
#[derive(Default)]
pub struct InMemoryEngineControl {
    state: Mutex<HashMap<String, InMemoryEngine>>,
}

#[derive(Debug, Clone, Default)]
pub struct InMemoryEngine {
    pub running: HashMap<String, u64>,
    pub written: Vec<EngineSetting>,
    /// What `keep_for_next_start` kept.
    pub kept: Vec<EngineSetting>,
    /// Reads fail as if the server did not answer.
    pub down: bool,
}

impl InMemoryEngineControl {
    pub fn set(&self, instance: &str, setting: &str, value: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.entry(instance.to_owned()).or_default().running.insert(setting.to_owned(), value);
    }

    pub fn set_down(&self, instance: &str, down: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.entry(instance.to_owned()).or_default().down = down;
    }

    pub fn engine(&self, instance: &str) -> InMemoryEngine {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).get(instance).cloned().unwrap_or_default()
    }

    /// What a restart does: the written settings become the running ones.
    pub fn restarted(&self, instance: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let e = s.entry(instance.to_owned()).or_default();
        for w in e.written.clone() {
            e.running.insert(w.name, w.value);
        }
    }
}

#[async_trait::async_trait]
impl EngineControl for InMemoryEngineControl {
    async fn read(&self, instance: &Instance, setting: &str) -> Result<u64, PlanError> {
        let e = self.engine(&instance.id);
        if e.down {
            return Err(PlanError::EngineDown { instance: instance.id.clone(), setting: setting.to_owned() });
        }
        e.running.get(setting).copied().ok_or_else(|| PlanError::EngineAnswer {
            instance: instance.id.clone(),
            setting: setting.to_owned(),
            answer: String::new(),
        })
    }

    async fn set_runtime(&self, instance: &Instance, setting: &EngineSetting) -> Result<(), PlanError> {
        self.set(&instance.id, &setting.name, setting.value);
        Ok(())
    }

    async fn write_for_restart(&self, instance: &Instance, settings: &[EngineSetting]) -> Result<PathBuf, PlanError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.entry(instance.id.clone()).or_default().written = settings.to_vec();
        Ok(PathBuf::from("/in-memory").join(&instance.id).join(POSTGRESQL_FILE))
    }

    async fn keep_for_next_start(&self, instance: &Instance, settings: &[EngineSetting]) -> Result<String, PlanError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.entry(instance.id.clone()).or_default().kept = settings.to_vec();
        Ok(format!("/in-memory/{}/kept", instance.id))
    }
}
