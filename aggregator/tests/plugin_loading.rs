//! Plugins are real cdylibs loaded from disk: the built ones load, bad files are refused with
//! one clear line each, and a panicking plugin cannot take the daemon down.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::Command;

use aggregator::plugins::{load, scan, scan_for};
use plugin_api::testing::{BankBuilder, BatteryBuilder};
use plugin_api::{BankView, PluginKind};
use support::{built_plugin, plugins_dir_with, set_mode, PLUGIN_FILES};

#[test]
fn every_built_plugin_loads_from_a_folder() {
    let dir = plugins_dir_with(&PLUGIN_FILES);
    let scan = scan(dir.path()).expect("scan");
    assert!(scan.refused.is_empty(), "{:?}", scan.refused);
    let mut found: Vec<(String, PluginKind)> = scan
        .plugins
        .iter()
        .map(|p| (p.name.clone(), p.kind))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        vec![
            ("bms".to_string(), PluginKind::CurrentSource),
            ("fault-test".to_string(), PluginKind::Strategy),
            ("lfp-balancing".to_string(), PluginKind::Strategy),
            ("lto-cv".to_string(), PluginKind::Strategy),
            ("serialbattery".to_string(), PluginKind::Strategy),
            ("smartshunt".to_string(), PluginKind::CurrentSource),
            ("victron".to_string(), PluginKind::CurrentSource),
        ]
    );
    assert!(scan
        .plugins
        .iter()
        .all(|p| p.version == env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_daemon_loads_only_the_selected_plugins_and_falls_back_to_a_scan() {
    let dir = plugins_dir_with(&PLUGIN_FILES);
    let only = scan_for(dir.path(), &["lfp-balancing", "victron"]).expect("scan");
    let mut names: Vec<&str> = only.plugins.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["lfp-balancing", "victron"]);
    // A name whose file is not where the build puts it: every file is looked at.
    fs::rename(
        dir.path().join("libplugin_victron.so"),
        dir.path().join("libthirdparty.so"),
    )
    .unwrap();
    let all = scan_for(dir.path(), &["lfp-balancing", "victron"]).expect("scan");
    assert_eq!(all.plugins.len(), PLUGIN_FILES.len());
    assert!(all.find("victron", PluginKind::CurrentSource).is_some());
}

#[test]
fn a_text_file_is_refused() {
    let dir = plugins_dir_with(&[]);
    let path = dir.path().join("notes.so");
    fs::write(&path, "this is not a library\n").unwrap();
    set_mode(&path, 0o644);
    let err = load(&path).unwrap_err();
    assert_eq!(err.reason, "not a shared library (no ELF header)", "{err}");
    let scan = scan(dir.path()).unwrap();
    assert_eq!(scan.refused.len(), 1);
    assert!(scan.plugins.is_empty());
}

#[test]
fn a_truncated_library_is_refused() {
    let dir = plugins_dir_with(&[]);
    let bytes = fs::read(built_plugin("libplugin_bms.so")).unwrap();
    let path = dir.path().join("libplugin_bms.so");
    // Cut inside the mapped segments and, separately, only inside the trailing debug data:
    // either would load (dlopen maps by the headers) and the first would die of SIGBUS later.
    for cut in [bytes.len() / 50, bytes.len() - 100] {
        fs::write(&path, &bytes[..cut]).unwrap();
        set_mode(&path, 0o755);
        let err = load(&path).unwrap_err();
        assert!(err.reason.starts_with("truncated: the file has"), "{err}");
    }
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    let dir = plugins_dir_with(&[]);
    let libc = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    let Some(libm) = libc else { return };
    let path = dir.path().join("libm.so");
    fs::copy(libm, &path).unwrap();
    set_mode(&path, 0o755);
    let err = load(&path).unwrap_err();
    assert!(
        err.reason.contains("not a dbus-aggregate-batteries plugin"),
        "{err}"
    );
}

#[test]
fn a_plugin_writable_by_others_is_refused_before_loading() {
    let dir = plugins_dir_with(&["libplugin_bms.so"]);
    let path = dir.path().join("libplugin_bms.so");
    set_mode(&path, 0o777);
    let err = load(&path).unwrap_err();
    assert!(
        err.reason
            .contains("writable by others than its owner (mode 777)"),
        "{err}"
    );
    set_mode(&path, 0o775);
    assert!(load(&path).unwrap_err().reason.contains("mode 775"));
}

#[test]
fn a_plugins_folder_writable_by_others_is_refused() {
    let dir = plugins_dir_with(&["libplugin_bms.so"]);
    set_mode(dir.path(), 0o777);
    let err = scan(dir.path()).unwrap_err();
    assert!(
        err.reason.starts_with("folder is writable by others"),
        "{err}"
    );
    assert!(
        load(&dir.path().join("libplugin_bms.so")).is_err(),
        "nor any file in it"
    );
}

#[test]
fn two_plugins_of_the_same_name_keep_the_first() {
    let dir = plugins_dir_with(&["libplugin_bms.so"]);
    let twin = dir.path().join("libplugin_bms_copy.so");
    fs::copy(dir.path().join("libplugin_bms.so"), &twin).unwrap();
    set_mode(&twin, 0o755);
    let scan = scan(dir.path()).unwrap();
    assert_eq!(scan.plugins.len(), 1);
    assert!(
        scan.refused[0].reason.contains("already loaded"),
        "{}",
        scan.refused[0]
    );
}

/// One battery of 22 cells at 52 V whose highest and lowest cells are these (the parity
/// table sets them independently, the highest below the lowest at times).
fn bank(max_cell: f64, min_cell: f64) -> BankView {
    let battery = BatteryBuilder::new("Bat1")
        .cell_extremes(min_cell, max_cell)
        .voltage(52.0)
        .limits(55.0, 100.0, 100.0)
        .charge_mode("Bulk")
        .build();
    BankBuilder::new()
        .battery(battery)
        .cells_per_battery(22)
        .build()
}

#[test]
fn parity_numbers_come_through_the_abi() {
    let dir = plugins_dir_with(&["libplugin_lfp_balancing.so"]);
    let plugin = load(&dir.path().join("libplugin_lfp_balancing.so")).unwrap();
    let mut strategy = plugin.new_strategy("{}").unwrap();
    for (max_cell, ccl) in [
        (1.92, 104.0),
        (2.45, 109.99999999999959),
        (2.5, 19.99999999999997),
    ] {
        let out = strategy.compute_view(&bank(max_cell, 2.05)).unwrap();
        assert_eq!(out.ccl_a, ccl, "CCL at {max_cell} V");
        assert_eq!(out.dcl_a, 104.99999999999959, "DCL at 2.05 V");
    }
}

#[test]
fn a_panicking_plugin_is_contained() {
    let dir = plugins_dir_with(&["libplugin_fault_test.so"]);
    let plugin = load(&dir.path().join("libplugin_fault_test.so")).unwrap();

    let mut strategy = plugin
        .new_strategy(r#"{"fault":"panic","after_ticks":1}"#)
        .unwrap();
    let first = strategy.compute_view(&bank(2.4, 2.2)).unwrap();
    assert_eq!((first.cvl_v, first.ccl_a, first.dcl_a), (55.0, 50.0, 60.0));
    for _ in 0..3 {
        let err = strategy.compute_view(&bank(2.4, 2.2)).unwrap_err();
        assert!(
            err.contains("panicked") && err.contains("deliberate panic"),
            "{err}"
        );
    }

    let err = plugin
        .new_strategy(r#"{"fault":"panic_in_constructor"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("panicked"), "{err}");
    let err = plugin
        .new_strategy(r#"{"fault":"constructor_error"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("fault: "), "{err}");
    let err = plugin.new_current_source("{}").err().unwrap().to_string();
    assert!(err.contains("not a current source"), "{err}");
}

/// Builds a plugin crate (`name`, with `lib_rs`) against a copy of `plugin-api` whose version
/// is `api_version` and whose `lib.rs` is what `edit_api` makes of ours; returns the library in
/// a plugins folder of its own.
fn build_plugin(
    api_version: &str,
    edit_api: impl Fn(String) -> String,
    name: &str,
    lib_rs: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    build_plugin_with(
        &workspace.join("plugin-api"),
        api_version,
        |file, text| {
            if file == "lib.rs" {
                edit_api(text)
            } else {
                text
            }
        },
        name,
        lib_rs,
        Panic::Unwind,
    )
}

/// How a test plugin's own crate is compiled (its dependencies are built as cargo builds
/// them by default, once for every test plugin).
#[derive(Clone, Copy, PartialEq)]
enum Panic {
    /// As cargo builds it by default.
    Unwind,
    /// With `panic = "abort"`: the setting `export_plugin!` records is the one of the crate it
    /// expands in, and linking unwinding dependencies into an aborting library is what rustc
    /// does with the standard library too, so only the plugin's crate needs it.
    Abort,
}

/// [`build_plugin`] against the `plugin-api` sources in `api_sources` (its `src/` and
/// `Cargo.toml`), each source file as `edit_api` makes of it (given its name), the plugin's
/// crate built to `panic`.
///
/// The sources go to `target/test-plugins/src` (a copy of `plugin-api` per version and
/// content, shared by the plugins built against the same one) and the builds to
/// `target/test-plugins`, kept between runs: every test plugin shares one build of the
/// dependencies, and a second run builds nothing again.
fn build_plugin_with(
    api_sources: &Path,
    api_version: &str,
    edit_api: impl Fn(&str, String) -> String,
    name: &str,
    lib_rs: &str,
    panic: Panic,
) -> (tempfile::TempDir, std::path::PathBuf) {
    // One build at a time in this process (cargo would wait for its lock on the folder
    // anyway): two tests may write the same copy of `plugin-api`.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = support::build_dir()
        .parent()
        .expect("the target folder")
        .join("test-plugins");

    let mut api_files: Vec<(String, String)> = fs::read_dir(api_sources.join("src"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let text = fs::read_to_string(entry.path()).unwrap();
            let file = entry.file_name().to_string_lossy().into_owned();
            let text = edit_api(&file, text);
            (file, text)
        })
        .collect();
    api_files.sort();
    let manifest = fs::read_to_string(api_sources.join("Cargo.toml")).unwrap();
    let deps = &manifest[manifest.find("[dependencies]").unwrap()..];
    let deps = deps.replace(".workspace = true", " = \"*\"");
    let deps = deps.replace(
        "serde = \"*\"",
        "serde = { version = \"*\", features = [\"derive\"] }",
    );
    let api_manifest = format!(
        "[package]\nname = \"plugin-api\"\nversion = \"{api_version}\"\nedition = \"2021\"\n\n{deps}"
    );
    let content = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&api_files, &api_manifest).hash(&mut hasher);
        hasher.finish()
    };
    let api_folder = format!("plugin-api-{api_version}-{content:016x}");
    let api = target.join("src").join(&api_folder);
    for (file, text) in &api_files {
        write_if_changed(&api.join("src").join(file), text);
    }
    write_if_changed(&api.join("Cargo.toml"), &api_manifest);

    let plugin = target.join("src").join(name);
    write_if_changed(
        &plugin.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"9.9.9\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nplugin-api = {{ path = \"../{api_folder}\" }}\n\
             abi_stable = \"0.11.3\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n[workspace]\n"
        ),
    );
    write_if_changed(&plugin.join("src/lib.rs"), lib_rs);
    // The workspace's versions (cargo adds the plugin's own two packages to its copy).
    write_if_changed(
        &plugin.join("Cargo.lock"),
        &fs::read_to_string(workspace.join("Cargo.lock")).unwrap(),
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    match panic {
        Panic::Unwind => command.args(["build", "--offline", "--quiet", "--lib"]),
        Panic::Abort => command.args([
            "rustc",
            "--offline",
            "--quiet",
            "--lib",
            "--",
            "-C",
            "panic=abort",
        ]),
    };
    // Without debug info or incremental caches, whatever the caller's profile: the test
    // plugins are never debugged, and one setting keeps their builds valid between runs.
    let status = command
        .current_dir(&plugin)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_INCREMENTAL", "0")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the plugin {name} failed");

    let dir = plugins_dir_with(&[]);
    let file = format!("lib{}.so", name.replace('-', "_"));
    let path = dir.path().join(&file);
    fs::copy(target.join("debug").join(&file), &path).unwrap();
    set_mode(&path, 0o755);
    (dir, path)
}

/// Writes `text` to `path` (and its folders) unless it holds that already: cargo rebuilds
/// what changed by the files' times.
fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Our ABI version with its major and minor version moved by these steps (patch 0).
fn abi_moved(major_step: i64, minor_step: i64) -> String {
    let mut parts = plugin_api::ABI_VERSION
        .split('.')
        .map(|p| p.parse::<i64>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(
        major >= 1,
        "the ABI policy needs a major version of 1 or more"
    );
    format!("{}.{}.0", major + major_step, minor + minor_step)
}

/// The root module as the minor version before ours had it: without the fields appended after
/// its last prefix field, which the macro no longer fills. Fails when nothing follows the last
/// prefix field, or `needs_battery_limits` does not: then this test would check nothing.
fn without_appended_fields(api: String) -> String {
    let start = api.find("pub struct PluginMod {").expect("the root module");
    let last = start + api[start..].find("#[sabi(last_prefix_field)]").unwrap();
    let field_end = last + api[last..].find(",\n").unwrap() + 2;
    let end = field_end + api[field_end..].find("}\n").unwrap();
    let appended = &api[field_end..end];
    assert!(
        appended.contains("pub needs_battery_limits: bool"),
        "needs_battery_limits is no longer appended after the last prefix field: {appended}"
    );
    let init = "                needs_battery_limits: $needs,\n";
    assert!(api.contains(init));
    format!("{}{}", &api[..field_end], &api[end..]).replacen(init, "", 1)
}

/// A different type in the root module: the constructor's storage a word larger.
fn with_a_wider_plugin_kind(api: String) -> String {
    let size = "WithNonExhaustive(size = [usize; 2]";
    assert!(api.contains(size), "the constructor's declaration moved");
    api.replacen(size, "WithNonExhaustive(size = [usize; 3]", 1)
}

/// `path` is refused as built against plugin ABI `version`, naming ours too.
fn assert_refused_naming(path: &Path, version: &str) {
    let err = load(path).unwrap_err();
    let expected = format!(
        "built against plugin ABI {version}, but this daemon speaks plugin ABI {}",
        plugin_api::ABI_VERSION
    );
    assert!(err.reason.starts_with(&expected), "{err}");
}

/// A strategy plugin of a few lines, `name`, that asks for the batteries' own limits.
fn strategy_plugin(name: &str) -> String {
    format!(
        "struct S;\nimpl plugin_api::StrategyImpl for S {{\n    \
         fn compute(&mut self, bank: &plugin_api::BankView) -> Result<plugin_api::StrategyOutput, String> {{\n        \
         Ok(plugin_api::StrategyOutput::limits(bank.voltage_v, 1.0, 2.0, \"old\"))\n    }}\n}}\n\
         #[derive(serde::Deserialize, serde::Serialize)]\nstruct C {{}}\n\
         impl plugin_api::PluginConfig for C {{}}\n\
         fn new(_: &str) -> Result<S, String> {{ Ok(S) }}\n\
         plugin_api::export_plugin! {{ kind: strategy, name: \"{name}\", description: \"d\", config: C, \
         new: new, needs_battery_limits: true }}\n"
    )
}

/// The minor version before ours, `None` at a major's first version (x.0).
fn previous_minor() -> Option<String> {
    let minor: i64 = plugin_api::ABI_VERSION.split('.').nth(1)?.parse().ok()?;
    (minor > 0).then(|| abi_moved(0, -1))
}

/// At a major's first version there is no older minor: what stands in for it is the major
/// before, which must be refused naming both versions (its types are not ours).
fn assert_previous_major_refused(name: &str) {
    let previous = abi_moved(-1, 0);
    let (_dir, path) = build_plugin(&previous, |api| api, name, &strategy_plugin(name));
    assert_refused_naming(&path, &previous);
}

#[test]
fn a_plugin_of_the_minor_abi_before_ours_loads_with_the_defaults_of_what_it_lacks() {
    let Some(previous) = previous_minor() else {
        return assert_previous_major_refused("previous-major");
    };
    let (_dir, path) = build_plugin(
        &previous,
        without_appended_fields,
        "previous-abi",
        &strategy_plugin("previous-abi"),
    );
    let plugin = load(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(plugin.abi_version, previous);
    // Its macro took `needs_battery_limits: true`, but its root module has no such field.
    assert!(!plugin.needs_battery_limits, "the documented default");
    let mut strategy = plugin.new_strategy("{}").unwrap();
    let out = strategy.compute_view(&bank(2.4, 2.2)).unwrap();
    assert_eq!((out.cvl_v, out.ccl_a, out.dcl_a), (52.0, 1.0, 2.0));
    assert_eq!(out.mode.as_str(), "old");
}

#[test]
fn a_plugin_of_an_older_minor_abi_with_a_changed_type_is_refused() {
    let Some(previous) = previous_minor() else {
        return assert_previous_major_refused("previous-major-changed");
    };
    let (_dir, path) = build_plugin(
        &previous,
        |api| with_a_wider_plugin_kind(without_appended_fields(api)),
        "previous-abi-changed",
        &strategy_plugin("previous-abi-changed"),
    );
    let err = load(&path).unwrap_err();
    assert!(
        err.reason.starts_with(&format!(
            "its ABI types differ from plugin ABI {} of this daemon",
            plugin_api::ABI_VERSION
        )),
        "{err}"
    );
}

#[test]
fn a_plugin_of_the_next_major_abi_with_a_changed_type_is_refused_naming_both_versions() {
    let next = abi_moved(1, 0);
    let (_dir, path) = build_plugin(
        &next,
        with_a_wider_plugin_kind,
        "next-major-abi",
        &strategy_plugin("next-major-abi"),
    );
    assert_refused_naming(&path, &next);
}

#[test]
fn a_plugin_of_a_newer_minor_abi_is_refused_naming_both_versions() {
    let newer = abi_moved(0, 1);
    let (_dir, path) = build_plugin(
        &newer,
        |api| api,
        "newer-minor-abi",
        &strategy_plugin("newer-minor-abi"),
    );
    assert_refused_naming(&path, &newer);
}

#[test]
fn only_files_ending_in_so_are_plugins() {
    let dir = plugins_dir_with(&["libplugin_bms.so", "libplugin_victron.so"]);
    // Any name ending in .so loads; a versioned or backed-up library is not even opened.
    fs::rename(
        dir.path().join("libplugin_bms.so"),
        dir.path().join("my-current-source.so"),
    )
    .unwrap();
    fs::rename(
        dir.path().join("libplugin_victron.so"),
        dir.path().join("libplugin_victron.so.bak"),
    )
    .unwrap();
    let scan = scan(dir.path()).expect("scan");
    let names: Vec<&str> = scan.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bms"]);
    assert!(scan.refused.is_empty(), "{:?}", scan.refused);
    assert_eq!(
        scan.skipped,
        [dir.path().join("libplugin_victron.so.bak")],
        "listed for `plugins`"
    );
}

#[test]
fn only_the_pass_through_strategy_needs_the_batteries_limits() {
    let dir = plugins_dir_with(&PLUGIN_FILES);
    let scan = scan(dir.path()).expect("scan");
    let needing: Vec<&str> = scan
        .plugins
        .iter()
        .filter(|p| p.needs_battery_limits)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(needing, ["serialbattery"]);
}

#[test]
fn a_plugin_built_with_panic_abort_is_refused_naming_the_fix() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let (dir, path) = build_plugin_with(
        &workspace.join("plugin-api"),
        plugin_api::ABI_VERSION,
        |_, text| text,
        "abort-plugin",
        &strategy_plugin("abort-plugin"),
        Panic::Abort,
    );
    let err = load(&path).unwrap_err();
    assert!(
        err.reason
            .starts_with("`abort-plugin` was built with panic = \"abort\""),
        "{err}"
    );
    assert!(
        err.reason.contains("rebuild it with panic = \"unwind\""),
        "{err}"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries"))
        .args(["plugins", "--plugins-dir"])
        .arg(dir.path())
        .output()
        .expect("run the binary");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains(
            "refused libabort_plugin.so: `abort-plugin` was built with panic = \"abort\""
        ),
        "{text}"
    );
    assert!(!text.contains("ABI ok"), "{text}");
    // The same plugin built as cargo builds it by default loads.
    let (_dir, path) = build_plugin(
        plugin_api::ABI_VERSION,
        |api| api,
        "unwind-plugin",
        &strategy_plugin("unwind-plugin"),
    );
    load(&path).unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn a_plugin_gives_its_config_with_the_defaults_filled_in() {
    let dir = plugins_dir_with(&["libplugin_lfp_balancing.so"]);
    let plugin = load(&dir.path().join("libplugin_lfp_balancing.so")).unwrap();
    let resolved: serde_json::Value = serde_json::from_str(
        &plugin
            .resolve_config(r#"{"min_cell_voltage": 2.0}"#)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(resolved["min_cell_voltage"], 2.0);
    assert_eq!(resolved["max_cell_voltage"], 2.55, "the default");
    assert_eq!(
        resolved["discharge_curve"]["voltages"],
        serde_json::json!([2.0, 2.1, 2.2]),
        "derived from min_cell_voltage"
    );
    let err = plugin
        .resolve_config(r#"{"min_cell_volts": 2.0}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("min_cell_volts: unknown field"), "{err}");
}

/// A plugin of the ABI before the break to 3.0: built against `plugin-api` as the repository's
/// history has it at version 2.1.0, with that version's macro.
#[test]
fn a_plugin_built_against_the_abi_before_the_break_is_refused_naming_both_versions() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .expect("git (this test builds a plugin from the repository's history)");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let commits =
        String::from_utf8(git(&["log", "--format=%H", "--", "plugin-api/Cargo.toml"])).unwrap();
    let old = commits
        .lines()
        .find(|c| {
            let manifest = git(&["show", &format!("{c}:plugin-api/Cargo.toml")]);
            String::from_utf8_lossy(&manifest).contains("\nversion = \"2.1.0\"")
        })
        .expect(
            "plugin-api 2.1.0 in the history (a shallow clone lacks it: git fetch --unshallow)",
        );
    let sources = tempfile::tempdir().unwrap();
    let archive = git(&["archive", old, "plugin-api"]);
    let mut tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(sources.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tar");
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive).unwrap();
    drop(tar.stdin.take());
    assert!(tar.wait().unwrap().success());
    let lib_rs = "struct S;\nimpl plugin_api::StrategyImpl for S {\n    \
         fn compute(&mut self, bank: &plugin_api::BankView) -> Result<plugin_api::StrategyOutput, String> {\n        \
         Ok(plugin_api::StrategyOutput::limits(bank.voltage_v, 1.0, 2.0, \"old\"))\n    }\n}\n\
         fn new(_: &str) -> Result<S, String> { Ok(S) }\n\
         plugin_api::export_plugin! { kind: strategy, name: \"abi-two\", description: \"d\", new: new }\n";
    let (_dir, path) = build_plugin_with(
        &sources.path().join("plugin-api"),
        "2.1.0",
        |_, text| text,
        "abi-two",
        lib_rs,
        Panic::Unwind,
    );
    assert_refused_naming(&path, "2.1.0");
}

/// A field appended to an input view after its last prefix field: a plugin built with it loads
/// on a daemon whose view lacks it and reads the default the field names. (A plugin built
/// before a field, on a daemon that has it, is the same check seen from the other side:
/// `abi_stable` takes the side with fewer fields of a prefix type for the interface.)
#[test]
fn a_view_field_appended_after_the_prefix_reads_its_default_where_the_daemon_lacks_it() {
    // abi_stable keeps one process-wide map of the prefix layouts it has checked, in which the
    // daemon's own view is always the largest: a plugin whose view has more fields than the
    // daemon's (which the version policy refuses before any layout check, as a newer minor)
    // conflicts with a plugin of the daemon's layout loaded before it. This test loads one, so
    // it runs in a process of its own, without the other tests' plugins.
    const ALONE: &str = "PLUGIN_LOADING_ALONE";
    // The test's name in its binary: the module path below the crate root, then the function.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!(
        "{module}::a_view_field_appended_after_the_prefix_reads_its_default_where_the_daemon_lacks_it"
    );
    if std::env::var_os(ALONE).is_none() {
        let run = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--test-threads", "1"])
            .env(ALONE, "1")
            .output()
            .expect("run this test alone");
        let said = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success() && said.contains("1 passed"), "{said}");
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let appended = |file: &str, text: String| -> String {
        let edit = |text: String, from: &str, to: &str| {
            assert!(text.contains(from), "{file}: `{from}` moved");
            text.replacen(from, to, 1)
        };
        match file {
            "bank.rs" => edit(
                text,
                "    pub dt_s: f64,\n",
                "    pub dt_s: f64,\n    /// Appended.\n    pub extra_v: f64,\n",
            ),
            "abi.rs" => {
                let text = edit(
                    text,
                    "    pub dt_s: f64,\n}",
                    "    pub dt_s: f64,\n    #[sabi(missing_field(value = 47.5))]\n    pub extra_v: f64,\n}",
                );
                let text = edit(
                    text,
                    "dt_s: bank.dt_s,",
                    "dt_s: bank.dt_s, extra_v: bank.extra_v,",
                );
                edit(
                    text,
                    "dt_s: bank.dt_s(),",
                    "dt_s: bank.dt_s(), extra_v: bank.extra_v(),",
                )
            }
            _ => text,
        }
    };
    let lib_rs = strategy_plugin("appended-view")
        .replace("bank.voltage_v, 1.0, 2.0", "bank.extra_v, 1.0, 2.0");
    let (_dir, path) = build_plugin_with(
        &workspace.join("plugin-api"),
        plugin_api::ABI_VERSION,
        appended,
        "appended-view",
        &lib_rs,
        Panic::Unwind,
    );
    let plugin = load(&path).unwrap_or_else(|err| panic!("{err}"));
    let mut strategy = plugin.new_strategy("{}").unwrap();
    let out = strategy.compute_view(&bank(2.4, 2.2)).unwrap();
    assert_eq!(out.cvl_v, 47.5, "the appended field's default");
}

#[test]
fn a_plugin_owned_by_another_user_is_refused() {
    let dir = plugins_dir_with(&["libplugin_bms.so"]);
    let path = dir.path().join("libplugin_bms.so");
    let me = rustix::process::geteuid().as_raw();
    // Another user than root and than us: only root can hand a file to one.
    let other = if me == 0 { 4242 } else { me };
    if std::os::unix::fs::chown(&path, Some(other), None).is_err() || other == me {
        eprintln!("not run: only root can give a file to another user");
        return;
    }
    let err = load(&path).unwrap_err();
    assert!(err.reason.contains("owned by user 4242"), "{err}");
    std::os::unix::fs::chown(&path, Some(me), None).unwrap();
    assert!(load(&path).is_ok());
}

#[test]
fn a_link_into_a_folder_others_may_write_is_refused() {
    // The plugins folder is tight, but its file leads into a folder anyone may write, where
    // the library could be swapped.
    let dir = plugins_dir_with(&[]);
    let open = tempfile::tempdir().unwrap();
    set_mode(open.path(), 0o777);
    let real = open.path().join("libplugin_bms.so");
    fs::copy(support::built_plugin("libplugin_bms.so"), &real).unwrap();
    set_mode(&real, 0o644);
    let link = dir.path().join("libplugin_bms.so");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = load(&link).unwrap_err();
    assert!(err.reason.contains("it leads to"), "{err}");
    assert!(err.reason.contains("writable by others"), "{err}");
    set_mode(open.path(), 0o755);
    assert!(load(&link).is_ok());
}
