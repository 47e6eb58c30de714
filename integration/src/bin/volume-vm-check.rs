//! Drives a full volume lifecycle against a dev-mode agent (`dbagent --dev`) inside the VM and prints
//! `PASS <step> <ms>` / `FAIL <step> <ms> <why>` lines; exits 1 if any step failed.
//!
//! `volume-vm-check --state-dir S --agent-log L [--device /dev/disk/by-id/virtio-vmdata0] [--phase first|second]`
//! - first: register vm-a (on --device, or a managed file) and vm-b (managed file); create both; write
//!   a marker on each (vm-b is created while postgres, owning the data root, exchanges its data_dir
//!   with a link to a sentinel folder: the sentinel is never mounted over or chowned); close and reopen vm-a; marker reads back; the agent refuses to open vm-a when
//!   its keystore hands out another key, and opens it with the real one back; rotate (old key
//!   refused, new opens; the old key is kept in `/share/rotated-away-keys` for the leak searches);
//!   grow online (vm-b's managed file; vm-a on a block device the platform
//!   has not grown is refused; then the host grows the virtio disk under the running guest through
//!   QMP — asked for by writing `/share/want-disk-grow`, answered in `/share/disk-grown` — and vm-a
//!   grows onto it: dm-crypt resize and ext4 online growth on a real block device); markers kept; vm-a's
//!   key does not open vm-b and back; then close both so the host can search the raw disk for the
//!   marker.
//! - second (after a reboot with the same disks and state folder): the agent reopened both volumes
//!   at start-up; the markers read back.
//! - fill (after second): registers 48 more instances on small managed files and creates their
//!   volumes all at once (the agent runs them `operations.max_concurrent` at a time), so that the
//!   agent has 50 volumes to open at its next start; each must end up open and mounted.
//!
//! - recovery (after the keystore and the KEK were deleted and the agent started with a new KEK,
//!   `--recovery-key FILE` the operator's age identity): vm-a is not open and GetVolume says why and
//!   shows its escrow; OpenVolume with another age identity is refused (PERMISSION_DENIED, nothing
//!   opened or stored); with the right one vm-a opens, its marker reads back and its key is in the
//!   new keystore; the identity's secret is in no file under the state folder and not in the log.
//!
//! The first three phases end with a search under the state folder and in the agent log for every kind of key
//! (current volume keys, rotated-away volume keys, the KEK); a kind with no key to search for, or a
//! file that cannot be read, fails it.

use anyhow::{Context, Result, bail};
use dbagent::volume::crypt::{CryptBackend, CryptError, LibCryptsetup};
use dbagent::volume::keystore::{KekSource, LocalKeystore};
use dbagent::volume::{KeyProvider, VolumeKey};
use dbagent_integration::guest::{arg, connect, report};
use dbagent_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const MARKER: &str = "dbagent-vm-marker-6f1d2c";
const MARKER_B: &str = "dbagent-vm-marker-b-93e0a7";

struct Ctx {
    channel: Channel,
    state: PathBuf,
    failures: std::cell::Cell<u32>,
}

impl Ctx {
    async fn step<F, T>(&self, name: &str, f: F) -> Option<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let t = Instant::now();
        let r = report(name, t, f.await);
        if r.is_none() {
            self.failures.set(self.failures.get() + 1);
        }
        r
    }

    fn volumes(&self) -> pb::volumes_client::VolumesClient<Channel> {
        pb::volumes_client::VolumesClient::new(self.channel.clone())
    }

    /// Waits for an operation to finish; fails unless it succeeded.
    async fn wait(&self, op: pb::Operation) -> Result<String> {
        let cur = self.finish(op).await?;
        match pb::OperationState::try_from(cur.state) {
            Ok(pb::OperationState::Succeeded) => Ok(cur.result_json),
            _ => bail!("operation {} {}: {:?}", cur.kind, cur.id, cur.error),
        }
    }

    /// Waits until an operation is no longer queued or running and gives back its last state.
    async fn finish(&self, op: pb::Operation) -> Result<pb::Operation> {
        let mut ops = pb::operations_client::OperationsClient::new(self.channel.clone());
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let cur = ops.get_operation(pb::GetOperationRequest { id: op.id.clone() }).await?.into_inner();
            match pb::OperationState::try_from(cur.state) {
                Ok(pb::OperationState::Queued | pb::OperationState::Running) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(pb::OperationState::Queued | pb::OperationState::Running) => {
                    bail!("operation {} {} still unfinished after 300 s", cur.kind, cur.id)
                }
                _ => return Ok(cur),
            }
        }
    }

    async fn volume(&self, id: &str) -> Result<pb::Volume> {
        Ok(self.volumes().get_volume(pb::GetVolumeRequest { instance_id: id.into() }).await?.into_inner())
    }

    async fn open(&self, id: &str) -> Result<pb::Operation> {
        self.open_with(id, Vec::new()).await
    }

    /// OpenVolume, with the text of an age identity file as `recovery_key` unless it is empty.
    async fn open_with(&self, id: &str, recovery_key: Vec<u8>) -> Result<pb::Operation> {
        let req = pb::OpenVolumeRequest { request_id: rid("open", id), instance_id: id.into(), recovery_key };
        Ok(self.volumes().open_volume(req).await?.into_inner())
    }

    /// Closes the volume through the agent and checks its mapping is gone.
    async fn close(&self, id: &str) -> Result<()> {
        let req = pb::CloseVolumeRequest { request_id: rid("close", id), instance_id: id.into() };
        self.wait(self.volumes().close_volume(req).await?.into_inner()).await?;
        let mapper = format!("/dev/mapper/dbagent-{id}");
        if Path::new(&mapper).exists() {
            bail!("{mapper} still exists after close");
        }
        Ok(())
    }

    fn data_dir(&self, id: &str) -> PathBuf {
        self.state.join("data").join(id)
    }
}

fn rid(step: &str, id: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("vmcheck-{step}-{id}-{nanos}")
}

fn spec(data_dir: &Path, device: Option<&str>) -> pb::InstanceSpec {
    pb::InstanceSpec {
        engine: pb::Engine::Postgresql.into(),
        engine_version: "15".into(),
        systemd_unit: "postgresql@15-main.service".into(),
        data_dir: data_dir.display().to_string(),
        // An engine's user, as in production: root and system accounts are refused as os_user.
        os_user: "postgres".into(),
        volume: Some(pb::VolumeSpec {
            device: device.unwrap_or_default().into(),
            size_bytes: 64 << 20,
            filesystem: "ext4".into(),
        }),
        log_sources: vec![],
        plan: Some(pb::Plan {
            name: pb::PlanName::Starter.into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
            ..Default::default()
        }),
        maintenance_window: None,
        backup_policy: None,
    }
}

async fn keystore(state: &Path) -> Result<Arc<LocalKeystore>> {
    let kek = KekSource { credentials_dir: None, file: state.join("kek"), generate: false }.load()?;
    Ok(Arc::new(LocalKeystore::open(state.join("keystore"), &kek)?))
}

/// The header device of a volume as the agent reports it (the loop device for a managed file is
/// found by the agent; header reads work on the file itself too).
async fn backing(c: &Ctx, id: &str) -> Result<PathBuf> {
    let v = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: id.into() }).await?.into_inner();
    Ok(PathBuf::from(v.backing))
}

async fn opens(dev: &Path, key: &[u8]) -> Result<bool> {
    let (dev, key) = (dev.to_path_buf(), key.to_vec());
    match tokio::task::spawn_blocking(move || LibCryptsetup.verify(&dev, &key)).await? {
        Ok(_) => Ok(true),
        Err(CryptError::WrongKey(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn first(c: &Ctx, device: Option<String>) {
    for (id, dev) in [("vm-a", device.as_deref()), ("vm-b", None)] {
        let data_dir = c.data_dir(id);
        c.step(&format!("register-{id}"), async {
            let mut inst = pb::instances_client::InstancesClient::new(c.channel.clone());
            inst.register_instance(pb::RegisterInstanceRequest {
                request_id: rid("reg", id),
                id: id.into(),
                spec: Some(spec(&data_dir, dev)),
            })
            .await?;
            Ok(())
        })
        .await;
        if id == "vm-b" {
            c.step("create-vm-b-under-mount-race", create_under_mount_race(c, id)).await;
            continue;
        }
        c.step(&format!("create-{id}"), async {
            let op = c
                .volumes()
                .create_volume(pb::CreateVolumeRequest {
                    request_id: rid("create", id),
                    instance_id: id.into(),
                    force: true,
                })
                .await?
                .into_inner();
            c.wait(op).await
        })
        .await;
    }
    c.step("write-marker", async {
        std::fs::write(c.data_dir("vm-a").join("marker"), MARKER)?;
        std::fs::write(c.data_dir("vm-b").join("marker"), MARKER_B)?;
        nix_sync();
        Ok(())
    })
    .await;
    c.step("close-vm-a", c.close("vm-a")).await;
    c.step("reopen-vm-a", async {
        c.wait(c.open("vm-a").await?).await?;
        check_marker(c, "vm-a", MARKER)
    })
    .await;
    let Some(ks) = c.step("keystore", keystore(&c.state)).await else { return };
    c.step("wrong-key-refused-by-agent", wrong_key_refused_by_agent(c, &ks)).await;
    c.step("rotate-key", async {
        let before = c.volume("vm-a").await?.key_version;
        let old = ks.key("vm-a", before, false, 256).await?;
        // Kept outside the state folder for both boots' leak searches: a rotated-away key must
        // not linger anywhere either.
        remember_rotated_away("vm-a", before, &old)?;
        let op = c
            .volumes()
            .rotate_volume_key(pb::RotateVolumeKeyRequest {
                request_id: rid("rotate", "vm-a"),
                instance_id: "vm-a".into(),
            })
            .await?
            .into_inner();
        c.wait(op).await?;
        let after = c.volume("vm-a").await?.key_version;
        if after != before + 1 {
            bail!("key version {before} -> {after} after rotation, want {}", before + 1);
        }
        let new = ks.key("vm-a", after, false, 256).await?;
        let dev = backing(c, "vm-a").await?;
        if opens(&dev, old.as_bytes()).await? || !opens(&dev, new.as_bytes()).await? {
            bail!("after rotation the old key must fail and the new one open");
        }
        Ok(())
    })
    .await;
    c.step("grow-vm-b", async {
        let v = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: "vm-b".into() }).await?.into_inner();
        c.wait(grow(c, "vm-b", v.size_bytes + (32 << 20)).await?).await?;
        let after = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: "vm-b".into() }).await?.into_inner();
        if after.fs_size_bytes <= v.fs_size_bytes {
            bail!("filesystem did not grow: {} -> {}", v.fs_size_bytes, after.fs_size_bytes);
        }
        Ok(())
    })
    .await;
    if device.is_some() {
        // The virtio disk cannot grow under the guest: the agent must refuse rather than pretend.
        c.step("grow-vm-a-needs-a-grown-disk", async {
            let v = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: "vm-a".into() }).await?.into_inner();
            let refusal = match grow(c, "vm-a", v.size_bytes + (32 << 20)).await {
                Ok(op) => match c.wait(op).await {
                    Ok(r) => bail!("growing past the disk succeeded: {r}"),
                    Err(e) => format!("{e:#}"),
                },
                Err(e) => format!("{e:#}"),
            };
            if !refusal.contains("grow the disk first") {
                bail!("unexpected refusal: {refusal}");
            }
            Ok(())
        })
        .await;
    }
    if let Some(dev) = &device {
        c.step("grow-vm-a-after-the-disk-grew", grow_with_the_disk(c, Path::new(dev))).await;
    }
    c.step("markers-after-grow", async {
        check_marker(c, "vm-a", MARKER)?;
        check_marker(c, "vm-b", MARKER_B)
    })
    .await;
    c.step("keys-are-per-instance", async {
        let a = ks.key("vm-a", 2, false, 256).await?;
        let b = ks.key("vm-b", 1, false, 256).await?;
        let (da, db) = (backing(c, "vm-a").await?, backing(c, "vm-b").await?);
        if opens(&db, a.as_bytes()).await? || opens(&da, b.as_bytes()).await? {
            bail!("one instance's key opened the other's volume");
        }
        Ok(())
    })
    .await;
    c.step("flags", async {
        let v = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: "vm-a".into() }).await?.into_inner();
        println!("INFO vm-a cipher={} key_bits={} sector={} flags={:?}", v.cipher, v.key_bits, v.sector_size, v.flags);
        if v.cipher != "aes-xts-plain64" || !v.flags.iter().any(|f| f == "no_read_workqueue") {
            bail!("unexpected volume status {v:?}");
        }
        Ok(())
    })
    .await;
    for id in ["vm-a", "vm-b"] {
        c.step(&format!("close-{id}-at-end"), c.close(id)).await;
    }
}

/// CreateVolume, then three close + OpenVolume rounds, each while the tenant (postgres, who owns the
/// data root here as in production) exchanges the instance's data_dir with a link to a root-owned
/// sentinel folder in a tight loop. See [`mount_race_round`] for what each round asserts.
async fn create_under_mount_race(c: &Ctx, id: &str) -> Result<()> {
    use dbagent_integration::tenant::{Sentinels, TenantUser, plant_link};
    use std::os::unix::fs::{PermissionsExt, chown};
    let tenant = TenantUser::named("postgres");
    let sentinels = Sentinels::new();
    let root = c.state.join("data");
    let (dir, swap) = (c.data_dir(id), root.join(format!("{id}-swap")));
    std::fs::create_dir_all(&dir)?;
    chown(&root, Some(tenant.uid), Some(tenant.gid))?;
    chown(&dir, Some(tenant.uid), Some(tenant.gid))?;
    plant_link(&tenant, &sentinels.folder, &swap);
    // The tenant reaches its data root through the state folder, as it would /var/lib/postgresql.
    std::fs::set_permissions(&c.state, std::fs::Permissions::from_mode(0o711))?;
    let race = Race { id, tenant: &tenant, sentinels: &sentinels, dir: &dir, swap: &swap };
    let mut outcomes = vec![mount_race_round(c, &race, RaceOp::Create).await];
    for _ in 0..3 {
        c.close(id).await?;
        outcomes.push(mount_race_round(c, &race, RaceOp::Open).await);
    }
    std::fs::set_permissions(&c.state, std::fs::Permissions::from_mode(0o700))?;
    std::fs::remove_file(&swap)?;
    let outcomes: Vec<String> = outcomes.into_iter().collect::<Result<_>>()?;
    println!("INFO mount race on {id}: {}", outcomes.join("; "));
    Ok(())
}

struct Race<'a> {
    id: &'a str,
    tenant: &'a dbagent_integration::tenant::TenantUser,
    sentinels: &'a dbagent_integration::tenant::Sentinels,
    dir: &'a Path,
    swap: &'a Path,
}

#[derive(Clone, Copy)]
enum RaceOp {
    Create,
    Open,
}

async fn submit(c: &Ctx, id: &str, op: RaceOp) -> Result<pb::Operation> {
    match op {
        RaceOp::Create => {
            let req = pb::CreateVolumeRequest { request_id: rid("create", id), instance_id: id.into(), force: true };
            Ok(c.volumes().create_volume(req).await?.into_inner())
        }
        RaceOp::Open => c.open(id).await,
    }
}

/// One operation under the exchange loop. The sentinel folder is never mounted over or chowned
/// and keeps its file. The operation either mounted the volume on the real folder (under whichever
/// of the two names it had at that instant: a mounted folder cannot be renamed, so the loop may
/// stop with the names exchanged), its root owned by postgres with mode 0700, or failed cleanly
/// (FAILED_PRECONDITION, refusing the link, nothing mounted). Then the names are put back (as an
/// operator would), the operation is repeated without the attack, and the volume must be mounted
/// exactly at its data_dir.
async fn mount_race_round(c: &Ctx, race: &Race<'_>, op: RaceOp) -> Result<String> {
    use dbagent_integration::tenant::Exchange;
    use std::os::unix::fs::MetadataExt;
    let (id, dir, swap) = (race.id, race.dir, race.swap);
    let attack = Exchange::start_with(Path::new("/share/tenant-attack"), race.tenant, dir, swap);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let done = c.finish(submit(c, id, op).await?).await?;
    let exchanges = attack.stop();

    let mapper = PathBuf::from(format!("/dev/mapper/dbagent-{id}"));
    let mounted_at =
        || -> Vec<PathBuf> { mount_points().into_iter().filter(|(_, src)| src == &mapper).map(|(p, _)| p).collect() };
    if mount_points().iter().any(|(p, _)| p == &race.sentinels.folder) {
        bail!("the sentinel folder {} was mounted over", race.sentinels.folder.display());
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| race.sentinels.assert_untouched()))
        .map_err(|_| anyhow::anyhow!("the sentinel was changed (see stderr)"))?;
    let swapped = std::fs::symlink_metadata(dir)?.file_type().is_symlink();
    let put_back = || {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            dir,
            nix::fcntl::AT_FDCWD,
            swap,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
    };
    let outcome = if pb::OperationState::try_from(done.state) == Ok(pb::OperationState::Succeeded) {
        let mounted = mounted_at();
        let [place] = mounted.as_slice() else { bail!("{} mounted at {mounted:?}, want one place", mapper.display()) };
        if place != dir && place != swap {
            bail!("{} mounted at {} outside the two names", mapper.display(), place.display());
        }
        let meta = std::fs::metadata(place)?;
        if (meta.uid(), meta.mode() & 0o7777) != (race.tenant.uid, 0o700) {
            bail!("the volume's root is uid {} mode {:o}, want postgres 0700", meta.uid(), meta.mode() & 0o7777);
        }
        if swapped {
            let out = std::process::Command::new("umount").arg(place).output()?;
            if !out.status.success() {
                bail!("umount {}: {}", place.display(), String::from_utf8_lossy(&out.stderr));
            }
            put_back()?;
            c.wait(submit(c, id, RaceOp::Open).await?).await?;
        }
        "mounted on the real folder"
    } else {
        let error = done.error.as_ref().map(|e| (e.code.as_str(), e.message.as_str()));
        let Some(("FAILED_PRECONDITION", message)) = error else { bail!("the operation failed otherwise: {error:?}") };
        if !message.contains("symbolic link") || !mounted_at().is_empty() {
            bail!("the operation failed otherwise than by refusing the link: {message}; mounted at {:?}", mounted_at());
        }
        if swapped {
            put_back()?;
        }
        c.wait(submit(c, id, op).await?).await?;
        "refused the link"
    };
    if mounted_at() != [dir] {
        bail!("{} is mounted at {:?} after the race, not at {}", mapper.display(), mounted_at(), dir.display());
    }
    Ok(format!("{outcome} ({exchanges} exchanges)"))
}

/// Mount points and their sources, from /proc/self/mountinfo (sources of device-mapper mounts are
/// given as /dev/mapper/<name>).
fn mount_points() -> Vec<(PathBuf, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((PathBuf::from(f.get(4)?.replace("\\040", " ")), PathBuf::from(f.get(dash + 2)?)))
        })
        .collect()
}

/// The agent's own refusal, not libcryptsetup's: vm-a's keystore entry is swapped for a well-formed
/// entry holding another key (sealed under the same KEK, so the keystore hands it out as vm-a's), and
/// the agent is asked to open the closed volume. It must fail with its wrong-key error, say so in
/// GetVolume and leave no mapping; with the real entry back, the same request opens the volume.
async fn wrong_key_refused_by_agent(c: &Ctx, ks: &Arc<LocalKeystore>) -> Result<()> {
    let version = c.volume("vm-a").await?.key_version;
    let right = ks.key("vm-a", version, false, 256).await?;
    c.close("vm-a").await?;
    let entry = c.state.join("keystore").join(format!("vm-a.v{version}.key"));
    let real = std::fs::read(&entry).with_context(|| format!("read {}", entry.display()))?;
    std::fs::remove_file(&entry).with_context(|| format!("remove {}", entry.display()))?;
    let refused = async {
        let wrong = ks.key("vm-a", version, true, 256).await.context("seal a wrong key as vm-a's entry")?;
        if wrong.as_bytes() == right.as_bytes() {
            bail!("the wrong key is the right one");
        }
        expect_wrong_key_refusal(c, "vm-a").await
    }
    .await;
    // The real entry goes back whatever happened, so the later steps still have vm-a's key.
    restore_entry(&entry, &real)?;
    refused?;
    c.wait(c.open("vm-a").await?).await.context("the right key no longer opens vm-a")?;
    let v = c.volume("vm-a").await?;
    if !(v.active && v.mounted && v.last_error.is_empty()) {
        bail!("vm-a is not open and clean after the right key came back: {v:?}");
    }
    check_marker(c, "vm-a", MARKER)
}

async fn expect_wrong_key_refusal(c: &Ctx, id: &str) -> Result<()> {
    let want =
        format!("the key from the local key provider does not open the volume of instance {id}; nothing was changed");
    let op = c.finish(c.open(id).await?).await?;
    let error = op.error.clone().unwrap_or_default();
    if op.state != i32::from(pb::OperationState::Failed) || error.code != "FAILED_PRECONDITION" || error.message != want
    {
        bail!("opening {id} with a wrong key: want FAILED_PRECONDITION {want:?}, the agent gave {op:?}");
    }
    let v = c.volume(id).await?;
    if v.active || v.mounted || v.last_error != want {
        bail!("after the refusal {id} must be closed with last_error {want:?}: {v:?}");
    }
    let mapper = format!("/dev/mapper/dbagent-{id}");
    if Path::new(&mapper).exists() {
        bail!("{mapper} exists after the agent refused the key");
    }
    Ok(())
}

fn restore_entry(entry: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = entry.with_extension("restore");
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, entry).with_context(|| format!("put the real key entry back at {}", entry.display()))
}

fn check_marker(c: &Ctx, id: &str, want: &str) -> Result<()> {
    let path = c.data_dir(id).join("marker");
    let got = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    if got != want {
        bail!("{} reads {got:?}, want {want:?}", path.display());
    }
    Ok(())
}

/// Has the host grow vm-a's disk by 64 MiB under the running guest, waits until the kernel sees the
/// new size, and grows the volume onto it: the filesystem must grow, the marker stay.
async fn grow_with_the_disk(c: &Ctx, dev: &Path) -> Result<()> {
    let before = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: "vm-a".into() }).await?.into_inner();
    let want = before.size_bytes + (64 << 20);
    let answer = Path::new("/share/disk-grown");
    std::fs::write("/share/want-disk-grow", want.to_string()).context("ask the host to grow the disk")?;
    let until = Instant::now() + Duration::from_secs(120);
    while !answer.exists() {
        if Instant::now() > until {
            bail!("the host did not answer /share/want-disk-grow within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let said = std::fs::read_to_string(answer)?;
    if said.trim() != "ok" {
        bail!("the host could not grow the disk: {said}");
    }
    // virtio-blk reports the new capacity through a config interrupt; the kernel picks it up soon after.
    let name = std::fs::canonicalize(dev)?.file_name().context("device name")?.to_string_lossy().into_owned();
    let sectors = format!("/sys/class/block/{name}/size");
    let size = || -> Result<u64> { Ok(std::fs::read_to_string(&sectors)?.trim().parse::<u64>()? * 512) };
    while size()? < want {
        if Instant::now() > until {
            bail!("{name} is still {} bytes, not {want}", size()?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let req = pb::GrowVolumeRequest {
        request_id: rid("grow-after-disk", "vm-a"),
        instance_id: "vm-a".into(),
        new_size_bytes: want,
    };
    c.wait(c.volumes().grow_volume(req).await?.into_inner()).await?;
    let after = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: "vm-a".into() }).await?.into_inner();
    println!(
        "INFO vm-a grew with its disk: volume {} -> {} bytes, filesystem {} -> {}",
        before.size_bytes, after.size_bytes, before.fs_size_bytes, after.fs_size_bytes
    );
    if after.size_bytes != want || after.fs_size_bytes < before.fs_size_bytes + (48 << 20) {
        bail!("vm-a did not grow onto the grown disk: {before:?} -> {after:?}");
    }
    check_marker(c, "vm-a", MARKER)
}

async fn grow(c: &Ctx, id: &str, new_size_bytes: u64) -> Result<pb::Operation> {
    let req = pb::GrowVolumeRequest { request_id: rid("grow", id), instance_id: id.into(), new_size_bytes };
    Ok(c.volumes().grow_volume(req).await?.into_inner())
}

async fn second(c: &Ctx) {
    for (id, marker) in [("vm-a", MARKER), ("vm-b", MARKER_B)] {
        c.step(&format!("{id}-reopened-at-startup"), async {
            let v = c.volumes().get_volume(pb::GetVolumeRequest { instance_id: id.into() }).await?.into_inner();
            if !(v.active && v.mounted) {
                bail!("{id} not open after restart: {v:?}");
            }
            check_marker(c, id, marker)
        })
        .await;
    }
}

/// Issue 13: the host lost its keystore and KEK; the operator's recovery key opens vm-a on purpose.
async fn recovery(c: &Ctx) {
    let key_file = PathBuf::from(arg("--recovery-key").unwrap_or_default());
    let entry_of = |v: &pb::Volume| c.state.join("keystore").join(format!("vm-a.v{}.key", v.key_version));
    c.step("vm-a-not-opened-without-its-key", async {
        let v = c.volume("vm-a").await?;
        if v.active || v.mounted || !v.last_error.contains("no key version") {
            bail!("vm-a must be closed, with the missing key as its last_error: {v:?}");
        }
        if v.escrow_key_version != v.key_version || v.escrow_recipients.len() != 1 {
            bail!("vm-a's header must escrow its current key to the one recipient: {v:?}");
        }
        Ok(())
    })
    .await;
    c.step("other-recovery-key-refused", async {
        let stranger = dbagent::recovery_key::RecoveryIdentity::generate();
        let op = c.finish(c.open_with("vm-a", stranger.to_file_text().as_bytes().to_vec()).await?).await?;
        let error = op.error.clone().unwrap_or_default();
        if op.state != i32::from(pb::OperationState::Failed) || error.code != "PERMISSION_DENIED" {
            bail!("another age identity must be refused with PERMISSION_DENIED: {op:?}");
        }
        let v = c.volume("vm-a").await?;
        if v.active || v.mounted || Path::new("/dev/mapper/dbagent-vm-a").exists() || entry_of(&v).exists() {
            bail!("the refused recovery key opened vm-a or stored a key: {v:?}");
        }
        Ok(())
    })
    .await;
    c.step("recovery-key-opens-vm-a", async {
        let text = std::fs::read(&key_file).with_context(|| format!("read {}", key_file.display()))?;
        c.wait(c.open_with("vm-a", text).await?).await?;
        let v = c.volume("vm-a").await?;
        if !(v.active && v.mounted && v.last_error.is_empty()) {
            bail!("vm-a is not open and clean after the recovery: {v:?}");
        }
        if !entry_of(&v).exists() {
            bail!("the recovered key was not stored in the keystore: {} is missing", entry_of(&v).display());
        }
        check_marker(c, "vm-a", MARKER)
    })
    .await;
    c.step("recovery-key-in-no-file-or-log", async {
        let text = std::fs::read_to_string(&key_file).with_context(|| format!("read {}", key_file.display()))?;
        let secret = text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).context("no secret line")?;
        let mut files = Vec::new();
        walk(&c.state, &mut files)?;
        files.retain(|f| f.extension().is_none_or(|e| e != "img"));
        files.push(PathBuf::from(arg("--agent-log").context("--agent-log is required")?));
        for f in &files {
            let bytes = std::fs::read(f).with_context(|| format!("read {}", f.display()))?;
            if String::from_utf8_lossy(&bytes).to_uppercase().contains(secret) {
                bail!("the recovery key is in {}", f.display());
            }
        }
        println!("INFO recovery key searched for in {} files", files.len());
        Ok(())
    })
    .await;
}

/// The instances [`fill`] adds beside vm-a and vm-b: 50 volumes in all.
fn fill_ids() -> impl Iterator<Item = String> {
    (3..=50).map(|n| format!("vm-n{n:02}"))
}

/// The agent's minimum ext4 volume: LUKS2's header takes the first 16 MiB, and 16 MiB of file system.
const FILL_VOLUME_BYTES: u64 = dbagent::instances::validate::MIN_VOLUME_BYTES;

async fn fill(c: &Ctx) {
    let registered = c
        .step("register-48-instances", async {
            let mut inst = pb::instances_client::InstancesClient::new(c.channel.clone());
            for id in fill_ids() {
                let mut spec = spec(&c.data_dir(&id), None);
                if let Some(volume) = spec.volume.as_mut() {
                    volume.size_bytes = FILL_VOLUME_BYTES;
                }
                let req = pb::RegisterInstanceRequest { request_id: rid("reg", &id), id: id.clone(), spec: Some(spec) };
                inst.register_instance(req).await.with_context(|| format!("register {id}"))?;
            }
            Ok(())
        })
        .await;
    if registered.is_none() {
        return;
    }
    // Every create is submitted before the first is waited for: the agent's operation engine is
    // what limits how many run at once, as it would for an orchestrator placing 48 instances.
    c.step("create-48-volumes", async {
        let mut ops = Vec::new();
        for id in fill_ids() {
            let req = pb::CreateVolumeRequest { request_id: rid("create", &id), instance_id: id.clone(), force: true };
            ops.push((id.clone(), c.volumes().create_volume(req).await.with_context(|| format!("create {id}"))?));
        }
        let mut failed = Vec::new();
        for (id, op) in ops {
            if let Err(e) = c.wait(op.into_inner()).await {
                failed.push(format!("{id}: {e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("{} of 48 creates failed: {}", failed.len(), failed.join("; "));
        }
        Ok(())
    })
    .await;
    c.step("48-volumes-open-and-mounted", async {
        let mounts = mount_points();
        for id in fill_ids() {
            let v = c.volume(&id).await?;
            let mapper = PathBuf::from(format!("/dev/mapper/dbagent-{id}"));
            let mounted_here = mounts.contains(&(c.data_dir(&id), mapper.clone()));
            if !(v.active && v.mounted && mounted_here) {
                bail!("{id} is not open and mounted from {} at {}: {v:?}", mapper.display(), c.data_dir(&id).display());
            }
        }
        Ok(())
    })
    .await;
}

fn nix_sync() {
    let _ = std::process::Command::new("sync").status();
}

/// Where the rotation step keeps the keys it rotated away (`<instance> <version> <hex>` lines): in
/// the share, outside everything the leak search reads, so that both boots search for them.
const ROTATED_AWAY: &str = "/share/rotated-away-keys";

fn remember_rotated_away(id: &str, version: u32, key: &VolumeKey) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(ROTATED_AWAY)?;
    writeln!(f, "{id} {version} {}", dbagent::hex::encode(key.as_bytes()))
        .with_context(|| format!("append to {ROTATED_AWAY}"))
}

/// One secret to search for, and the one file allowed to hold it in the clear.
struct Needle {
    kind: &'static str,
    what: String,
    bytes: Vec<u8>,
    home: Option<PathBuf>,
}

/// Every kind of key the agent holds: the current volume key of each instance, the keys rotated
/// away, and the host KEK. A kind with nothing to search for is a failure, not a pass.
async fn needles(c: &Ctx) -> Result<Vec<Needle>> {
    let ks = keystore(&c.state).await?;
    let mut out = Vec::new();
    for id in ["vm-a", "vm-b"] {
        let v = c.volume(id).await?.key_version;
        let key = ks.key(id, v, false, 256).await.with_context(|| format!("current volume key of {id} (v{v})"))?;
        out.push(Needle {
            kind: "current volume key",
            what: format!("{id} v{v}"),
            bytes: key.as_bytes().to_vec(),
            home: None,
        });
    }
    let rotated = std::fs::read_to_string(ROTATED_AWAY).with_context(|| format!("read {ROTATED_AWAY}"))?;
    for line in rotated.lines() {
        let mut parts = line.split(' ');
        let (Some(id), Some(v), Some(hex), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            bail!("{ROTATED_AWAY}: malformed line {line:?}");
        };
        let bytes = dbagent::hex::decode(hex).with_context(|| format!("{ROTATED_AWAY}: {id} v{v} is not hex"))?;
        out.push(Needle { kind: "rotated-away volume key", what: format!("{id} v{v}"), bytes, home: None });
    }
    let kek_file = c.state.join("kek");
    let kek = KekSource { credentials_dir: None, file: kek_file.clone(), generate: false }.load()?;
    out.push(Needle {
        kind: "key-encryption key",
        what: kek_file.display().to_string(),
        bytes: kek.to_vec(),
        home: Some(kek_file),
    });
    for kind in ["current volume key", "rotated-away volume key", "key-encryption key"] {
        if !out.iter().any(|n| n.kind == kind) {
            bail!("no {kind} to search for: the search would prove nothing about it");
        }
    }
    Ok(out)
}

/// Searches every file under the state folder and the agent's log for every key.
async fn leak_scan(c: &Ctx) {
    c.step("no-key-bytes-on-disk-or-in-logs", async {
        let log = PathBuf::from(arg("--agent-log").context("--agent-log is required for the leak search")?);
        let needles = needles(c).await?;
        let mut files = Vec::new();
        walk(&c.state, &mut files)?;
        files.push(log);
        // Managed volume files are ciphertext the size of the volume, too big to search here under
        // emulation; the host searches the raw disk that holds them for the plain-text marker.
        let (images, files): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|f| f.extension().is_some_and(|e| e == "img"));
        let bytes = search(&files, &needles)?;
        let kinds: Vec<String> = needles.iter().map(|n| format!("{} {}", n.kind, n.what)).collect();
        println!(
            "INFO leak search: {} keys ({}) in {} files, {bytes} bytes; not searched (managed volume files): {}",
            needles.len(),
            kinds.join(", "),
            files.len(),
            images.len()
        );
        Ok(())
    })
    .await;
}

/// Fails if any needle is in any file (except its home), raw or as hex (its first 8 bytes, any
/// case), or if a file cannot be read: unread is not clean. Returns the bytes searched.
fn search(files: &[PathBuf], needles: &[Needle]) -> Result<usize> {
    let (mut bytes_read, mut unreadable) = (0usize, Vec::new());
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                unreadable.push(format!("{}: {e}", f.display()));
                continue;
            }
        };
        bytes_read += bytes.len();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for n in needles.iter().filter(|n| n.home.as_deref() != Some(f.as_path())) {
            let hex = dbagent::hex::encode(&n.bytes);
            if bytes.windows(n.bytes.len()).any(|w| w == n.bytes) || text.contains(&hex[..16]) {
                bail!("{} ({}) found in {}", n.kind, n.what, f.display());
            }
        }
    }
    if !unreadable.is_empty() {
        bail!("{} file(s) could not be searched: {}", unreadable.len(), unreadable.join("; "));
    }
    Ok(bytes_read)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let p = e.with_context(|| format!("list {}", dir.display()))?.path();
        if p.is_dir() { walk(&p, out)? } else { out.push(p) }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = PathBuf::from(arg("--state-dir").context("--state-dir is required")?);
    let channel = connect(&state).await?;
    let c = Ctx { channel, state, failures: std::cell::Cell::new(0) };
    match arg("--phase").as_deref().unwrap_or("first") {
        "first" => first(&c, arg("--device")).await,
        "second" => second(&c).await,
        "fill" => fill(&c).await,
        // Its keys were lost on purpose: the search for them has nothing to look for.
        "recovery" => recovery(&c).await,
        other => bail!("unknown phase {other}"),
    }
    if arg("--phase").as_deref() != Some("recovery") {
        leak_scan(&c).await;
    }
    if c.failures.get() > 0 {
        println!("FAIL volume-vm-check {} steps failed", c.failures.get());
        std::process::exit(1);
    }
    println!("PASS volume-vm-check");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needle(home: Option<PathBuf>) -> Needle {
        Needle { kind: "current volume key", what: "vm-a v1".into(), bytes: vec![0xa5; 32], home }
    }

    #[test]
    fn search_finds_raw_and_hex_keys_and_refuses_unreadable_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (clean, raw, hex) = (dir.path().join("clean"), dir.path().join("raw"), dir.path().join("hex"));
        std::fs::write(&clean, b"nothing secret").expect("write");
        std::fs::write(&raw, [b"x".as_slice(), &[0xa5; 32], b"y"].concat()).expect("write");
        std::fs::write(&hex, format!("key={}", "A5".repeat(8))).expect("write");
        assert_eq!(search(std::slice::from_ref(&clean), &[needle(None)]).expect("clean file passes"), 14);

        let found = |f: &Path| search(&[clean.clone(), f.to_path_buf()], &[needle(None)]).unwrap_err().to_string();
        assert_eq!(found(&raw), format!("current volume key (vm-a v1) found in {}", raw.display()));
        assert_eq!(found(&hex), format!("current volume key (vm-a v1) found in {}", hex.display()));
        search(std::slice::from_ref(&raw), &[needle(Some(raw.clone()))]).expect("a key may be in its home");

        let missing = dir.path().join("missing");
        let e = search(&[clean, missing], &[needle(None)]).unwrap_err().to_string();
        assert!(e.starts_with("1 file(s) could not be searched:"), "{e}");
    }
}
