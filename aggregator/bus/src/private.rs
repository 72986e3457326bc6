//! A private `dbus-daemon` for `demo`, the simulator and the tests: a configuration of its own
//! (Venus OS's policy: anyone may own any name; no system files needed), a socket in a
//! temporary folder, stopped when dropped.
//!
//! The D-Bus layer writes no file itself: the configuration file is written by the caller's
//! writer ([`WriteFile`]; the daemon's programs pass their one state writer,
//! `aggregator::state_file::write_atomically`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Writes `bytes` as the file `path` (whole, or not at all).
pub type WriteFile = fn(&Path, &[u8]) -> std::io::Result<()>;

/// A running private bus.
pub struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

const CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>@LISTEN@</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_match_rules_per_connection">1024</limit>
</busconfig>
"#;

impl PrivateBus {
    /// Starts `dbus-daemon` in the foreground and waits for its address; `write` writes its
    /// configuration file.
    pub fn start(write: WriteFile) -> std::io::Result<PrivateBus> {
        let dir = tempfile::Builder::new().prefix("private-bus-").tempdir()?;
        let listen = format!("unix:dir={}", dir.path().display());
        Self::spawn(dir, &listen, write)
    }

    /// Starts a bus on the socket `socket`, so that a bus can be stopped and started again at
    /// the same address (a bus killed leaves its socket behind: the caller removes it first).
    pub fn start_at(socket: &Path, write: WriteFile) -> std::io::Result<PrivateBus> {
        let dir = tempfile::Builder::new().prefix("private-bus-").tempdir()?;
        let listen = format!("unix:path={}", socket.display());
        Self::spawn(dir, &listen, write)
    }

    /// Starts a bus listening on `listen`, a D-Bus server address (`unix:abstract=…`).
    pub fn start_listening(listen: &str, write: WriteFile) -> std::io::Result<PrivateBus> {
        let dir = tempfile::Builder::new().prefix("private-bus-").tempdir()?;
        Self::spawn(dir, listen, write)
    }

    fn spawn(
        dir: tempfile::TempDir,
        listen: &str,
        write: WriteFile,
    ) -> std::io::Result<PrivateBus> {
        let config = dir.path().join("bus.conf");
        write(&config, CONFIG.replace("@LISTEN@", listen).as_bytes())?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| {
                std::io::Error::new(
                    err.kind(),
                    format!(
                        "cannot start `dbus-daemon` ({err}); install it with \
                         `apt-get install dbus-daemon`"
                    ),
                )
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().to_string();
        if address.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("dbus-daemon printed no address"));
        }
        Ok(PrivateBus {
            child,
            address,
            _dir: dir,
        })
    }

    /// The address to connect to (`unix:path=…,guid=…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the daemon now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.stop();
    }
}
