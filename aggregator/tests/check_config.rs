//! `check-config` on the shipped config.yaml and on broken copies of it: exit 0, or exit 2
//! with every error naming the key (and its line).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{plugins_dir_with, PLUGIN_FILES};

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.yaml")
}

/// A whole example of `install/examples/`.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../install/examples")
        .join(name)
}

fn run(args: &[&str], config: &Path, plugins: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries"))
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--plugins-dir")
        .arg(plugins)
        .output()
        .expect("run the binary")
}

/// The LTO example (every key of `lfp-balancing` written out) with `from` replaced by `to`
/// (each must occur), written to a temp file.
fn broken(edits: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    broken_from(&example("config-lto.yaml"), edits)
}

fn broken_from(file: &Path, edits: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let mut text = std::fs::read_to_string(file).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "the shipped config no longer holds {from:?}"
        );
        text = text.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn line_of(path: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_shipped_config_passes() {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &shipped_config(), plugins.path());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("ok (strategy serialbattery, current source bms"));
}

/// A refused configuration: exit 2, and a line naming `key` at the line of `needle`.
fn refused(path: &Path, key: &str, needle: &str) -> String {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], path, plugins.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let line = line_of(path, needle);
    assert!(
        text.contains(&format!(":{line}: {key}")),
        "{key} at {line}: {text}"
    );
    text
}

#[test]
fn voltage_orders_that_cannot_work_are_refused_naming_the_key() {
    let lfp = example("config-lfp.yaml");
    // Today's old LFP example: months above the balancing voltage and max cell voltage.
    let (_d, path) = broken_from(
        &lfp,
        &[(
            "charge_voltages: [3.45, 3.45, 3.40,",
            "charge_voltages: [3.55, 3.45, 3.40,",
        )],
    );
    let text = refused(
        &path,
        "strategy.config.charge_voltages[0]: ",
        "charge_voltages:",
    );
    assert!(text.contains("at most balancing_voltage"), "{text}");
    let (_d, path) = broken_from(
        &lfp,
        &[("balancing_voltage: 3.50", "balancing_voltage: 3.55")],
    );
    refused(
        &path,
        "strategy.config.balancing_voltage: ",
        "balancing_voltage:",
    );
    let (_d, path) = broken_from(
        &lfp,
        &[("    max_cell_voltage: 3.55", "    max_cell_voltage: 3.70")],
    );
    let text = refused(
        &path,
        "strategy.config.max_cell_voltage: ",
        "    max_cell_voltage:",
    );
    assert!(text.contains("above safety.max_cell_voltage"), "{text}");
    let (_d, path) = broken_from(
        &lfp,
        &[("    min_cell_voltage: 3.00", "    min_cell_voltage: 2.70")],
    );
    let text = refused(
        &path,
        "strategy.config.min_cell_voltage: ",
        "    min_cell_voltage:",
    );
    assert!(text.contains("below safety.min_cell_voltage"), "{text}");
    // lto-cv: its charge voltage above its own max cell voltage, and above the safety bound.
    let (_d, path) = with_strategy(
        "strategy:\n  plugin: lto-cv\n  config:\n    charge_voltage: 2.58\n    max_cell_voltage: 2.55\n",
    );
    refused(&path, "strategy.config.charge_voltage: ", "charge_voltage:");
    let (_d, path) =
        with_strategy("strategy:\n  plugin: lto-cv\n  config:\n    charge_voltage: 2.7\n");
    let text = refused(&path, "strategy.config.charge_voltage: ", "charge_voltage:");
    assert!(text.contains("above safety.max_cell_voltage"), "{text}");
}

/// The LTO example with its `strategy:` section replaced by `section`.
fn with_strategy(section: &str) -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(example("config-lto.yaml")).unwrap();
    let start = text.find("\nstrategy:").unwrap() + 1;
    let end = text.find("\n# Bounds the daemon enforces").unwrap() + 1;
    let old = &text[start..end];
    broken(&[(old, section)])
}

#[test]
fn the_new_safety_bounds_are_required_and_checked() {
    let (_d, path) = broken(&[("  min_charge_temperature: -20\n", "")]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("missing field `min_charge_temperature`"),
        "{}",
        stdout(&out)
    );
    let (_d, path) = broken(&[(
        "  max_charge_temperature: 50",
        "  max_charge_temperature: -30",
    )]);
    refused(
        &path,
        "safety.min_charge_temperature: ",
        "min_charge_temperature:",
    );
    let (_d, path) = broken(&[("  min_cell_voltage: 1.8", "  min_cell_voltage: 2.7")]);
    refused(
        &path,
        "safety.min_cell_voltage: ",
        "  min_cell_voltage: 2.7",
    );
    let (_d, path) = broken(&[("  bms_limits: share", "  bms_limits: average")]);
    refused(&path, "safety.bms_limits", "bms_limits:");
}

#[test]
fn the_lfp_and_lto_examples_pass_too() {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    for name in ["config-lfp.yaml", "config-lto.yaml"] {
        let out = run(&["check-config"], &example(name), plugins.path());
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("ok (strategy lfp-balancing"),
            "{name}"
        );
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let (_dir, path) = broken(&[(
        "  on_lost: block_charge",
        "  on_lost: block_charge\n  on_loss: block_all",
    )]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    let line = line_of(&path, "on_loss:");
    assert!(
        stdout(&out).contains(&format!(
            ":{line}: batteries.on_loss: unknown field `on_loss`"
        )),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unknown_key_in_a_plugin_section_is_named() {
    let (_dir, path) = broken(&[(
        "    zero_soc: true",
        "    zero_soc: true\n    zero_socc: true",
    )]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("strategy.config"), "{}", stdout(&out));
    assert!(stdout(&out).contains("zero_socc"), "{}", stdout(&out));
}

#[test]
fn a_curve_of_unequal_lengths_is_named() {
    let (_dir, path) = broken(&[("factors: [0.2, 1, 1, 0.1, 0]", "factors: [0.2, 1, 1, 0.1]")]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    let line = line_of(&path, "charge_curve:");
    assert!(
        stdout(&out).contains(&format!(":{line}: strategy.config.charge_curve")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn eleven_months_are_named() {
    let (_dir, path) = broken(&[("2.42, 2.45, 2.45]", "2.42, 2.45]")]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    let line = line_of(&path, "charge_voltages:");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(":{line}: strategy.config.charge_voltages: ")),
        "{text}"
    );
    assert!(text.contains("12"), "{text}");
}

#[test]
fn a_negative_current_is_named_in_host_and_plugin_sections() {
    let (_dir, path) = broken(&[
        (
            "    max_charge_current: 200",
            "    max_charge_current: -200",
        ),
        (
            "  max_discharge_current: 300",
            "  max_discharge_current: -1",
        ),
    ]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    let host_line = line_of(&path, "max_discharge_current: -1");
    assert!(
        text.contains(&format!(":{host_line}: safety.max_discharge_current: ")),
        "{text}"
    );
    // The host's own errors come first; plugin sections are checked once the host's are fine.
    let (_dir, path) = broken(&[(
        "    max_charge_current: 200",
        "    max_charge_current: -200",
    )]);
    let out = run(&["check-config"], &path, plugins.path());
    let text = stdout(&out);
    let line = line_of(&path, "max_charge_current: -200");
    assert!(
        text.contains(&format!(":{line}: strategy.config.max_charge_current: ")),
        "{text}"
    );
}

#[test]
fn a_plugin_that_is_not_there_is_named_with_the_alternatives() {
    let (_dir, path) = broken(&[("  plugin: lfp-balancing", "  plugin: lfp-balance")]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("strategy.plugin: no strategy plugin named `lfp-balance`; available: fault-test, lfp-balancing, lto-cv, serialbattery"), "{text}");
    let (_dir, path) = broken(&[("  plugin: lfp-balancing", "  plugin: victron")]);
    let text = stdout(&run(&["check-config"], &path, plugins.path()));
    assert!(
        text.contains("`victron` is a current-source plugin, not a strategy plugin"),
        "{text}"
    );
}

#[test]
fn plugins_lists_kind_version_and_abi_status() {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    std::fs::write(plugins.path().join("README.so"), "not a plugin").unwrap();
    support::set_mode(&plugins.path().join("README.so"), 0o644);
    std::fs::write(
        plugins.path().join("libplugin_old.so.1"),
        "a versioned library",
    )
    .unwrap();
    let out = run(&["plugins"], &shipped_config(), plugins.path());
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("plugin ABI {}", plugin_api::ABI_VERSION)),
        "{text}"
    );
    let lfp = text
        .lines()
        .find(|l| l.trim_start().starts_with("lfp-balancing"))
        .expect(&text);
    assert!(
        lfp.contains("strategy") && lfp.contains("0.1.0") && lfp.contains("ABI ok"),
        "{lfp}"
    );
    assert!(
        lfp.contains(&format!("ABI ok {}", plugin_api::ABI_VERSION)),
        "{lfp}"
    );
    assert!(
        text.contains(
            "skipped libplugin_old.so.1: not a plugin file name (plugin files end in .so"
        ),
        "{text}"
    );
    assert!(
        text.contains("refused README.so: not a shared library (no ELF header)"),
        "{text}"
    );
}

#[test]
fn an_own_strategy_without_a_cell_count_is_refused_and_pass_through_needs_a_voltage_bound() {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let (_dir, path) = broken(&[("  cells: 22\n", "")]);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "batteries.cells: strategy lfp-balancing computes its limits from the cell count: \
             set batteries.cells"
        ),
        "{}",
        stdout(&out)
    );
    // The pass-through takes the packs' own limits: no count needed, but a bound on the bank
    // voltage is, as packs that publish no cell count leave no CVL ceiling otherwise.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let pass_through = |max_charge_voltage: &str| {
        format!(
            "batteries: {{ product_name: [SerialBattery, Pylontech] }}\n\
             current_source: {{ plugin: bms }}\n\
             strategy: {{ plugin: serialbattery }}\n\
             soc: {{ source: 279 }}\n\
             safety: {{ max_cell_voltage: 3.6, max_charge_current: 100, max_discharge_current: 100, \
                       min_cell_voltage: 2.5, min_charge_temperature: 0, max_charge_temperature: 45, \
                       min_discharge_temperature: -20, max_discharge_temperature: 55{max_charge_voltage} }}\n"
        )
    };
    std::fs::write(&path, pass_through("")).unwrap();
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out)
            .contains("safety.max_charge_voltage: is required unless batteries.cells is set"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&path, pass_through(", max_charge_voltage: 57.6")).unwrap();
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_bad_soc_source_or_product_name_is_named() {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let (_dir, path) = broken(&[("  own_counter: true\n", "  source: [1, 2]\n")]);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("soc.source: expected counter, batteries, or a battery monitor"),
        "{}",
        stdout(&out)
    );
    let (_dir, path) = broken(&[(
        "  product_name: SerialBattery\n",
        "  product_name: [\"\"]\n",
    )]);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("batteries.product_name: must not be empty"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_missing_temperature_key_is_named_under_its_own_key() {
    let (_d, path) = broken(&[
        ("  min_charge_temperature: -20\n", ""),
        ("  max_charge_temperature: 50\n", ""),
        ("  min_discharge_temperature: -30\n", ""),
        ("  max_discharge_temperature: 55\n", ""),
    ]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2));
    let said = stdout(&out);
    let safety = line_of(&path, "safety:");
    for key in [
        "min_charge_temperature",
        "max_charge_temperature",
        "min_discharge_temperature",
        "max_discharge_temperature",
    ] {
        let line = format!(":{safety}: safety.{key}: missing field `{key}`");
        assert!(said.contains(&line), "{line}\n{said}");
    }
    assert!(said.contains(": 4 error(s)"), "{said}");
    // Not under the key the parser stood on.
    assert!(!said.contains("safety.max_cell_voltage: missing"), "{said}");
}

#[test]
fn a_strategy_current_above_its_safety_cap_is_a_warning() {
    let (_d, path) = broken(&[
        ("    max_charge_current: 200", "    max_charge_current: 400"),
        (
            "    max_discharge_current: 200",
            "    max_discharge_current: 250",
        ),
    ]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let line = line_of(&path, "    max_charge_current: 400");
    assert!(
        said.contains(&format!(
            "warning: {}:{line}: strategy.config.max_charge_current: 400 A is above \
             safety.max_charge_current (300 A)",
            path.display()
        )),
        "{said}"
    );
    // 250 A is below safety.max_discharge_current (300 A): nothing to say.
    assert!(!said.contains("max_discharge_current: 250"), "{said}");
    // The shipped examples ask for no more than their caps.
    for name in ["config-lfp.yaml", "config-lto.yaml"] {
        let out = run(&["check-config"], &example(name), plugins.path());
        assert!(
            !stdout(&out).contains("warning"),
            "{name}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn the_examples_hold_the_keys_of_config_yaml_and_name_their_folder_on_the_device() {
    for name in ["config-lfp.yaml", "config-lto.yaml"] {
        let text = std::fs::read_to_string(example(name)).unwrap();
        for key in [
            "    solar_chargers: ",
            "    dc_sources: ",
            "  # source: counter",
        ] {
            assert!(text.contains(key), "{name} lacks {key:?}");
        }
        let on_device = format!("/data/apps/dbus-aggregate-batteries/examples/{name}");
        assert!(text.contains(&on_device), "{name} does not say {on_device}");
    }
    let lto = std::fs::read_to_string(example("config-lto.yaml")).unwrap();
    assert!(lto.contains("Why lfp-balancing and not lto-cv"), "{lto}");
}

#[test]
fn the_pass_through_reset_voltages_and_the_recovery_rate_are_checked() {
    let (_d, path) = broken_from(
        &shipped_config(),
        &[(
            "max_cell_voltage_soc_full: 3.45",
            "max_cell_voltage_soc_full: 3.70",
        )],
    );
    let text = refused(
        &path,
        "strategy.config.max_cell_voltage_soc_full: ",
        "max_cell_voltage_soc_full:",
    );
    assert!(text.contains("above safety.max_cell_voltage"), "{text}");
    let (_d, path) = broken(&[("  recovery_charge_rate: 0.05", "  recovery_charge_rate: 0")]);
    refused(
        &path,
        "safety.recovery_charge_rate: ",
        "recovery_charge_rate:",
    );
}

/// `shadow:` is checked as the daemon builds it: its strategy's section refused names the key
/// under `shadow.`; a good one passes.
#[test]
fn a_shadow_strategy_is_checked_naming_its_key() {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let shadow = "\nshadow:\n  strategy:\n    plugin: lto-cv\n    config: { charge_voltage: 9 }\n";
    let text = std::fs::read_to_string(shipped_config()).unwrap() + shadow;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("shadow.strategy.config.charge_voltage"),
        "{}",
        stdout(&out)
    );
    let good = text
        .replace("{ charge_voltage: 9 }", "{ zero_soc: false }")
        .replace("plugin: lto-cv", "plugin: serialbattery");
    std::fs::write(&path, good).unwrap();
    let out = run(&["check-config"], &path, plugins.path());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// A key named `*_voltage` is a cell voltage, checked against the safety window whatever the
/// plugin; a key named `*_bank_voltage` is the documented way out for a voltage of the whole
/// bank (here the plugin itself refuses it as a key it does not know).
#[test]
fn a_bank_voltage_key_is_not_checked_as_a_cell_voltage() {
    let (_d, path) =
        with_strategy("strategy:\n  plugin: lto-cv\n  config:\n    target_voltage: 55.2\n");
    let text = refused(&path, "strategy.config.target_voltage: ", "target_voltage:");
    assert!(text.contains("above safety.max_cell_voltage"), "{text}");
    let (_d, path) = with_strategy(
        "strategy:\n  plugin: lto-cv\n  config:\n    target_bank_voltage: 55.2\n    \
         target_bank_voltages: [55.2, 54.0]\n",
    );
    let text = refused(
        &path,
        "strategy.config.target_bank_voltage: unknown field",
        "target_bank_voltage:",
    );
    assert!(!text.contains("safety.max_cell_voltage"), "{text}");
}

#[test]
fn presence_times_the_tick_cannot_use_are_refused_and_a_short_frozen_after_is_warned_about() {
    let (_d, path) = broken(&[
        ("  hold_for: 60s", "  hold_for: 0s"),
        ("  frozen_after: 120s", "  frozen_after: 500ms"),
    ]);
    let text = refused(&path, "batteries.hold_for", "  hold_for: 0s");
    assert!(
        text.contains("batteries.hold_for: must be at least update_interval (1s), found 0s"),
        "{text}"
    );
    let text = refused(&path, "batteries.frozen_after", "  frozen_after: 500ms");
    assert!(
        text.contains("must be 0s (off) or at least 3 × update_interval (3s), found 0.5s"),
        "{text}"
    );
    // Long enough for the tick, short for a pack at rest: allowed, with a word.
    let (_d, path) = broken(&[("  frozen_after: 120s", "  frozen_after: 30s")]);
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let line = line_of(&path, "  frozen_after: 30s");
    assert!(
        said.contains(&format!(
            "warning: {}:{line}: batteries.frozen_after: 30s is short",
            path.display()
        )),
        "{said}"
    );
}

/// The shadow's own current source is built as the daemon builds it: a section its plugin
/// refuses is an error under `shadow.current_source`, at its line, as the live one's would be.
#[test]
fn a_shadow_current_source_is_checked_naming_its_key() {
    let shadow = "\nshadow:\n  strategy:\n    plugin: serialbattery\n  current_source:\n    \
                  plugin: victron\n    config:\n      no_such_key: 1\n";
    let text = std::fs::read_to_string(shipped_config()).unwrap() + shadow;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let text = refused(
        &path,
        "shadow.current_source.config.no_such_key: ",
        "      no_such_key: 1",
    );
    assert!(text.contains("(plugin victron)"), "{text}");
    // A plugin that is not there is named under the shadow's key too.
    let missing = std::fs::read_to_string(&path).unwrap().replace(
        "    plugin: victron\n    config:\n      no_such_key: 1\n",
        "    plugin: nope\n",
    );
    std::fs::write(&path, missing).unwrap();
    refused(&path, "shadow.current_source.plugin: ", "    plugin: nope");
}

/// A key written twice is refused wherever it is, under its whole path at its second line: in
/// a plugin's section (where the last would have won) and in a host section alike.
#[test]
fn a_key_written_twice_is_named_at_its_second_line() {
    let (_d, path) = broken(&[(
        "    balancing_voltage: 2.5\n",
        "    balancing_voltage: 2.5\n    balancing_voltage: 2.52\n",
    )]);
    let text = refused(
        &path,
        "strategy.config.balancing_voltage: written twice",
        "    balancing_voltage: 2.52",
    );
    let first = line_of(&path, "    balancing_voltage: 2.5\n".trim_end());
    assert!(text.contains(&format!("(first at line {first})")), "{text}");
    assert!(!text.contains("shadow"), "{text}");
    let (_d, path) = broken(&[("  hold_for: 60s\n", "  hold_for: 60s\n  hold_for: 90s\n")]);
    refused(
        &path,
        "batteries.hold_for: written twice",
        "  hold_for: 90s",
    );
}

/// The program's output within `limit`, or `None` (and the program killed) when it has not
/// ended by then: a read that blocks must fail the test, not hang it.
fn output_within(mut command: Command, limit: std::time::Duration) -> Option<Output> {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the binary");
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// docs/commands.md §1: a FIFO as the config is refused at once, naming the file: it held
/// `check-config` and `run` for ever (`run` before its first log line). `run`, with no bus to
/// reach, logs the fail-safe's error and that it uses no state file, and is stopped by the
/// test.
#[test]
fn a_fifo_as_the_config_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.yaml");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let mut check = Command::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries"));
    check
        .arg("--config")
        .arg(&fifo)
        .arg("--plugins-dir")
        .arg(plugins.path());
    check.arg("check-config");
    let out = output_within(check, std::time::Duration::from_secs(20)).expect("ended");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "{}: cannot read: not a regular file (a FIFO)",
            fifo.display()
        )),
        "{text}"
    );

    let mut run = Command::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries"));
    run.arg("--config")
        .arg(&fifo)
        .arg("--plugins-dir")
        .arg(plugins.path());
    run.arg("run")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let mut child = run
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the binary");
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let (send, found) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in lines.map_while(Result::ok) {
            let state = line.contains("no state file is read or written");
            seen.push(line);
            if state {
                let _ = send.send(seen);
                return;
            }
        }
    });
    let seen = found.recv_timeout(std::time::Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.expect("run logged the config's error and the state file's");
    assert!(
        seen.iter().any(|line| line.contains("could not be started")
            && line.contains("not a regular file (a FIFO)")),
        "{seen:#?}"
    );
    // docs/tick.md §6: a file that cannot be read does not tell the state folder.
    let state = seen.last().expect("a line");
    assert!(
        state.contains(&format!(
            "no state file is read or written: {} cannot be read (not a regular file (a \
             FIFO)), so its state folder is not known",
            fifo.display()
        )),
        "{state}"
    );
}

/// docs/commands.md §1: a config beyond 1 MiB is refused before it is parsed (37 MB took 12 s
/// and 1.35 GB), naming its size and the bound.
#[test]
fn a_config_beyond_the_bound_is_refused_naming_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut text = std::fs::read_to_string(shipped_config()).unwrap();
    text.push_str("unknown_section:\n");
    let mut k = 0;
    while text.len() <= 2 << 20 {
        text.push_str(&format!("  key_{k}: {k}\n"));
        k += 1;
    }
    std::fs::write(&path, &text).unwrap();
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    let out = run(&["check-config"], &path, plugins.path());
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains(&format!(
            "cannot read: too large: {} bytes, more than the 1048576 bytes (1 MiB) read at most",
            text.len()
        )),
        "{printed}"
    );
}
