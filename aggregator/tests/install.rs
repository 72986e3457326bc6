//! The install scripts of a bundle, run under busybox `sh` (the shell of Venus OS) with
//! busybox's own `cp`, `mv`, `grep`… first on `PATH`, against a temporary root; and once at
//! their own root `/` under real daemontools, in a mount namespace (`daemontools.sh`). The
//! bundle is staged by `install/stage.sh` from the host's build of the daemon and plugins.

use crate::support;

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
            .expect("busybox is missing: apt-get install busybox (`bash .ci/setup` does)");
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
        "migrate.sh",
        "rollback.sh",
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
    assert_eq!(mode(&bundle.join("dbus-aggregate-batteries-import")), 0o755);
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
    for script in [
        "install.sh",
        "enable.sh",
        "uninstall.sh",
        "migrate.sh",
        "rollback.sh",
        "service/run",
    ] {
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

const OLD: &str = "data/dbus-aggregate-batteries";
/// An rc.local of a device with the Python program 3.4 and a line of the user's own.
const OLD_RC_LOCAL: &str =
    "#!/bin/sh\n/data/my-own-thing &\nbash /data/dbus-aggregate-batteries/reinstall-local.sh\n";

/// The files of the Python program 3.4 as a device holds them: its scripts and service
/// (stand-ins that behave as its own), its settings and state files.
fn python_3_4_into(folder: &Path) {
    copy_tree(&repo().join("aggregator/tests/fixtures/python-3.4"), folder);
    for file in ["settings.py", "charge", "last_balancing"] {
        fs::copy(
            repo()
                .join("aggregator/tests/fixtures/import/v3.4")
                .join(file),
            folder.join(file),
        )
        .unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// Every file below `folder` with its bytes and mode, and every folder with its mode.
fn snapshot(folder: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let mut found = Vec::new();
    let mut paths = Vec::new();
    walk(folder, folder, &mut paths);
    paths.sort();
    for relative in paths {
        let path = folder.join(&relative);
        let bytes = if path.is_dir() {
            Vec::new()
        } else {
            fs::read(&path).unwrap()
        };
        found.push((relative, bytes, mode(&path)));
    }
    found
}

impl Device {
    /// Installs the Python program 3.4 as its install left it: its folder, the /service
    /// symlink and its boot line.
    fn with_python_3_4(&self) {
        python_3_4_into(&self.path(OLD));
        fs::create_dir_all(self.path("service")).unwrap();
        std::os::unix::fs::symlink("/data/dbus-aggregate-batteries/service", self.path(SERVICE))
            .unwrap();
        fs::write(self.path("data/rc.local"), OLD_RC_LOCAL).unwrap();
        fs::set_permissions(
            self.path("data/rc.local"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    /// The state file of the app folder.
    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.read(&format!("{APP}/state/state.json"))).unwrap()
    }

    /// The Python program is enabled exactly as before the switch.
    fn assert_python_enabled(&self) {
        assert_eq!(
            fs::read_link(self.path(SERVICE)).unwrap(),
            Path::new("/data/dbus-aggregate-batteries/service")
        );
        assert_eq!(self.read("data/rc.local"), OLD_RC_LOCAL);
        assert_eq!(mode(&self.path("data/rc.local")), 0o755);
    }

    /// This program is enabled, and the Python program is not.
    fn assert_switched(&self) {
        let service = self.path(SERVICE);
        assert!(!service.is_symlink() && service.is_dir());
        assert_eq!(
            fs::read(service.join("run")).unwrap(),
            fs::read(repo().join("install/service/run")).unwrap()
        );
        assert_eq!(
            self.read("data/rc.local"),
            format!("#!/bin/sh\n/data/my-own-thing &\n{BOOT_LINE}\n")
        );
    }
}

#[test]
fn a_python_3_4_install_is_migrated_rolled_back_and_migrated_again_and_its_folder_never_changes() {
    let device = Device::new();
    device.with_python_3_4();
    let old = snapshot(&device.path(OLD));
    assert!(old.iter().any(|(p, _, _)| p == "settings.py"));
    let untouched = |step: &str| {
        assert!(
            snapshot(&device.path(OLD)) == old,
            "{step}: the Python program's folder changed"
        );
    };

    // A plain install refuses, names the one command that switches, and changes nothing.
    let before = device.tree();
    let out = device.run(&device.bundle().join("install.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("install.sh --migrate"), "{said}");
    assert!(
        said.contains("its service /service/dbus-aggregate-batteries"),
        "{said}"
    );
    assert!(said.contains("its boot line in /data/rc.local"), "{said}");
    assert_eq!(device.tree(), before);
    device.assert_python_enabled();
    untouched("refused install");

    // The switch: settings and state imported, the instance the GUI names carried over, the
    // Python program out of /service and out of the boot, ours in.
    let said = device.ok(&device.bundle().join("install.sh"), &["--migrate"]);
    assert!(said.contains("switched from the Python program"), "{said}");
    assert!(said.contains("rollback.sh"), "{said}");
    // The import's report and the config's header name the file as installed, not the
    // scratch file the import wrote first.
    let config = device.read(&format!("{APP}/config.yaml"));
    assert!(
        !said.contains("/.import/") && !config.contains("/.import/"),
        "{said}\n{config}"
    );
    assert!(
        config.contains(&format!(
            "check-config --config {}/config.yaml",
            device.app().display()
        )),
        "{config}"
    );
    assert!(said.contains(": ok (strategy"), "check-config: {said}");
    device.assert_switched();
    let config = device.read(&format!("{APP}/config.yaml"));
    assert!(config.contains("Imported from"), "{config}");
    assert!(config.contains("device_instance: 0"), "{config}");
    assert_eq!(device.state()["charge_ah"], 306.005);
    assert!(!device.app().join(".import").exists());
    untouched("migrate");

    // A boot runs our line: enable.sh again changes nothing; an upgrade keeps the switch.
    device.installed("enable.sh", &[]);
    device.assert_switched();
    assert!(device.install().contains("kept"));
    device.assert_switched();
    // Uninstalling ours alone would leave no program for the bank.
    let out = device.run(&device.app().join("uninstall.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("rollback.sh"), "{}", text(&out));
    device.assert_switched();
    untouched("boot, upgrade");

    // The way back, in one step: the Python program exactly as it was, ours out of the boot,
    // our folder kept for another switch.
    let said = device.installed("rollback.sh", &[]);
    assert!(said.contains("rolled back"), "{said}");
    device.assert_python_enabled();
    assert_eq!(device.boot_lines(), 0);
    assert!(device.app().join("config.yaml").exists());
    assert!(!device.app().join("migration").exists());
    let out = device.run(&device.app().join("rollback.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to roll back"),
        "{}",
        text(&out)
    );
    untouched("rollback");

    // Enabling ours beside it is refused; switching again keeps the config we had and
    // takes the state anew (the Python program ran since).
    let out = device.run(&device.app().join("enable.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("migrate.sh"), "{}", text(&out));
    device.assert_python_enabled();
    let tuned = config.replace("device_instance: 0", "device_instance: 0\n  # tuned");
    fs::write(device.path(&format!("{APP}/config.yaml")), &tuned).unwrap();
    fs::write(device.path(&format!("{APP}/state/state.json")), "{}").unwrap();
    let said = device.installed("migrate.sh", &[]);
    assert!(said.contains("config.imported.yaml"), "{said}");
    device.assert_switched();
    assert_eq!(device.read(&format!("{APP}/config.yaml")), tuned);
    // The same import, its header naming the file it is in.
    assert_eq!(
        device.read(&format!("{APP}/config.imported.yaml")),
        config.replace("/config.yaml\n", "/config.imported.yaml\n")
    );
    assert_eq!(device.state()["charge_ah"], 306.005);
    untouched("migrate again");

    device.installed("rollback.sh", &[]);
    device.assert_python_enabled();
    untouched("second rollback");
}

#[test]
fn a_feed_in_the_python_program_left_off_is_not_taken_as_the_users() {
    let device = Device::new();
    device.with_python_3_4();
    let old = snapshot(&device.path(OLD));
    // Its log: an episode that switched feed-in off and had not ended when it was stopped.
    let logs = device.path("var/log/dbus-aggregate-batteries");
    fs::create_dir_all(&logs).unwrap();
    fs::write(
        logs.join("@400000006750a1b2c3d4e5f6.s"),
        "INFO:root:Sat Dec  5 11:00:00 2026: DC-coupled PV feed-in de-activated.\n\
         INFO:root:Sat Dec  5 11:20:00 2026: DC-coupled PV feed-in re-activated.\n",
    )
    .unwrap();
    fs::write(
        logs.join("current"),
        "INFO:root:Sun Dec  6 12:00:00 2026: Dynamic CVL reduction started.\n\
         INFO:root:Sun Dec  6 12:00:00 2026: DC-coupled PV feed-in de-activated.\n\
         INFO:root:Sun Dec  6 12:00:01 2026: DC-coupled PV feed-in de-activated.\n",
    )
    .unwrap();

    // Without the user's word the switch does not happen: asked before the Python program is
    // stopped, so nothing was changed and it runs on.
    let out = device.run(&device.bundle().join("install.sh"), &["--migrate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("--user-feed-in 1"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(!said.contains("runs again"), "{said}");
    device.assert_python_enabled();
    assert!(!device.app().join("state/state.json").exists());
    assert!(!device.app().join("migration").exists());

    // With it, the state holds an episode of ours with the user's value to give back.
    device.installed("migrate.sh", &["--user-feed-in", "1"]);
    device.assert_switched();
    let state = device.state();
    assert_eq!(state["feed_in"]["disabled_by_us"], true, "{state}");
    assert_eq!(state["feed_in"]["saved_value"], 1, "{state}");
    assert!(snapshot(&device.path(OLD)) == old);

    // A log whose last word is the restore needs nothing from the user.
    device.installed("rollback.sh", &[]);
    let mut current = fs::read_to_string(logs.join("current")).unwrap();
    current.push_str("INFO:root:Sun Dec  6 12:30:00 2026: DC-coupled PV feed-in re-activated.\n");
    fs::write(logs.join("current"), current).unwrap();
    device.installed("migrate.sh", &[]);
    let state = device.state();
    assert_eq!(state["feed_in"]["disabled_by_us"], false, "{state}");
    assert!(snapshot(&device.path(OLD)) == old);

    // Versions 3.0 to 3.1 write the 0 at the start of the dynamic CVL without a line of their
    // own: a log that ends there needs the user's word too.
    device.installed("rollback.sh", &[]);
    let mut current = fs::read_to_string(logs.join("current")).unwrap();
    current.push_str("INFO:root:Sun Dec  6 13:00:00 2026: Dynamic CVL reduction started.\n");
    fs::write(logs.join("current"), &current).unwrap();
    let out = device.run(&device.app().join("migrate.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--user-feed-in 1"), "{}", text(&out));
    device.assert_python_enabled();
    // A version that reads the setting first then says it found feed-in off already: the 0
    // is the user's own.
    current.push_str("INFO:root:Sun Dec  6 13:00:00 2026: DC-coupled PV feed-in was not active.\n");
    fs::write(logs.join("current"), &current).unwrap();
    device.installed("migrate.sh", &[]);
    let state = device.state();
    assert_eq!(state["feed_in"]["disabled_by_us"], false, "{state}");
}

#[test]
fn restart_refuses_a_config_with_errors() {
    let device = Device::new();
    device.install();
    let config = device.path(&format!("{APP}/config.yaml"));
    let good = fs::read_to_string(&config).unwrap();
    device.installed("restart.sh", &[]);
    fs::write(
        &config,
        good.replace("batteries:", "batteries:\n  no_such_key: 1"),
    )
    .unwrap();
    let out = device.run(&device.app().join("restart.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("no_such_key"), "{said}");
    assert!(said.contains("not restarted"), "{said}");
    // At the next boot the service comes back all the same (no service would leave DVCC
    // without a BMS); the daemon publishes charge and discharge stopped.
    fs::remove_dir_all(device.path(SERVICE)).unwrap();
    let said = device.installed("enable.sh", &[]);
    assert!(said.contains("enabled all the same"), "{said}");
    assert!(device.path(&format!("{SERVICE}/run")).exists());
}

#[test]
fn under_daemontools_a_python_3_4_install_is_migrated_rolled_back_and_migrated_again() {
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
    fs::copy(
        repo().join("aggregator/tests/migration.sh"),
        chroot.join("tmp/scenario.sh"),
    )
    .unwrap();
    python_3_4_into(&chroot.join(OLD));
    fs::create_dir_all(chroot.join("service")).unwrap();
    std::os::unix::fs::symlink(
        "/data/dbus-aggregate-batteries/service",
        chroot.join(SERVICE),
    )
    .unwrap();
    fs::write(chroot.join("data/rc.local"), OLD_RC_LOCAL).unwrap();
    let out = Command::new("sh")
        .arg(repo().join("aggregator/tests/daemontools.sh"))
        .arg(&chroot)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .expect("daemontools.sh");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for step in ["refused:", "migrated:", "rolled back:", "migrated again:"] {
        assert!(said.contains(step), "{step} {said}");
    }
}

#[test]
fn an_upgrade_that_would_refuse_the_kept_config_changes_nothing() {
    let device = Device::new();
    device.install();
    let program = device.app().join("dbus-aggregate-batteries");
    let before = fs::read(&program).unwrap();
    let config = device.path(&format!("{APP}/config.yaml"));
    let mut kept = fs::read_to_string(&config).unwrap();
    kept.push_str("no_such_key: 1\n");
    fs::write(&config, &kept).unwrap();
    // A new version: another program file.
    let mut newer = fs::read(device.bundle().join("dbus-aggregate-batteries")).unwrap();
    newer.extend_from_slice(b"\0newer");
    fs::write(device.bundle().join("dbus-aggregate-batteries"), &newer).unwrap();
    let out = device.run(&device.bundle().join("install.sh"), &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("no_such_key"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(!said.contains("enabled all the same"), "{said}");
    assert_eq!(
        fs::read(&program).unwrap(),
        before,
        "the program was replaced"
    );
    assert_eq!(device.boot_lines(), 1);
}

#[test]
fn disable_and_uninstall_leave_the_python_programs_service_and_logs_alone() {
    // The Python program enabled (its /service link), this one installed but never switched
    // to (or switched back by rollback.sh): our scripts must not stop or unlink it.
    let device = Device::new();
    device.install();
    device.installed("disable.sh", &[]);
    let python = device.path("data/dbus-aggregate-batteries");
    python_3_4_into(&python);
    let service = device.path(SERVICE);
    std::os::unix::fs::symlink(python.join("service"), &service).unwrap();
    let logs = device.path("var/log/dbus-aggregate-batteries");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join("current"), "the Python program's line\n").unwrap();

    let said = device.installed("disable.sh", &[]);
    assert!(said.contains("left as it is"), "{said}");
    assert_eq!(fs::read_link(&service).unwrap(), python.join("service"));
    let said = device.installed("uninstall.sh", &["--purge"]);
    assert!(said.contains("stays"), "{said}");
    assert_eq!(fs::read_link(&service).unwrap(), python.join("service"));
    assert!(python.join("service/run").exists());
    assert_eq!(
        fs::read_to_string(logs.join("current")).unwrap(),
        "the Python program's line\n"
    );
    assert!(!device.app().exists());
}

#[test]
fn a_boot_line_that_cannot_be_written_fails_the_enable() {
    // rc.local is written through a pipe: a failure there must end the script, not only its
    // side of the pipe (the service would be gone after the next reboot).
    let device = Device::new();
    device.install();
    device.installed("disable.sh", &[]);
    std::os::unix::fs::symlink("/nonexistent/rc.local", device.path("data/rc.local.new")).unwrap();
    let out = device.run(&device.app().join("enable.sh"), &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("rc.local"), "{said}");
    assert!(!said.contains("enabled;"), "{said}");
}

#[test]
fn after_the_python_folder_is_removed_uninstall_is_no_dead_end() {
    let device = Device::new();
    device.with_python_3_4();
    device.ok(&device.bundle().join("install.sh"), &["--migrate"]);
    device.assert_switched();
    // While the Python program can come back, uninstalling alone is refused.
    let out = device.run(&device.app().join("uninstall.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("rollback.sh"), "{}", text(&out));
    // Removed for good, as the README tells: nothing to go back to, so nothing refused.
    fs::remove_dir_all(device.path(OLD)).unwrap();
    device.installed("uninstall.sh", &["--purge"]);
    assert!(!device.app().exists());
    assert!(!device.path(SERVICE).exists());
}

#[test]
fn settings_whose_import_the_plugins_refuse_stop_the_switch_before_the_python_program() {
    // Months above the balancing voltage: the old program ran them, lfp-balancing does not.
    let device = Device::new();
    device.with_python_3_4();
    let settings = device.path(&format!("{OLD}/settings.py"));
    let original = fs::read_to_string(&settings).unwrap();
    assert!(original.contains("BALANCING_VOLTAGE = 2.5 "));
    fs::write(
        &settings,
        original.replace("BALANCING_VOLTAGE = 2.5 ", "BALANCING_VOLTAGE = 2.44 "),
    )
    .unwrap();
    let old = snapshot(&device.path(OLD));
    let out = device.run(&device.bundle().join("install.sh"), &["--migrate"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("CHARGE_VOLTAGE_LIST"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(!said.contains("runs again"), "{said}");
    device.assert_python_enabled();
    // Nothing of the import is left for a later run to trip over.
    assert!(!device.app().join("config.yaml").exists());
    assert!(!device.app().join("state/state.json").exists());
    assert!(!device.app().join("migration").exists());
    assert!(!device.app().join(".import").exists());
    assert!(snapshot(&device.path(OLD)) == old);
}

#[test]
fn a_kept_config_that_fails_check_config_stops_the_switch_before_the_python_program() {
    let device = Device::new();
    device.with_python_3_4();
    device.ok(&device.bundle().join("install.sh"), &["--migrate"]);
    device.installed("rollback.sh", &[]);
    let config = device.path(&format!("{APP}/config.yaml"));
    let mut kept = fs::read_to_string(&config).unwrap();
    kept.push_str("no_such_key: 1\n");
    fs::write(&config, &kept).unwrap();
    let state = device.read(&format!("{APP}/state/state.json"));

    let out = device.run(&device.app().join("migrate.sh"), &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("no_such_key"), "{said}");
    assert!(said.contains("kept from an earlier switch"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(!said.contains("runs again"), "{said}");
    device.assert_python_enabled();
    assert_eq!(fs::read_to_string(&config).unwrap(), kept);
    assert!(!device.app().join("config.imported.yaml").exists());
    assert_eq!(device.read(&format!("{APP}/state/state.json")), state);
    assert!(!device.app().join("migration").exists());
}

#[test]
fn a_switch_that_fails_after_the_stop_takes_back_the_config_and_state_it_wrote() {
    let device = Device::new();
    device.with_python_3_4();
    // rc.local is written after the config and the state: make that fail.
    std::os::unix::fs::symlink("/nonexistent/rc.local", device.path("data/rc.local.new")).unwrap();
    let out = device.run(&device.bundle().join("install.sh"), &["--migrate"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("runs again"), "{said}");
    device.assert_python_enabled();
    assert!(!device.app().join("config.yaml").exists(), "{said}");
    assert!(!device.app().join("state/state.json").exists(), "{said}");
    assert!(!device.app().join("migration").exists());

    // The next run is a first switch again: its import becomes config.yaml.
    fs::remove_file(device.path("data/rc.local.new")).unwrap();
    let said = device.installed("migrate.sh", &[]);
    assert!(!said.contains("config.imported.yaml"), "{said}");
    device.assert_switched();
    assert!(device
        .read(&format!("{APP}/config.yaml"))
        .contains("Imported from"));
    assert_eq!(device.state()["charge_ah"], 306.005);

    // A state of an earlier run comes back as it was.
    device.installed("rollback.sh", &[]);
    fs::write(device.path(&format!("{APP}/state/state.json")), "{}").unwrap();
    std::os::unix::fs::symlink("/nonexistent/rc.local", device.path("data/rc.local.new")).unwrap();
    let out = device.run(&device.app().join("migrate.sh"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(device.read(&format!("{APP}/state/state.json")), "{}");
    assert!(device.app().join("config.yaml").exists());
    assert!(!device.app().join("config.imported.yaml").exists());
}

#[test]
fn pass_through_settings_switch_once_the_user_gives_the_bounds_the_old_program_never_used() {
    // A 16-cell LFP bank in pass-through mode on 3.4's shipped (LTO) cell voltages.
    let device = Device::new();
    device.with_python_3_4();
    let settings = device.path(&format!("{OLD}/settings.py"));
    let original = fs::read_to_string(&settings).unwrap();
    let passed_through = original
        .replace(
            "OWN_CHARGE_PARAMETERS = True",
            "OWN_CHARGE_PARAMETERS = False",
        )
        .replace(
            "NR_OF_CELLS_PER_BATTERY = 22",
            "NR_OF_CELLS_PER_BATTERY = 16",
        );
    assert_ne!(passed_through, original);
    fs::write(&settings, passed_through).unwrap();

    let out = device.run(&device.bundle().join("install.sh"), &["--migrate"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("--cell-voltages MIN:MAX"), "{said}");
    assert!(said.contains("--max-currents CHARGE:DISCHARGE"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    device.assert_python_enabled();
    assert!(!device.app().join("config.yaml").exists());

    let out = device.run(
        &device.app().join("migrate.sh"),
        &["--cell-voltages", "2.9"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("two numbers as A:B"), "{}", text(&out));

    // The options go through install.sh --migrate to the import.
    device.ok(
        &device.bundle().join("install.sh"),
        &[
            "--migrate",
            "--cell-voltages",
            "2.9:3.65",
            "--max-currents",
            "200:250",
        ],
    );
    device.assert_switched();
    let config = device.read(&format!("{APP}/config.yaml"));
    for line in [
        "  min_cell_voltage: 2.9\n",
        "  max_cell_voltage: 3.65\n",
        "  max_charge_current: 200\n",
        "  max_discharge_current: 250\n",
    ] {
        assert!(config.contains(line), "{line}{config}");
    }
}
