//! Real database servers for tests: PostgreSQL 15, MariaDB, Redis, each on its own reserved loopback
//! port ([`ReservedPort`]) with a private data folder; never the system-wide services.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A port on 127.0.0.1 that was free a moment ago: another process can take it before the caller's
/// server binds it. Prefer [`ReservedPort`] for a server we start (or port 0 for a listener of our
/// own); this stays for callers that have not moved yet.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Whether something accepts TCP connections on `addr` within `within`, polling every 50 ms: how
/// fixtures and benchmarks wait for a server they started.
pub fn listening_within(addr: std::net::SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A loopback port held for a server the test starts, for as long as this value lives.
///
/// The socket is bound with `SO_REUSEADDR` and never listens. Linux then lets another socket that
/// also sets `SO_REUSEADDR` bind and listen on the same port (PostgreSQL, MariaDB, Redis, rsyslog
/// and the agent's tokio listener all do), while every other bind of that port fails, `bind(0)`
/// and `connect()` never pick it, and a connection to it is refused while our server is down. So
/// there is no window between choosing the port and the server binding it, and a stopped server
/// gets the same port back on restart. (Port 0 read back from the server would need each server to
/// report its port; not all of them do, and a restart would move it.)
pub struct ReservedPort {
    port: u16,
    _socket: socket2::Socket,
}

impl ReservedPort {
    pub fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket to reserve a port");
        socket.set_reuse_address(true).expect("set SO_REUSEADDR on the port reservation");
        let any = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        socket.bind(&any.into()).expect("bind 127.0.0.1:0 to reserve a port");
        let port =
            socket.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).expect("read the reserved port");
        Self { port, _socket: socket }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `program args` as `user` (via runuser when root), panicking with its output on failure.
pub fn run_as(user: &str, program: &str, args: &[&str]) -> String {
    let out = if user.is_empty() {
        Command::new(program).args(args).stdin(Stdio::null()).output()
    } else {
        Command::new("runuser").arg("-u").arg(user).arg("--").arg(program).args(args).stdin(Stdio::null()).output()
    }
    .unwrap_or_else(|e| panic!("start {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A folder under /tmp that `user` owns, removed on drop.
pub struct OwnedDir {
    pub dir: tempfile::TempDir,
}

impl OwnedDir {
    pub fn new(user: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("dbagent-it-").tempdir_in("/tmp").expect("tempdir");
        Command::new("chown").arg(format!("{user}:")).arg(dir.path()).status().expect("chown");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A PostgreSQL 15 cluster run by user postgres, trust auth on 127.0.0.1 only.
pub struct PgServer {
    pub root: OwnedDir,
    pub data: PathBuf,
    pub port: u16,
    /// Held while the server lives, so `stop` + `start` find the port free.
    _reserved: ReservedPort,
}

impl PgServer {
    /// How the agent's backups reach this server's database `db`, as the superuser over TCP.
    pub fn connection(&self, db: &str) -> dbagent::backup::settings::EngineConnection {
        dbagent::backup::settings::EngineConnection {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "postgres".into(),
            database: db.into(),
            bin_dir: PG_BIN.into(),
        }
    }

    pub fn init() -> Self {
        let root = OwnedDir::new("postgres");
        let data = root.path().join("data");
        run_as(
            "postgres",
            &format!("{PG_BIN}/initdb"),
            &["-D", data.to_str().unwrap_or_default(), "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        Self::on(root, data)
    }

    /// A server on an existing (restored) data folder.
    pub fn on(root: OwnedDir, data: PathBuf) -> Self {
        let reserved = ReservedPort::new();
        let server = Self { root, data, port: reserved.port(), _reserved: reserved };
        server.start();
        server
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("pg.log");
        run_as(
            "postgres",
            &format!("{PG_BIN}/pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap_or_default(),
                "-l",
                log.to_str().unwrap_or_default(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// A clean (fast) shutdown; `start` brings the same cluster back.
    pub fn stop(&self) {
        run_as(
            "postgres",
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", self.data.to_str().unwrap_or_default(), "-m", "fast", "-w", "stop"],
        );
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        run_as(
            "postgres",
            "psql",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )
        .trim()
        .to_owned()
    }

    /// Row count and an MD5 of the contents of every pgbench table.
    pub fn pgbench_fingerprint(&self, db: &str) -> String {
        ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
            .iter()
            .map(|t| {
                self.psql(db, &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A MariaDB server run by user mysql on 127.0.0.1 with its own data folder and socket.
pub struct MariaServer {
    pub root: OwnedDir,
    pub data: PathBuf,
    pub port: u16,
    pub socket: PathBuf,
    child: std::process::Child,
    /// `--no-defaults` or `--defaults-file=...`: kept for a restart.
    defaults: String,
    extra: Vec<String>,
    _reserved: ReservedPort,
}

impl MariaServer {
    /// root without a password over TCP (as the logical tests connect).
    pub fn start() -> Self {
        Self::install(&["--auth-root-authentication-method=normal"])
    }

    /// Debian's own accounts: root@localhost and mysql@localhost through unix_socket only.
    pub fn start_debian_auth() -> Self {
        Self::install(&[])
    }

    /// Debian's accounts, and mariadbd started with `server_args(data folder)` added to its
    /// command line (e.g. the `--ssl-*` paths the database TLS test installs into).
    pub fn start_debian_auth_with(server_args: impl FnOnce(&Path) -> Vec<String>) -> Self {
        let (root, data) = Self::install_db(&[]);
        let extra = server_args(&data);
        Self::on_with(root, data, &extra)
    }

    fn install(auth: &[&str]) -> Self {
        let (root, data) = Self::install_db(auth);
        Self::on(root, data)
    }

    fn install_db(auth: &[&str]) -> (OwnedDir, PathBuf) {
        let root = OwnedDir::new("mysql");
        let data = root.path().join("data");
        let datadir = format!("--datadir={}", data.display());
        let mut args = vec!["--user=mysql", datadir.as_str(), "--skip-test-db"];
        args.extend_from_slice(auth);
        {
            // Two bootstraps at once (tests run in parallel threads) can collide on their temporary
            // tables in /tmp ("Unknown table 'mysql.tmp_user_sys'"): one at a time.
            static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            run_as("", "mariadb-install-db", &args);
        }
        (root, data)
    }

    /// A server on an existing (restored) data folder.
    pub fn on(root: OwnedDir, data: PathBuf) -> Self {
        Self::on_with(root, data, &[])
    }

    /// Debian's accounts, the server reading the option files in `conf_dir` (as Debian's reads
    /// `/etc/mysql/mariadb.conf.d`), in the option group `[mariadbd]`.
    pub fn start_debian_auth_reading(conf_dir: &Path) -> Self {
        let (root, data) = Self::install_db(&[]);
        let my_cnf = root.path().join("my.cnf");
        std::fs::write(&my_cnf, format!("!includedir {}\n", conf_dir.display())).expect("write my.cnf");
        Self::on_with_defaults(root, data, &[], &format!("--defaults-file={}", my_cnf.display()))
    }

    /// Stops the server and starts it again on the same folder with the same options (a restart:
    /// what its option files say now is read again).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.root.path(), &self.data, &self.socket, self.port, &self.defaults, &self.extra);
        self.wait_ready();
    }

    fn on_with(root: OwnedDir, data: PathBuf, extra: &[String]) -> Self {
        // Small, for many servers at once; the config-reading server takes its own from its files.
        let mut args = vec!["--innodb-buffer-pool-size=32M".to_owned()];
        args.extend_from_slice(extra);
        Self::on_with_defaults(root, data, &args, "--no-defaults")
    }

    fn on_with_defaults(root: OwnedDir, data: PathBuf, extra: &[String], defaults: &str) -> Self {
        let reserved = ReservedPort::new();
        let port = reserved.port();
        let socket = root.path().join("mysqld.sock");
        let child = Self::spawn(root.path(), &data, &socket, port, defaults, extra);
        let server = Self {
            root,
            data,
            port,
            socket,
            child,
            defaults: defaults.to_owned(),
            extra: extra.to_vec(),
            _reserved: reserved,
        };
        server.wait_ready();
        server
    }

    fn spawn(
        root: &Path,
        data: &Path,
        socket: &Path,
        port: u16,
        defaults: &str,
        extra: &[String],
    ) -> std::process::Child {
        // The option file (or --no-defaults) must come first; the command line wins over files.
        Command::new("mariadbd")
            .args([
                defaults,
                "--user=mysql",
                &format!("--datadir={}", data.display()),
                &format!("--socket={}", socket.display()),
                &format!("--port={port}"),
                "--bind-address=127.0.0.1",
                &format!("--pid-file={}", root.join("mysqld.pid").display()),
                "--skip-log-bin",
                &format!("--log-error={}", root.join("err.log").display()),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Command::new("mariadb-admin")
            .args(["--protocol=TCP", "-h", "127.0.0.1", "-P", &self.port.to_string(), "-uroot", "ping"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// As OS root through the socket: works whichever way root authenticates.
    pub fn sql(&self, sql: &str) -> String {
        let socket = format!("--socket={}", self.socket.display());
        run_as("", "mariadb", &[&socket, "-uroot", "-N", "-B", "-e", sql]).trim().to_owned()
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis server with a temporary config and data folder.
pub struct RedisServer {
    pub root: OwnedDir,
    pub port: u16,
    child: std::process::Child,
    _reserved: ReservedPort,
}

impl RedisServer {
    /// Starts on `dir` (a restored data folder holding dump.rdb) or a fresh one.
    pub fn start(root: Option<OwnedDir>) -> Self {
        let root = root.unwrap_or_else(|| OwnedDir::new("redis"));
        let dir = root.path().to_path_buf();
        Self::start_at(root, &dir)
    }

    /// Starts with `dir` (inside `root`, owned by redis) as its data folder, so that `root` can be
    /// a data root with the server's folder strictly below it.
    pub fn start_at(root: OwnedDir, dir: &Path) -> Self {
        Self::start_at_with(root, dir, "")
    }

    /// Like [`RedisServer::start_at`], with `extra` lines added to its redis.conf (e.g. `tls-port`).
    pub fn start_at_with(root: OwnedDir, dir: &Path, extra: &str) -> Self {
        let reserved = ReservedPort::new();
        let port = reserved.port();
        let conf = root.path().join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\ndbfilename dump.rdb\nsave \"\"\nappendonly no\ndaemonize no\n{extra}",
                dir.display()
            ),
        )
        .expect("write redis.conf");
        // Started as user redis directly, not through runuser: killing runuser would leave the
        // server running after the test.
        let redis = nix::unistd::User::from_name("redis")
            .ok()
            .flatten()
            .expect("system user redis (apt-get install redis-server)");
        // Its own config file, as Debian's /etc/redis/redis.conf is redis's: CONFIG REWRITE works.
        nix::unistd::chown(&conf, Some(redis.uid), Some(redis.gid)).expect("chown redis.conf");
        let child = Self::spawn(&conf);
        let server = Self { root, port, child, _reserved: reserved };
        server.wait_ready();
        server
    }

    fn spawn(conf: &Path) -> std::process::Child {
        let redis = nix::unistd::User::from_name("redis").ok().flatten().expect("system user redis");
        Command::new("redis-server")
            .arg(conf)
            .uid(redis.uid.as_raw())
            .gid(redis.gid.as_raw())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_cli(&["ping"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server and starts it again from its config file (which CONFIG REWRITE may have
    /// changed): a restart.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.root.path().join("redis.conf"));
        self.wait_ready();
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// Stops the server and gives back its folder (for restoring into).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
