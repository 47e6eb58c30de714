//! A private rsyslogd as a log drain: its own config, work folder and pid file, listening on
//! 127.0.0.1 only, writing what it receives from our test instance to a file. Killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free port")
}

pub fn rsyslogd_available() -> bool {
    Path::new("/usr/sbin/rsyslogd").exists()
}

/// PEM files of a test CA and a server certificate for 127.0.0.1 signed by it.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "logs test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let files = Self { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.ca, ca_cert.pem()).expect("write CA");
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

pub struct Rsyslog {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub output: PathBuf,
    conf: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd on `port` (plain TCP, or TLS with `tls`), writing the MSG of every message
    /// from app-name `inst-1` to `<dir>/received.log`, one per line.
    pub fn start(dir: &Path, port: u16, tls: Option<&TlsFiles>) -> Self {
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).expect("create rsyslog work folder");
        let output = dir.join("received.log");
        let (global, input) = match tls {
            None => (String::new(), "module(load=\"imtcp\")".to_string()),
            Some(t) => (
                format!(
                    "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\")\n",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")".to_string(),
            ),
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\" maxMessageSize=\"256k\")\n{global}{input}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
                 if $app-name == \"inst-1\" then {{\n  action(type=\"omfile\" file=\"{out}\" template=\"msgonly\" asyncWriting=\"off\" flushOnTXEnd=\"on\")\n  stop\n}}\n",
                work = work.display(),
                out = output.display(),
            ),
        )
        .expect("write rsyslog.conf");
        let mut r = Self { child: None, port, dir: dir.to_path_buf(), output, conf };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let pid = self.dir.join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid);
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The messages received so far.
    pub fn received(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits until at least `n` messages arrived, or `timeout`; returns what arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
