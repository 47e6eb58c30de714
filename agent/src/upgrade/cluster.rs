//! postgresql-common's clusters: the binaries of each major, creating and dropping a cluster, its
//! port and start mode, its unit through `systemctl`, and pg_upgrade. Tools that only touch the
//! cluster's own files (pg_upgrade, pg_conftool, start.conf) run as the engine's OS user; the root
//! tools (pg_createcluster, pg_dropcluster) only act beneath a folder no engine user can write,
//! which [`prepare_parent`] makes sure of through directory handles.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::UpgradeError;
use super::plan::{Cluster, CopyMode};
use super::server::OldSettings;
use crate::beneath::DirHandle;
use crate::command::ToolCommand;

/// Where postgresql-common keeps binaries and configuration.
#[derive(Debug, Clone)]
pub struct Layout {
    pub lib_dir: PathBuf,
    pub conf_dir: PathBuf,
}

impl Layout {
    pub fn bin(&self, major: u32) -> PathBuf {
        self.lib_dir.join(major.to_string()).join("bin")
    }

    /// Refuses unless `major`'s server (and, for a target, pg_upgrade) is installed.
    pub fn check_installed(&self, major: u32, target: bool) -> Result<(), UpgradeError> {
        let mut needed = vec![self.bin(major).join("postgres")];
        if target {
            needed.push(self.bin(major).join("pg_upgrade"));
        }
        match needed.into_iter().find(|p| !p.is_file()) {
            Some(missing) => Err(UpgradeError::NotInstalled { major, missing }),
            None => Ok(()),
        }
    }

    pub fn conf_folder(&self, c: &Cluster) -> PathBuf {
        self.conf_dir.join(c.major.to_string()).join(&c.name)
    }

    pub fn conf_file(&self, c: &Cluster) -> PathBuf {
        self.conf_folder(c).join("postgresql.conf")
    }
}

fn step(step: &'static str) -> impl FnOnce(String) -> UpgradeError {
    move |message| UpgradeError::Step { step, message }
}

pub async fn systemctl(verb: &str, unit: &str) -> Result<(), String> {
    ToolCommand::new("systemctl").args([verb, unit]).output().await.map(drop).map_err(|e| e.to_string())
}

/// Makes sure the folder the new data directory goes in exists and no engine user can change it
/// (owned by root, not group- or world-writable, every folder from the data root down): the root
/// tools of postgresql-common create and delete the data directory by its path, and a folder the
/// engine user could write would let it swap that path for a link to anywhere. Missing folders are
/// created through directory handles, owned by root, mode 0755.
pub fn prepare_parent(data_root: &Path, new_data_dir: &Path) -> Result<(), UpgradeError> {
    let refuse = |message: String| UpgradeError::Step { step: "prepare the new data folder", message };
    let rel = new_data_dir.strip_prefix(data_root).map_err(|_| {
        refuse(format!("{} is not below the data root {}", new_data_dir.display(), data_root.display()))
    })?;
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let mut dir = DirHandle::open_configured_root(data_root).map_err(|e| refuse(e.to_string()))?;
    check_root_only(&dir, data_root).map_err(refuse)?;
    let mut at = data_root.to_path_buf();
    for part in parent_rel.components() {
        let name: &OsStr = part.as_os_str();
        at.push(name);
        let (next, _) = dir.open_or_create_dir(Path::new(name), 0o755).map_err(|e| refuse(e.to_string()))?;
        check_root_only(&next, &at).map_err(refuse)?;
        dir = next;
    }
    let leaf = rel.file_name().ok_or_else(|| refuse("the new data folder has no name".into()))?;
    match dir.stat_entry(leaf) {
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(refuse(e.to_string())),
        Ok(_) => Err(refuse(format!(
            "{} exists already (left by an earlier attempt?); remove it (pg_dropcluster) and start again",
            new_data_dir.display()
        ))),
    }
}

fn check_root_only(dir: &DirHandle, path: &Path) -> Result<(), String> {
    let st = rustix::fs::fstat(dir).map_err(|e| format!("stat {}: {e}", path.display()))?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(format!(
            "{} is owned by uid {} with mode {:o}: the new cluster's folder must lie in folders only root can \
             write, so that an engine user cannot redirect the root tools that create it",
            path.display(),
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// `pg_createcluster` for the new major with the old cluster's encoding, locale and checksum
/// setting, not started and not started at boot until the switch.
pub async fn create(
    new: &Cluster,
    data_dir: &Path,
    old: &OldSettings,
    os_user: &str,
    port: u16,
) -> Result<(), UpgradeError> {
    let mut cmd = ToolCommand::new("pg_createcluster")
        .arg(new.major.to_string())
        .arg(&new.name)
        .arg(format!("--datadir={}", data_dir.display()))
        .arg(format!("--user={os_user}"))
        .arg(format!("--encoding={}", old.encoding))
        .arg(format!("--lc-collate={}", old.collate))
        .arg(format!("--lc-ctype={}", old.ctype))
        .arg(format!("--port={port}"))
        .arg("--start-conf=manual");
    if old.data_checksums {
        cmd = cmd.args(["--", "--data-checksums"]);
    }
    cmd.output().await.map(drop).map_err(|e| e.to_string()).map_err(step("pg_createcluster"))
}

/// The files carried from the old cluster's configuration folder into the new one's, which
/// pg_createcluster filled with Debian's defaults: who may connect and how, so the clients (and
/// the agent's monitoring role) get in after the switch as before; and the plan's settings file
/// (`shared_buffers`, `max_connections`), so the upgrade does not undo a plan change.
pub fn carried_files() -> [PathBuf; 3] {
    ["pg_hba.conf".into(), "pg_ident.conf".into(), Path::new("conf.d").join(crate::plan::engine::POSTGRESQL_FILE)]
}

/// Copies the [`carried_files`] the old cluster has. As the engine's user, who owns both folders:
/// a link planted there reaches nothing it could not.
pub async fn carry_configuration(
    layout: &Layout,
    old: &Cluster,
    new: &Cluster,
    os_user: &str,
) -> Result<(), UpgradeError> {
    for file in carried_files() {
        let file = file.display();
        let from = layout.conf_folder(old).join(file.to_string());
        if !from.exists() {
            continue;
        }
        ToolCommand::new("cp")
            .args(["--no-dereference", "--"])
            .arg(&from)
            .arg(layout.conf_folder(new).join(file.to_string()))
            .run_as(os_user)
            .map_err(|e| e.to_string())
            .map_err(step("copy the access rules"))?
            .output()
            .await
            .map(drop)
            .map_err(|e| format!("{file}: {e}"))
            .map_err(step("copy the access rules"))?;
    }
    Ok(())
}

/// Removes a cluster this upgrade created (stopping it first), configuration and data.
pub async fn drop_cluster(c: &Cluster) -> Result<(), String> {
    ToolCommand::new("pg_dropcluster")
        .args(["--stop", &c.major.to_string(), &c.name])
        .output()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Sets the cluster's port in its postgresql.conf, as the engine's user (who owns that file).
pub async fn set_port(c: &Cluster, port: u16, os_user: &str) -> Result<(), String> {
    ToolCommand::new("pg_conftool")
        .args([&c.major.to_string(), c.name.as_str(), "set", "port", &port.to_string()])
        .run_as(os_user)
        .map_err(|e| e.to_string())?
        .output()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Writes the cluster's start.conf ("auto": started at boot; "manual": only on request), as the
/// engine's user, who owns the cluster's configuration folder.
pub async fn set_start(layout: &Layout, c: &Cluster, mode: &str, os_user: &str) -> Result<(), String> {
    let file = layout.conf_folder(c).join("start.conf");
    ToolCommand::new("/bin/sh")
        .args(["-c", "printf '%s\\n' \"$1\" > \"$2\"", "sh", mode])
        .arg(&file)
        .run_as(os_user)
        .map_err(|e| e.to_string())?
        .output()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// pg_upgrade's arguments for `old` -> `new` (both stopped, or with `check_port` the old one
/// running: a live `--check`).
pub struct UpgradeRun<'a> {
    pub layout: &'a Layout,
    pub old: &'a Cluster,
    pub new: &'a Cluster,
    pub old_data: &'a Path,
    pub new_data: &'a Path,
    pub mode: CopyMode,
    pub os_user: &'a str,
    pub socket_dir: &'a str,
    /// The port of pg_upgrade's own servers ([`super::upgrade_port::UpgradePort`]).
    pub port: u16,
}

impl UpgradeRun<'_> {
    /// The command; `check_port`: a `--check` against the old server running on that port.
    pub fn command(&self, check_port: Option<u16>) -> Result<ToolCommand, String> {
        let mut args = vec![
            format!("--old-bindir={}", self.layout.bin(self.old.major).display()),
            format!("--new-bindir={}", self.layout.bin(self.new.major).display()),
            format!("--old-datadir={}", self.old_data.display()),
            format!("--new-datadir={}", self.new_data.display()),
            // ssl off: pg_upgrade's servers listen on the socket only, where TLS serves nothing.
            format!("--old-options=-c config_file={} -c ssl=off", self.layout.conf_file(self.old).display()),
            format!("--new-options=-c config_file={} -c ssl=off", self.layout.conf_file(self.new).display()),
            format!("--socketdir={}", self.socket_dir),
            format!("--username={}", self.os_user),
            self.mode.flag().to_owned(),
        ];
        args.push(format!("--new-port={}", self.port));
        match check_port {
            Some(port) => args.extend(["--check".to_owned(), format!("--old-port={port}")]),
            None => args.push(format!("--old-port={}", self.port)),
        }
        // pg_upgrade prints its reasons on stdout: fold it into stderr, whose tail the error keeps.
        // It writes its scripts into the current folder: the socket folder, the engine user's own.
        // pg_ctl gives a starting server 60 s by default; a big or busy one (or an emulated test
        // guest) needs longer, and a timeout there fails the whole upgrade.
        let cmd = ToolCommand::new("/bin/sh")
            .args(["-c", "cd \"$1\" || exit 1; shift; export PGCTLTIMEOUT=600; exec \"$0\" \"$@\" 1>&2"])
            .arg(self.layout.bin(self.new.major).join("pg_upgrade"))
            .arg(self.socket_dir)
            .args(args);
        cmd.run_as(self.os_user).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A conf folder `<root>/<major>/main` owned by `nobody` (the engine user of this test).
    fn conf_folder(root: &Path, major: u32, uid: u32) -> PathBuf {
        let dir = root.join(major.to_string()).join("main");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
        dir
    }

    #[tokio::test]
    async fn the_access_rules_and_plan_settings_are_copied_as_the_engine_user_never_through_a_planted_link() {
        assert!(nix::unistd::geteuid().is_root(), "this test runs as root: it copies as another user");
        let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let layout = Layout { lib_dir: dir.path().join("lib"), conf_dir: dir.path().join("etc") };
        let old_dir = conf_folder(&layout.conf_dir, 15, nobody.uid.as_raw());
        let new_dir = conf_folder(&layout.conf_dir, 17, nobody.uid.as_raw());
        for d in [dir.path().join("etc"), dir.path().join("etc/15"), dir.path().join("etc/17")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (old, new) = (Cluster { major: 15, name: "main".into() }, Cluster { major: 17, name: "main".into() });

        // The allowed path: the old cluster's rules replace pg_createcluster's defaults.
        std::fs::write(old_dir.join("pg_hba.conf"), "local all dbagent_monitor peer map=dbagent\n").unwrap();
        std::fs::write(old_dir.join("pg_ident.conf"), "dbagent root dbagent_monitor\n").unwrap();
        std::fs::write(new_dir.join("pg_hba.conf"), "# defaults\n").unwrap();
        std::os::unix::fs::chown(new_dir.join("pg_hba.conf"), Some(nobody.uid.as_raw()), None).unwrap();
        // The plan's settings file (written by the agent as root) goes along.
        for d in [&old_dir, &new_dir] {
            std::fs::create_dir(d.join("conf.d")).unwrap();
            std::os::unix::fs::chown(d.join("conf.d"), Some(nobody.uid.as_raw()), None).unwrap();
        }
        std::fs::write(old_dir.join("conf.d/90-dbagent-plan.conf"), "shared_buffers = '256MB'\n").unwrap();
        carry_configuration(&layout, &old, &new, "nobody").await.unwrap();
        assert_eq!(
            std::fs::read_to_string(new_dir.join("conf.d/90-dbagent-plan.conf")).unwrap(),
            "shared_buffers = '256MB'\n"
        );
        assert_eq!(
            std::fs::read_to_string(new_dir.join("pg_hba.conf")).unwrap(),
            "local all dbagent_monitor peer map=dbagent\n"
        );
        assert_eq!(std::fs::read_to_string(new_dir.join("pg_ident.conf")).unwrap(), "dbagent root dbagent_monitor\n");
        assert_eq!(
            std::fs::metadata(new_dir.join("pg_ident.conf")).unwrap().uid(),
            nobody.uid.as_raw(),
            "written as the engine user"
        );

        // The engine user swaps its pg_hba.conf for a link to a root-only secret: the copy is the
        // link itself (which that user cannot follow), never the secret's content.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(old_dir.join("pg_hba.conf")).unwrap();
        std::os::unix::fs::symlink(&secret, old_dir.join("pg_hba.conf")).unwrap();
        std::fs::remove_file(new_dir.join("pg_hba.conf")).unwrap();
        let _ = carry_configuration(&layout, &old, &new, "nobody").await;
        let copied = std::fs::symlink_metadata(new_dir.join("pg_hba.conf")).unwrap();
        assert!(copied.file_type().is_symlink(), "a link stays a link: {copied:?}");
        assert_ne!(copied.uid(), 0);
    }
}
