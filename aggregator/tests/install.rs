//! The install scripts of a bundle, run under busybox `sh` (the shell of Venus OS) with
//! busybox's own `cp`, `mv`, `grep`… first on `PATH`, against a temporary root; and once at
//! their own root `/` under real daemontools, in a mount namespace (`daemontools.sh`). The
//! bundle is staged by `install/stage.sh` from the host's build of the daemon and plugins.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const APP: &str = "data/apps/dbus-aggregate-batteries";
const SERVICE: &str = "service/dbus-aggregate-batteries";
const BOOT_LINE: &str = "/data/apps/dbus-aggregate-batteries/enable.sh > /dev/null 2>&1 &";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A temporary device: a staged bundle, an empty root and a folder of busybox applets.
struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    fn new() -> Device {
        let dir = tempfile::tempdir().expect("temp dir");
        let applets = dir.path().join("busybox");
        fs::create_dir(&applets).unwrap();
        let out = Command::new("busybox")
            .arg("--install")
            .arg("-s")
            .arg(&applets)
            .output()
            .expect("busybox is missing: apt-get install busybox (.ci/run does)");
        assert!(out.status.success(), "busybox --install: {out:?}");
        fs::create_dir(dir.path().join("root")).unwrap();
        let device = Device { dir };
        let staged = Command::new("sh")
            .arg(repo().join("install/stage.sh"))
            .arg(device.bundle())
            .arg(support::build_dir())
            .output()
            .unwrap();
        assert!(staged.status.success(), "stage.sh: {}", text(&staged));
        device
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn app(&self) -> PathBuf {
        self.root().join(APP)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    /// Runs `script` under busybox sh with `--root` and `args`.
    fn run(&self, script: &Path, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.path().join("busybox").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("busybox")
            .arg("sh")
            .arg(script)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    /// Runs `script`, which must succeed, and returns what it printed.
    fn ok(&self, script: &Path, args: &[&str]) -> String {
        let out = self.run(script, args);
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            text(&out)
        );
        text(&out)
    }

    fn install(&self) -> String {
        self.ok(&self.bundle().join("install.sh"), &[])
    }

    fn installed(&self, script: &str, args: &[&str]) -> String {
        self.ok(&self.app().join(script), args)
    }

    /// How many lines of rc.local are ours.
    fn boot_lines(&self) -> usize {
        self.read("data/rc.local")
            .lines()
            .filter(|line| line.contains("dbus-aggregate-batteries/enable.sh"))
            .count()
    }

    /// Every file and folder below the root, relative to it.
    fn tree(&self) -> Vec<String> {
        let mut found = Vec::new();
        walk(&self.root(), &self.root(), &mut found);
        found.sort();
        found
    }
}

fn walk(base: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.strip_prefix(base).unwrap().display().to_string());
        if path.is_dir() && !path.is_symlink() {
            walk(base, &path, found);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_scripts_parse_under_busybox_sh() {
    let device = Device::new();
    for script in [
        "install.sh",
        "enable.sh",
        "disable.sh",
        "restart.sh",
        "uninstall.sh",
        "paths.sh",
        "service/run",
        "service/log/run",
    ] {
        let out = Command::new("busybox")
            .args(["sh", "-n"])
            .arg(device.bundle().join(script))
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", text(&out));
    }
}

#[test]
fn a_bundle_holds_the_daemon_the_builtin_plugins_the_config_and_the_scripts() {
    let device = Device::new();
    let bundle = device.bundle();
    let mut plugins: Vec<String> = fs::read_dir(bundle.join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    plugins.sort();
    let builtin: Vec<&str> = support::PLUGIN_FILES
        .into_iter()
        .filter(|file| !file.contains("fault_test"))
        .collect();
    assert_eq!(plugins, builtin);
    assert_eq!(mode(&bundle.join("dbus-aggregate-batteries")), 0o755);
    assert!(!bundle.join("dbus-aggregate-batteries-sim").exists());
    assert_eq!(
        fs::read(bundle.join("config.yaml")).unwrap(),
        fs::read(repo().join("config.yaml")).unwrap()
    );
    for example in ["config-lfp.yaml", "config-lto.yaml"] {
        assert_eq!(
            fs::read(bundle.join("examples").join(example)).unwrap(),
            fs::read(repo().join("install/examples").join(example)).unwrap(),
            "{example}"
        );
    }
    for script in ["install.sh", "enable.sh", "uninstall.sh", "service/run"] {
        assert_eq!(mode(&bundle.join(script)), 0o755, "{script}");
    }
}

#[test]
fn install_upgrade_enable_disable_uninstall() {
    let device = Device::new();

    // A fresh install: the program, the plugins, the default config, the service and one boot
    // line, and check-config has passed.
    let said = device.install();
    assert!(said.contains("created"), "{said}");
    assert!(said.contains(": ok (strategy"), "check-config: {said}");
    let default = fs::read_to_string(repo().join("config.yaml")).unwrap();
    assert_eq!(device.read(&format!("{APP}/config.yaml")), default);
    assert_eq!(device.read(&format!("{APP}/config.default.yaml")), default);
    assert_eq!(mode(&device.app().join("dbus-aggregate-batteries")), 0o755);
    assert_eq!(mode(&device.app().join("plugins")), 0o755);
    assert_eq!(
        mode(&device.app().join("plugins/libplugin_lto_cv.so")),
        0o644
    );
    assert!(!device
        .app()
        .join("plugins/libplugin_fault_test.so")
        .exists());
    for file in ["run", "log/run"] {
        let installed = device.path(&format!("{SERVICE}/{file}"));
        assert_eq!(mode(&installed), 0o755, "{file}");
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(repo().join("install/service").join(file)).unwrap()
        );
    }
    let rc = device.read("data/rc.local");
    assert_eq!(rc, format!("#!/bin/sh\n{BOOT_LINE}\n"));
    assert_eq!(mode(&device.path("data/rc.local")), 0o755);
    let leftovers: Vec<String> = device
        .tree()
        .into_iter()
        .filter(|p| p.ends_with(".new") || p.contains("/."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The user tunes the config, the daemon saves state, and a new version ships another
    // default: a second install keeps the first two and puts the new default beside them.
    let tuned = default.replace("device_instance: 100", "device_instance: 101");
    assert_ne!(tuned, default, "config.yaml has no device_instance: 100");
    fs::write(device.path(&format!("{APP}/config.yaml")), &tuned).unwrap();
    let state = r#"{"version":1,"charge_ah":123.4}"#;
    fs::write(device.path(&format!("{APP}/state/state.json")), state).unwrap();
    let new_default = format!("{default}\n# a newer default\n");
    fs::write(device.bundle().join("config.yaml"), &new_default).unwrap();
    let said = device.install();
    assert!(said.contains("kept"), "{said}");
    assert_eq!(device.read(&format!("{APP}/config.yaml")), tuned);
    assert_eq!(device.read(&format!("{APP}/state/state.json")), state);
    assert_eq!(
        device.read(&format!("{APP}/config.default.yaml")),
        new_default
    );
    assert_eq!(device.boot_lines(), 1);

    // Enabling twice leaves one boot line, and the user's own lines stay.
    let rc = device.path("data/rc.local");
    let mut with_user_line = device.read("data/rc.local");
    with_user_line.push_str("/data/my-own-thing &\n");
    fs::write(&rc, with_user_line).unwrap();
    device.installed("enable.sh", &[]);
    device.installed("enable.sh", &[]);
    assert_eq!(device.boot_lines(), 1);
    assert!(device
        .read("data/rc.local")
        .contains("/data/my-own-thing &\n"));

    // Disabling takes the service and our boot line away, and nothing else.
    device.installed("disable.sh", &[]);
    assert!(!device.path(SERVICE).exists());
    assert_eq!(device.boot_lines(), 0);
    assert!(device
        .read("data/rc.local")
        .contains("/data/my-own-thing &\n"));
    assert_eq!(device.read(&format!("{APP}/config.yaml")), tuned);
    device.installed("enable.sh", &[]);
    assert!(device.path(&format!("{SERVICE}/run")).exists());
    assert_eq!(device.boot_lines(), 1);

    // Uninstalling keeps the config and the state, and only them.
    device.installed("uninstall.sh", &[]);
    assert!(!device.path(SERVICE).exists());
    assert_eq!(device.boot_lines(), 0);
    let mut left: Vec<String> = fs::read_dir(device.app())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["config.yaml", "state"]);
    assert_eq!(device.read(&format!("{APP}/state/state.json")), state);

    // Installed again it takes the kept config; --purge then removes everything and the logs.
    assert!(device.install().contains("kept"));
    assert_eq!(device.read(&format!("{APP}/config.yaml")), tuned);
    let logs = device.path("var/log/dbus-aggregate-batteries");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join("current"), "a line\n").unwrap();
    device.installed("uninstall.sh", &["--purge"]);
    assert!(!device.app().exists());
    assert!(!logs.exists());
    assert!(!device.path(SERVICE).exists());
    assert_eq!(device.boot_lines(), 0);
}

#[test]
fn a_config_that_fails_check_config_is_not_enabled() {
    let device = Device::new();
    device.install();
    device.installed("disable.sh", &[]);
    fs::write(
        device.path(&format!("{APP}/config.yaml")),
        "strategy:\n  plugin: no-such-plugin\n",
    )
    .unwrap();
    let out = device.run(&device.app().join("enable.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("config.yaml has errors"),
        "{}",
        text(&out)
    );
    assert!(!device.path(SERVICE).exists());
    assert!(!device.path("data/rc.local").exists() || device.boot_lines() == 0);
}

#[test]
fn bad_arguments_are_named() {
    let device = Device::new();
    let install = device.bundle().join("install.sh");
    let out = Command::new("busybox")
        .arg("sh")
        .arg(&install)
        .args(["--root", "/nonexistent/root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--root /nonexistent/root: no such folder"),
        "{}",
        text(&out)
    );
    let out = device.run(&device.bundle().join("disable.sh"), &["--purge"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("unknown option --purge"),
        "{}",
        text(&out)
    );
    // The scripts of the app folder are no bundle to install from.
    device.install();
    fs::copy(&install, device.app().join("install.sh")).unwrap();
    let out = device.run(&device.app().join("install.sh"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("run install.sh from the unpacked bundle, not from"),
        "{}",
        text(&out)
    );
}

#[test]
fn under_daemontools_the_service_starts_restarts_upgrades_and_stops() {
    let device = Device::new();
    let chroot = device.dir.path().join("device");
    fs::create_dir_all(chroot.join("tmp")).unwrap();
    let copied = Command::new("cp")
        .arg("-R")
        .arg(device.bundle())
        .arg(chroot.join("tmp/bundle"))
        .status()
        .unwrap();
    assert!(copied.success());
    // The system bus of this device is nowhere: the daemon waits for it, and runs.
    let out = Command::new("sh")
        .arg(repo().join("aggregator/tests/daemontools.sh"))
        .arg(&chroot)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .expect("daemontools.sh");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for step in [
        "started:",
        "logged:",
        "restarted:",
        "upgraded:",
        "disabled:",
    ] {
        assert!(said.contains(step), "{step} {said}");
    }
}

const GUI_PAGE: &str =
    "data/apps/enabled/dbus-aggregate-batteries/gui-v2/dbus-aggregate-batteries.json";

impl Device {
    /// Writes the firmware's version file with `first_line` (as on Venus OS: the version,
    /// then the build date).
    fn set_venus_version(&self, first_line: &str) {
        let file = self.path("opt/victronenergy/version");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, format!("{first_line}\n20250301120000\n")).unwrap();
    }

    /// Runs `script` as [`Device::run`] does, on a machine whose `uname -m` says `machine`.
    fn run_on(&self, machine: &str, script: &Path, args: &[&str]) -> Output {
        let fake = self.dir.path().join("fake-uname");
        fs::create_dir_all(&fake).unwrap();
        let uname = fake.join("uname");
        fs::write(&uname, format!("#!/bin/sh\necho {machine}\n")).unwrap();
        support::set_mode(&uname, 0o755);
        let path = format!(
            "{}:{}:{}",
            fake.display(),
            self.dir.path().join("busybox").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("busybox")
            .arg("sh")
            .arg(script)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("PATH", path)
            .output()
            .unwrap()
    }
}

#[test]
fn the_gui_page_is_enabled_from_venus_os_v3_80_21_and_removed_by_disable_and_uninstall() {
    let shipped = fs::read(repo().join("install/gui-v2/dbus-aggregate-batteries.json")).unwrap();
    assert_eq!(
        fs::read(
            Device::new()
                .bundle()
                .join("gui-v2/dbus-aggregate-batteries.json")
        )
        .unwrap(),
        shipped,
        "the bundle carries the page"
    );
    // Below: the stock page only, said so, and nothing where gui-v2 looks.
    for below in ["v3.70", "v3.80~20", "v3.80~20-large-7"] {
        let device = Device::new();
        device.set_venus_version(below);
        let said = device.install();
        assert!(
            said.contains("shows the stock battery page only"),
            "{below}: {said}"
        );
        assert!(said.contains("v3.80~21 or newer"), "{below}: {said}");
        assert!(!device.path("data/apps/enabled").exists(), "{below}");
        // The app keeps its copy for a later firmware.
        assert_eq!(
            fs::read(device.app().join("gui-v2/dbus-aggregate-batteries.json")).unwrap(),
            shipped
        );
    }
    // At and above: the page where gui-v2 reads it; disable and uninstall take it away.
    for at_or_above in ["v3.80~21", "v3.80~21-large-7", "v3.80", "v3.90~3"] {
        let device = Device::new();
        device.set_venus_version(at_or_above);
        let said = device.install();
        assert!(said.contains("Bank and packs"), "{at_or_above}: {said}");
        assert_eq!(
            fs::read(device.path(GUI_PAGE)).unwrap(),
            shipped,
            "{at_or_above}"
        );
        assert_eq!(mode(&device.path(GUI_PAGE)), 0o644);

        // Unchanged: not written again (gui-v2 reloads on every change of the folder).
        let page = device.path(GUI_PAGE);
        let marker = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        fs::File::options()
            .write(true)
            .open(&page)
            .unwrap()
            .set_modified(marker)
            .unwrap();
        device.install();
        device.installed("enable.sh", &[]);
        assert_eq!(
            fs::metadata(&page).unwrap().modified().unwrap(),
            marker,
            "{at_or_above}"
        );
        // Changed: written again.
        fs::write(&page, "{}").unwrap();
        device.installed("enable.sh", &[]);
        assert_eq!(fs::read(&page).unwrap(), shipped, "{at_or_above}");

        device.installed("disable.sh", &[]);
        assert!(!device
            .path("data/apps/enabled/dbus-aggregate-batteries")
            .exists());
        device.installed("enable.sh", &[]);
        assert_eq!(
            fs::read(&page).unwrap(),
            shipped,
            "{at_or_above}: enable brings it back"
        );
        device.installed("uninstall.sh", &[]);
        assert!(!device
            .path("data/apps/enabled/dbus-aggregate-batteries")
            .exists());
    }
    // Another app's page in the enabled folder stays.
    let device = Device::new();
    device.set_venus_version("v3.80~21");
    let other = device.path("data/apps/enabled/other-app/gui-v2/other-app.json");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    fs::write(&other, "{}").unwrap();
    device.install();
    device.installed("uninstall.sh", &["--purge"]);
    assert!(other.exists());
    assert!(!device
        .path("data/apps/enabled/dbus-aggregate-batteries")
        .exists());
}

#[test]
fn a_bundle_for_another_machine_says_which_bundle_to_take_before_changing_anything() {
    let device = Device::new();
    // The host's build, as uname -m and the installer name its machine, on another machine.
    let (host, own_uname) = match std::env::consts::ARCH {
        "arm" => ("armv7", "armv7l"),
        arch => (arch, arch),
    };
    let (other, wanted) = if host == "armv7" {
        ("aarch64", "aarch64")
    } else {
        ("armv7l", "armv7")
    };
    let out = device.run_on(other, &device.bundle().join("install.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("built for {host}")), "{said}");
    assert!(
        said.contains(&format!("does not fit this device (uname -m: {other})")),
        "{said}"
    );
    assert!(
        said.contains(&format!("take the bundle ending in -{wanted}.tar.gz")),
        "{said}"
    );
    assert!(!said.contains("config.yaml has errors"), "{said}");
    assert!(
        device.tree().is_empty(),
        "nothing changed: {:?}",
        device.tree()
    );

    // The same bundle on its own machine installs.
    let out = device.run_on(own_uname, &device.bundle().join("install.sh"), &[]);
    assert!(out.status.success(), "{}", text(&out));
}
