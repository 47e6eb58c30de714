//! Drives a full volume lifecycle against a dev-mode agent (`dbagent --dev`) inside the VM and prints
//! `PASS <step> <ms>` / `FAIL <step> <ms> <why>` lines; exits 1 if any step failed.
//!
//! `volume-vm-check --state-dir S [--device /dev/disk/by-id/virtio-vmdata0] [--phase first|second]`
//! - first: register vm-a (on --device, or a managed file) and vm-b (managed file); create both; write
//!   a marker on each; close and reopen vm-a; marker reads back; a wrong key is refused; rotate (old
//!   key refused, new opens); grow online (vm-b's managed file; vm-a on a block device the platform
//!   has not grown is refused; then the host grows the virtio disk under the running guest through
//!   QMP — asked for by writing `/share/want-disk-grow`, answered in `/share/disk-grown` — and vm-a
//!   grows onto it: dm-crypt resize and ext4 online growth on a real block device); markers kept; vm-a's
//!   key does not open vm-b and back; then close both so the host can search the raw disk for the
//!   marker.
//! - second (after a reboot with the same disks and state folder): the agent reopened both volumes
//!   at start-up; the markers read back.
//!
//! Both phases end with a search for key bytes under the state folder and in `--agent-log`.

use anyhow::{Context, Result, bail};
use dbagent::volume::KeyProvider;
use dbagent::volume::crypt::{CryptBackend, CryptError, LibCryptsetup};
use dbagent::volume::keystore::{KekSource, LocalKeystore};
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
        let mut ops = pb::operations_client::OperationsClient::new(self.channel.clone());
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let cur = ops.get_operation(pb::GetOperationRequest { id: op.id.clone() }).await?.into_inner();
            match pb::OperationState::try_from(cur.state) {
                Ok(pb::OperationState::Succeeded) => return Ok(cur.result_json),
                Ok(pb::OperationState::Queued | pb::OperationState::Running) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => bail!("operation {} {}: {:?}", cur.kind, cur.id, cur.error),
            }
        }
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
        os_user: "root".into(),
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
    c.step("close-vm-a", async {
        let op = c
            .volumes()
            .close_volume(pb::CloseVolumeRequest { request_id: rid("close", "vm-a"), instance_id: "vm-a".into() })
            .await?
            .into_inner();
        c.wait(op).await?;
        if Path::new("/dev/mapper/dbagent-vm-a").exists() {
            bail!("/dev/mapper/dbagent-vm-a still exists after close");
        }
        Ok(())
    })
    .await;
    c.step("reopen-vm-a", async {
        let op = c
            .volumes()
            .open_volume(pb::OpenVolumeRequest { request_id: rid("open", "vm-a"), instance_id: "vm-a".into() })
            .await?
            .into_inner();
        c.wait(op).await?;
        check_marker(c, "vm-a", MARKER)
    })
    .await;
    let Some(ks) = c.step("keystore", keystore(&c.state)).await else { return };
    c.step("wrong-key-refused", async {
        let dev = backing(c, "vm-a").await?;
        if opens(&dev, &[0x42; 32]).await? {
            bail!("a random key opened the volume");
        }
        Ok(())
    })
    .await;
    c.step("rotate-key", async {
        let old = ks.key("vm-a", 1, false, 256).await?;
        let op = c
            .volumes()
            .rotate_volume_key(pb::RotateVolumeKeyRequest {
                request_id: rid("rotate", "vm-a"),
                instance_id: "vm-a".into(),
            })
            .await?
            .into_inner();
        c.wait(op).await?;
        let new = ks.key("vm-a", 2, false, 256).await?;
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
        c.step(&format!("close-{id}-at-end"), async {
            let op = c
                .volumes()
                .close_volume(pb::CloseVolumeRequest { request_id: rid("close-end", id), instance_id: id.into() })
                .await?
                .into_inner();
            c.wait(op).await?;
            let mapper = format!("/dev/mapper/dbagent-{id}");
            if Path::new(&mapper).exists() {
                bail!("{mapper} still exists after close");
            }
            Ok(())
        })
        .await;
    }
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

fn nix_sync() {
    let _ = std::process::Command::new("sync").status();
}

/// Every key version of both instances that the keystore still has, searched raw and in hex.
async fn leak_scan(c: &Ctx) {
    let log = arg("--agent-log").map(PathBuf::from);
    c.step("no-key-bytes-on-disk-or-in-logs", async {
        let ks = keystore(&c.state).await?;
        let mut keys = Vec::new();
        for id in ["vm-a", "vm-b"] {
            for v in 1..=3 {
                if let Ok(k) = ks.key(id, v, false, 256).await {
                    keys.push(k);
                }
            }
        }
        let mut files = Vec::new();
        walk(&c.state, &mut files);
        files.extend(log);
        for f in files.iter().filter(|f| f.extension().is_none_or(|e| e != "img")) {
            let bytes = std::fs::read(f).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).to_lowercase();
            for k in &keys {
                let hex = dbagent::hex::encode(k.as_bytes());
                if bytes.windows(k.as_bytes().len()).any(|w| w == k.as_bytes()) || text.contains(&hex[..16]) {
                    bail!("key bytes found in {}", f.display());
                }
            }
        }
        Ok(())
    })
    .await;
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { walk(&p, out) } else { out.push(p) }
    }
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
        other => bail!("unknown phase {other}"),
    }
    leak_scan(&c).await;
    if c.failures.get() > 0 {
        println!("FAIL volume-vm-check {} steps failed", c.failures.get());
        std::process::exit(1);
    }
    println!("PASS volume-vm-check");
    Ok(())
}
