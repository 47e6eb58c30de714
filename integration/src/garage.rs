//! A single-node Garage (S3-compatible store) on free loopback ports with the buckets a test asks
//! for, and signed S3 listings by hand to check what the agent left in them. A missing Garage binary
//! is a panic naming how to install it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::ReservedPort;

/// Garage in the default tools cache; the tests run [`garage_bin`], which honours `DBAGENT_TOOLS`.
pub const GARAGE_BIN: &str = "/var/cache/dbagent-tools/bin/garage";

/// The tools cache of integration/run-tests.sh: `DBAGENT_TOOLS` (set by `run-tests.sh --fresh`), else
/// /var/cache/dbagent-tools.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("DBAGENT_TOOLS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/var/cache/dbagent-tools"),
    }
}

/// `<tools_dir>/bin/garage`.
pub fn garage_bin() -> PathBuf {
    tools_dir().join("bin").join("garage")
}

pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const REGION: &str = "garage";

pub struct Garage {
    pub dir: tempfile::TempDir,
    pub s3_port: u16,
    pub buckets: Vec<String>,
    config: PathBuf,
    bin: PathBuf,
    child: Child,
    /// rpc, s3 and admin ports, held for Garage's whole life (Garage's tokio listeners set
    /// `SO_REUSEADDR`, so they bind over the reservation and nothing else can take the ports).
    _ports: [ReservedPort; 3],
    /// A port nothing listens on, for a destination that must be unreachable.
    dead_port: ReservedPort,
}

impl Garage {
    /// Panics (never skips) when Garage is missing: `integration/run-tests.sh` installs it.
    pub fn start(buckets: &[&str]) -> Self {
        let bin = garage_bin();
        assert!(
            bin.exists(),
            "{} is not installed: run integration/run-tests.sh, or `cargo install garage@2.5.0 --locked \
             --no-default-features --features bundled-libs,lmdb --root {}`",
            bin.display(),
            tools_dir().display()
        );
        let dir = tempfile::tempdir().expect("garage dir");
        let ports = [ReservedPort::new(), ReservedPort::new(), ReservedPort::new()];
        let (rpc, s3, admin) = (ports[0].port(), ports[1].port(), ports[2].port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{SECRET}\"\n\n[s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                d = dir.path().display()
            ),
        )
        .expect("write garage.toml");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("garage.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .expect("start garage");
        let mut g = Self {
            dir,
            s3_port: s3,
            buckets: Vec::new(),
            config,
            bin,
            child,
            _ports: ports,
            dead_port: ReservedPort::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = loop {
            if let Some(id) = g.try_cli(&["node", "id", "-q"]) {
                break id.split('@').next().unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < deadline, "garage did not start");
            std::thread::sleep(Duration::from_millis(300));
        };
        // `node id` reads the node's key from its metadata folder and can answer before the RPC
        // server listens; `status` goes through RPC, so the layout commands after it find the server.
        while g.try_cli(&["status"]).is_none() {
            assert!(Instant::now() < deadline, "garage did not answer on its RPC port");
            std::thread::sleep(Duration::from_millis(300));
        }
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["key", "import", "--yes", KEY_ID, SECRET, "-n", "agent"]);
        for b in buckets {
            g.cli(&["bucket", "create", b]);
            g.cli(&["bucket", "allow", "--read", "--write", "--owner", b, "--key", "agent"]);
            g.buckets.push((*b).to_owned());
        }
        g
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(&self.bin).arg("-c").arg(&self.config).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin).arg("-c").arg(&self.config).args(args).output().expect("garage cli");
        assert!(out.status.success(), "garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A signed S3 GET of `path_and_query` by hand (curl --aws-sigv4): the raw XML answer. Panics
    /// with curl's stderr and the body unless curl succeeded and S3 answered 200, so a listing that
    /// failed is never read as an empty one.
    fn s3_get(&self, path_and_query: &str, what: &str) -> String {
        self.s3_request(&[], path_and_query, what, (KEY_ID, SECRET))
    }

    fn s3_request(&self, extra: &[&str], path_and_query: &str, what: &str, (key_id, secret): (&str, &str)) -> String {
        let url = format!("{}/{path_and_query}", self.endpoint());
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3"), "--user", &format!("{key_id}:{secret}")])
            .args(["-H", "x-amz-content-sha256:UNSIGNED-PAYLOAD"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("run curl for {what} (apt-get install curl): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `-w` writes the HTTP status after the body, on a line of its own, whatever the outcome.
        let (body, http_code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        assert!(
            out.status.success() && http_code == "200",
            "{what} of {url}: curl {}, HTTP {http_code:?}: {}\n{body}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        body.to_owned()
    }

    /// Downloads object `key` of `bucket` into `file` (a signed GET by hand, as anyone holding the
    /// bucket's credentials can).
    pub fn download(&self, bucket: &str, key: &str, file: &std::path::Path) {
        let out = file.to_string_lossy();
        self.s3_request(&["-o", &out], &format!("{bucket}/{key}"), "GetObject", (KEY_ID, SECRET));
    }

    /// Writes `file` as object `key` of `bucket` (a signed PUT by hand): storage rewritten behind
    /// the agent's back.
    pub fn upload(&self, bucket: &str, key: &str, file: &std::path::Path) {
        let from = file.to_string_lossy();
        self.s3_request(&["--upload-file", &from], &format!("{bucket}/{key}"), "PutObject", (KEY_ID, SECRET));
    }

    /// S3 ListMultipartUploads of `bucket`: the raw XML, checked to be that listing, not truncated.
    pub fn list_multipart_uploads(&self, bucket: &str) -> String {
        let xml = self.s3_get(&format!("{bucket}?uploads="), "ListMultipartUploads");
        assert_complete_listing(&xml, "ListMultipartUploadsResult", bucket);
        xml
    }

    /// Keys in `bucket` (ListObjectsV2), by hand.
    pub fn list_keys(&self, bucket: &str) -> Vec<String> {
        let xml = self.s3_get(&format!("{bucket}?list-type=2"), "ListObjectsV2");
        assert_complete_listing(&xml, "ListBucketResult", bucket);
        let keys: Vec<String> =
            xml.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect();
        let count = xml.split("<KeyCount>").nth(1).and_then(|s| s.split("</KeyCount>").next());
        assert_eq!(count, Some(keys.len().to_string().as_str()), "ListObjectsV2 of {bucket}: keys read apart\n{xml}");
        keys
    }

    /// Destination configs: one per bucket, named az1.., optionally with a dead endpoint for one.
    pub fn destinations(&self, dead: Option<&str>) -> Vec<dbagent::backup::settings::DestinationConfig> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let name = format!("az{}", i + 1);
                let endpoint = if dead == Some(name.as_str()) {
                    format!("http://127.0.0.1:{}", self.dead_port.port())
                } else {
                    self.endpoint()
                };
                dbagent::backup::settings::DestinationConfig::S3 {
                    name,
                    bucket: b.clone(),
                    endpoint,
                    region: REGION.into(),
                    access_key_id: KEY_ID.into(),
                    secret_access_key: SECRET.into(),
                    prefix: String::new(),
                    allow_http: true,
                }
            })
            .collect()
    }
}

/// A listing that is not the one asked for, or only its first page, would hide objects.
fn assert_complete_listing(xml: &str, root: &str, bucket: &str) {
    assert!(xml.contains(&format!("<{root}")), "{bucket}: not a {root}:\n{xml}");
    assert!(!xml.contains("<IsTruncated>true</IsTruncated>"), "{bucket}: the listing is truncated:\n{xml}");
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(f: impl FnOnce() -> Vec<String>) -> String {
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("the listing must fail");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    /// "No object left" must never pass because the listing itself failed.
    #[test]
    fn a_failed_listing_panics_instead_of_listing_nothing() {
        let garage = Garage::start(&["present"]);
        let file = garage.dir.path().join("object");
        std::fs::write(&file, b"x").unwrap();
        let file = file.to_str().unwrap();
        garage.s3_request(&["-T", file], "present/a/key", "PutObject", (KEY_ID, SECRET));
        assert_eq!(garage.list_keys("present"), ["a/key"], "the allowed listing sees the object");

        let missing = panic_message(|| garage.list_keys("absent"));
        assert!(missing.contains("HTTP \"404\"") && missing.contains("NoSuchBucket"), "{missing}");

        let wrong_secret = "f".repeat(SECRET.len());
        let forbidden = panic_message(|| {
            let xml = garage.s3_request(&[], "present?list-type=2", "ListObjectsV2", (KEY_ID, &wrong_secret));
            vec![xml]
        });
        assert!(forbidden.contains("HTTP \"403\"") && forbidden.contains("AccessDenied"), "{forbidden}");
    }
}
