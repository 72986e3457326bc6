//! `import-config` on the Python program's settings and state files (fixtures under
//! `tests/fixtures/import/`): every setting mapped or reported, the result passing the real
//! `check-config` with the real plugins, and the imported state loaded by the daemon.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aggregator::state_file::{StateStore, STATE_FILE};
use support::bus::{num, until};
use support::world::{runtime, World};
use support::{plugins_dir_with, PLUGIN_FILES};

fn fixture(path: &str) -> PathBuf {
    support::daemon_dir()
        .join("tests/fixtures/import")
        .join(path)
}

fn program(args: &[&str]) -> Output {
    Command::new(support::daemon_program())
        .args(args)
        .output()
        .expect("run the binary")
}

fn import(from: &Path, state_from: Option<&Path>, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "import-config".to_string(),
        "--from".into(),
        from.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(dir) = state_from {
        args.extend(["--state-from".into(), dir.display().to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    program(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Imports `from` into a fresh folder; returns the folder, the written config and the report.
fn imported(from: &Path, state_from: Option<&Path>) -> (tempfile::TempDir, PathBuf, String) {
    imported_with(from, state_from, &[])
}

/// [`imported`] with more arguments.
fn imported_with(
    from: &Path,
    state_from: Option<&Path>,
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.yaml");
    let result = import(from, state_from, &out, extra);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}{}",
        stdout(&result),
        stderr(&result)
    );
    (dir, out, stdout(&result))
}

/// `check-config` of the real binary with the real plugins.
fn check_config(config: &Path) -> Output {
    let plugins = plugins_dir_with(&PLUGIN_FILES);
    program(&[
        "check-config",
        "--config",
        &config.display().to_string(),
        "--plugins-dir",
        &plugins.path().display().to_string(),
    ])
}

/// `check-config` passes, naming the plugins.
fn check_config_passes(config: &Path, strategy: &str, source: &str) {
    let out = check_config(config);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        std::fs::read_to_string(config).unwrap()
    );
    assert!(
        text.contains(&format!("ok (strategy {strategy}, current source {source}")),
        "{text}"
    );
}

/// The report's row for `setting`: the text after its ` -> `.
fn row<'a>(report: &'a str, setting: &str) -> &'a str {
    let prefix = format!("{setting} = ");
    let line = report
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row for {setting} in\n{report}"));
    line.split_once(" -> ")
        .unwrap_or_else(|| panic!("no arrow in {line}"))
        .1
}

/// The report's row for a command-line option (`--cell-voltages 2.9:3.65`): the text after its
/// ` -> `.
fn option_row<'a>(report: &'a str, given: &str) -> &'a str {
    let line = report
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&format!("{given} ")))
        .unwrap_or_else(|| panic!("no row for {given} in\n{report}"));
    line.split_once(" -> ").unwrap().1
}

/// The names a file assigns, read independently of the importer: `NAME = …` or `NAME=…` at
/// the start of a line.
fn assigned_names(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (name, _) = l.split_once('=')?;
            let name = name.trim();
            (!l.starts_with([' ', '#', ';'])
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| name.to_string())
        })
        .collect()
}

/// Asserts each (setting, what its row must say) and that every setting of `files` has a row.
fn assert_rows(report: &str, files: &[PathBuf], expected: &[(&str, &str)]) {
    for (setting, target) in expected {
        let got = row(report, setting);
        assert!(
            got.starts_with(target),
            "{setting}: expected `{target}`, found `{got}`"
        );
    }
    for file in files {
        for name in assigned_names(file) {
            assert!(
                expected.iter().any(|(s, _)| *s == name),
                "{name} of {} has no expectation in this test",
                file.display()
            );
            row(report, &name);
        }
    }
}

#[test]
fn a_3_4_settings_py_is_imported_and_passes_check_config() {
    let from = fixture("v3.4/settings.py");
    let (_dir, out, report) = imported(&from, None);
    assert_rows(
        &report,
        std::slice::from_ref(&from),
        &[
            ("NR_OF_BATTERIES", "batteries.expected = 2"),
            ("NR_OF_CELLS_PER_BATTERY", "batteries.cells = 22"),
            (
                "NR_OF_MPPTS",
                "current_source.config.solar_chargers = true",
            ),
            ("DC_LOADS", "current_source.config.smartshunts = none"),
            (
                "INVERT_SMARTSHUNT",
                "no counterpart: no effect while DC_LOADS is False",
            ),
            (
                "BATTERY_SERVICE_NAME",
                "no counterpart: batteries are always",
            ),
            (
                "BATTERY_PRODUCT_NAME_PATH",
                "no counterpart: the product name",
            ),
            (
                "BATTERY_PRODUCT_NAME",
                "batteries.product_name = \"SerialBattery\"",
            ),
            (
                "BATTERY_INSTANCE_NAME_PATH",
                "no counterpart: a battery is named",
            ),
            ("MULTI_KEY_WORD", "current_source.config.use_multi = true"),
            ("MPPT_KEY_WORD", "no counterpart: solar chargers are always"),
            (
                "SMARTSHUNT_NAME_KEY_WORD",
                "no counterpart: a SmartShunt is always",
            ),
            ("SEARCH_TRIALS", "no counterpart: devices are found"),
            ("READ_TRIALS", "no counterpart: the daemon never exits"),
            ("CURRENT_FROM_VICTRON", "current_source.plugin = victron"),
            ("OWN_SOC", "soc.own_counter = true"),
            ("ZERO_SOC", "strategy.config.zero_soc = true"),
            ("CHARGE_SAVE_PRECISION", "soc.save_precision = 0.0025"),
            ("OWN_CHARGE_PARAMETERS", "strategy.plugin = lfp-balancing"),
            (
                "BALANCING_VOLTAGE",
                "strategy.config.balancing_voltage = 2.5",
            ),
            (
                "BALANCING_REPETITION",
                "strategy.config.balancing_every_days = 10",
            ),
            (
                "CHARGE_VOLTAGE_LIST",
                "strategy.config.charge_voltages = [2.45, 2.45, 2.42, 2.42, 2.4, 2.4, 2.4, 2.4, \
                 2.42, 2.42, 2.45, 2.45]",
            ),
            (
                "MAX_CELL_VOLTAGE",
                "strategy.config.max_cell_voltage = 2.55, safety.max_cell_voltage (0.05 V above the strategy's bound) = 2.6",
            ),
            ("MIN_CELL_VOLTAGE", "strategy.config.min_cell_voltage = 1.9"),
            (
                "MIN_CELL_HYSTERESIS",
                "strategy.config.min_cell_hysteresis = 0.1",
            ),
            ("CELL_DIFF_MAX", "strategy.config.cell_diff_max = 0.015"),
            ("BATTERY_EFFICIENCY", "soc.efficiency = 0.985"),
            (
                "MAX_CHARGE_CURRENT",
                "strategy.config.max_charge_current = 200, safety.max_charge_current = 200",
            ),
            (
                "MAX_DISCHARGE_CURRENT",
                "strategy.config.max_discharge_current = 200, safety.max_discharge_current = 200",
            ),
            // The expression evaluated: the original's points, which the plugin derives too.
            (
                "CELL_CHARGE_LIMITING_VOLTAGE",
                "strategy.config.charge_curve.voltages (not written: the plugin derives the same \
                 points) = [1.9, 1.95, 2.4, 2.5, 2.55]",
            ),
            (
                "CELL_CHARGE_LIMITED_CURRENT",
                "strategy.config.charge_curve.factors",
            ),
            (
                "CELL_DISCHARGE_LIMITING_VOLTAGE",
                "strategy.config.discharge_curve.voltages (not written: the plugin derives the \
                 same points) = [1.9, 2, 2.1]",
            ),
            (
                "CELL_DISCHARGE_LIMITED_CURRENT",
                "strategy.config.discharge_curve.factors",
            ),
            ("KEEP_MAX_CVL", "no counterpart: it had no effect in 3.4"),
            ("SEND_CELL_VOLTAGES", "publish.cell_voltages = false"),
            ("LOGGING", "no counterpart: not used by 3.4"),
            ("LOG_PERIOD", "logging.summary_every = 301s"),
        ],
    );
    assert!(
        report.contains("safety.plugin_failures = 5: the old program had no such bound"),
        "{report}"
    );
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(
        yaml.starts_with(&format!("# Imported from {}", from.display())),
        "{yaml}"
    );
    assert!(
        yaml.contains("  # chosen, not imported: the old program had no such bound; 5 is the default\n  plugin_failures: 5\n"),
        "{yaml}"
    );
    check_config_passes(&out, "lfp-balancing", "victron");
}

#[test]
fn a_4x_config_ini_is_imported_over_its_defaults_file_and_passes_check_config() {
    let from = fixture("v4/config.ini");
    let defaults = fixture("v4/config.default.ini");
    let (_dir, out, report) = imported(&from, None);
    assert!(
        report.contains(&format!("Defaults read first from {}", defaults.display())),
        "{report}"
    );
    assert_rows(
        &report,
        &[from.clone(), defaults],
        &[
            ("NR_OF_BATTERIES", "batteries.expected = 2"),
            ("NR_OF_CELLS_PER_BATTERY", "batteries.cells = 24"),
            (
                "NR_OF_MPPTS",
                "current_source.config.solar_chargers = true",
            ),
            ("BATTERY_SERVICE_NAME", "no counterpart"),
            ("DCLOAD_SERVICE_NAME", "no counterpart"),
            ("BATTERY_PRODUCT_NAME_PATH", "no counterpart"),
            (
                "BATTERY_PRODUCT_NAME",
                "batteries.product_name = \"SerialBattery\"",
            ),
            ("BATTERY_INSTANCE_NAME_PATH", "no counterpart"),
            ("MULTI_KEYWORD", "current_source.config.use_multi = true"),
            ("MPPT_KEYWORD", "no counterpart"),
            ("SMARTSHUNT_NAME_KEYWORD", "no counterpart"),
            ("SMARTSHUNT_INSTANCE_NAME_PATH", "no counterpart"),
            ("SEARCH_TRIALS", "no counterpart"),
            ("READ_TRIALS", "no counterpart"),
            ("UPDATE_INTERVAL_FIND_DEVICES", "no counterpart"),
            ("UPDATE_INTERVAL_DATA", "update_interval = 1s"),
            ("TIME_BEFORE_RESTART", "no counterpart"),
            ("CURRENT_FROM_VICTRON", "current_source.plugin = victron"),
            (
                "CAN_batteries",
                "no counterpart: only the pass-through strategy",
            ),
            (
                "USE_SMARTSHUNTS",
                "current_source.config.smartshunts = none",
            ),
            (
                "INVERT_SMARTSHUNTS",
                "current_source.config.invert_smartshunts = false",
            ),
            ("SMARTSHUNT_AS_BATTERY_CURRENT", "no counterpart"),
            ("IGNORE_SMARTSHUNT_ABSENCE", "no counterpart"),
            ("OWN_SOC", "soc.own_counter = true"),
            ("ZERO_SOC", "strategy.config.zero_soc = false"),
            (
                "MAX_CELL_VOLTAGE_SOC_FULL",
                "no counterpart: only the pass-through policy",
            ),
            (
                "MIN_CELL_VOLTAGE_SOC_EMPTY",
                "no counterpart: only the pass-through policy",
            ),
            ("CHARGE_SAVE_PRECISION", "soc.save_precision = 0.0025"),
            ("OWN_CHARGE_PARAMETERS", "strategy.plugin = lfp-balancing"),
            (
                "BALANCING_VOLTAGE",
                "strategy.config.balancing_voltage = 2.5",
            ),
            (
                "BALANCING_REPETITION",
                "strategy.config.balancing_every_days = 10",
            ),
            (
                "CHARGE_VOLTAGE_LIST",
                "strategy.config.charge_voltages = [2.5, 2.45, 2.45, 2.4, 2.35, 2.35, 2.35, \
                 2.35, 2.4, 2.45, 2.45, 2.5]",
            ),
            (
                "MAX_CELL_VOLTAGE",
                "strategy.config.max_cell_voltage = 2.6, safety.max_cell_voltage (0.05 V above the strategy's bound) = 2.65",
            ),
            ("MIN_CELL_VOLTAGE", "strategy.config.min_cell_voltage = 1.9"),
            (
                "MIN_CELL_HYSTERESIS",
                "strategy.config.min_cell_hysteresis = 0.3",
            ),
            ("CELL_DIFF_MAX", "strategy.config.cell_diff_max = 0.025"),
            ("BATTERY_EFFICIENCY", "soc.efficiency = 0.98"),
            (
                "MAX_CHARGE_CURRENT",
                "strategy.config.max_charge_current = 200",
            ),
            (
                "MAX_DISCHARGE_CURRENT",
                "strategy.config.max_discharge_current = 200",
            ),
            // Empty in the defaults: derived as 4.x does, the same points the plugin derives.
            (
                "CELL_CHARGE_LIMITING_VOLTAGE",
                "strategy.config.charge_curve.voltages (not written: the plugin derives the same \
                 points) = [1.9, 1.95, 2.4, 2.5, 2.6]",
            ),
            (
                "CELL_CHARGE_LIMITED_CURRENT",
                "strategy.config.charge_curve.factors",
            ),
            (
                "CELL_DISCHARGE_LIMITING_VOLTAGE",
                "strategy.config.discharge_curve.voltages",
            ),
            (
                "CELL_DISCHARGE_LIMITED_CURRENT",
                "strategy.config.discharge_curve.factors",
            ),
            (
                "KEEP_MAX_CVL",
                "no counterpart: only the pass-through policy",
            ),
            ("SEND_CELL_VOLTAGES", "publish.cell_voltages = false"),
            ("LOGGING", "logging.level = debug"),
            ("LOG_PERIOD", "logging.summary_every = 300s"),
        ],
    );
    // What came from the defaults file is marked so.
    let line_of = |name: &str| {
        report
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap()
            .to_string()
    };
    assert!(line_of("BATTERY_EFFICIENCY").starts_with("BATTERY_EFFICIENCY = 0.98 (default) "));
    assert!(!line_of("NR_OF_BATTERIES").contains("(default)"));
    check_config_passes(&out, "lfp-balancing", "victron");
}

/// The 4.x fixture with some of its lines replaced, in a folder with its defaults file.
fn variant_ini(edits: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let mut text = std::fs::read_to_string(fixture("v4/config.ini")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "the fixture no longer holds {from:?}");
        text = text.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("v4/config.default.ini"),
        dir.path().join("config.default.ini"),
    )
    .unwrap();
    let file = dir.path().join("config.ini");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

#[test]
fn pass_through_and_smartshunt_settings_pick_those_plugins_and_pass_check_config() {
    let (_src, from) = variant_ini(&[
        (
            "OWN_CHARGE_PARAMETERS = True",
            "OWN_CHARGE_PARAMETERS = False\nKEEP_MAX_CVL = true\nCAN_batteries = True",
        ),
        (
            "USE_SMARTSHUNTS = False",
            "USE_SMARTSHUNTS = [278, 'Bank']\nINVERT_SMARTSHUNTS = True",
        ),
    ]);
    // The old program capped none of the BMSs' limits in pass-through mode: the caps are the
    // user's to give.
    let (_dir, out, report) = imported_with(&from, None, &["--max-currents", "150:250"]);
    assert_rows(
        &report,
        &[],
        &[
            ("OWN_CHARGE_PARAMETERS", "strategy.plugin = serialbattery"),
            (
                "KEEP_MAX_CVL",
                "strategy.config.cvl = keep_max_until_all_float",
            ),
            ("CAN_batteries", "strategy.config.limits = sum"),
            (
                "MAX_CELL_VOLTAGE_SOC_FULL",
                "strategy.config.max_cell_voltage_soc_full = 2.5",
            ),
            (
                "USE_SMARTSHUNTS",
                "current_source.config.smartshunts = [278, \"Bank\"]",
            ),
            (
                "BALANCING_VOLTAGE",
                "no counterpart: only used with OWN_CHARGE_PARAMETERS = True",
            ),
            // In its config.ini: the user's own, taken.
            (
                "MAX_CELL_VOLTAGE",
                "safety.max_cell_voltage (0.05 V above the strategy's bound) = 2.65",
            ),
            ("MIN_CELL_VOLTAGE", "safety.min_cell_voltage = 1.9"),
            (
                "MAX_CHARGE_CURRENT",
                "no counterpart: only used with OWN_CHARGE_PARAMETERS = True",
            ),
        ],
    );
    assert_eq!(
        option_row(&report, "--max-currents 150:250"),
        "safety.max_charge_current = 150, safety.max_discharge_current = 250"
    );
    check_config_passes(&out, "serialbattery", "victron");

    let (_src, from) = variant_ini(&[(
        "USE_SMARTSHUNTS = False",
        "USE_SMARTSHUNTS = ['Bank']\nSMARTSHUNT_AS_BATTERY_CURRENT = True",
    )]);
    let (_dir, out, report) = imported(&from, None);
    assert_rows(
        &report,
        &[],
        &[
            (
                "SMARTSHUNT_AS_BATTERY_CURRENT",
                "current_source.plugin = smartshunt",
            ),
            ("USE_SMARTSHUNTS", "current_source.config.shunt = \"Bank\""),
        ],
    );
    check_config_passes(&out, "lfp-balancing", "smartshunt");

    // The constant-voltage settings of 0.1: the lto-cv strategy.
    let src = tempfile::tempdir().unwrap();
    let from = src.path().join("settings.py");
    std::fs::write(
        &from,
        "NR_OF_BATTERIES = 2\nCHARGE_VOLTAGE = 2.48\nMAX_CELL_VOLTAGE = 2.55\n\
         DISCHARGE_VOLTAGE = 2.1\nMIN_CELL_VOLTAGE = 2\nMAX_CHARGE_CURRENT = 200\n\
         MAX_DISCHARGE_CURRENT = 200\nMAX_CHARGE_CURRENT_ABOVE_CV1 = 50\nCV1 = 2.45\n\
         MAX_CHARGE_CURRENT_ABOVE_CV2 = 10\nCV2 = 2.52\nSCAN_TRIALS = 10\n",
    )
    .unwrap();
    // 0.1 gave no cell count: check-config asks for it before an own strategy runs (a bank of
    // packs that publish none would otherwise get limits made from 0 cells), so the import
    // refuses until the settings give one.
    let refused = import(&from, None, &src.path().join("config.yaml"), &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    assert!(
        stderr(&refused)
            .contains("  batteries.cells: strategy lto-cv computes its limits from the cell count"),
        "{}",
        stderr(&refused)
    );
    assert!(!src.path().join("config.yaml").exists());
    let text = std::fs::read_to_string(&from).unwrap();
    std::fs::write(&from, format!("NR_OF_CELLS_PER_BATTERY = 22\n{text}")).unwrap();
    let (_dir, out, report) = imported(&from, None);
    assert_rows(
        &report,
        std::slice::from_ref(&from),
        &[
            ("NR_OF_BATTERIES", "batteries.expected = 2"),
            ("NR_OF_CELLS_PER_BATTERY", "batteries.cells = 22"),
            (
                "CHARGE_VOLTAGE",
                "strategy.config.charge_voltage = 2.48, safety.max_cell_voltage (0.05 V above the strategy's bound) = 2.6",
            ),
            (
                "MAX_CELL_VOLTAGE",
                "strategy.config.max_cell_voltage = 2.55",
            ),
            (
                "DISCHARGE_VOLTAGE",
                "strategy.config.discharge_voltage = 2.1",
            ),
            ("MIN_CELL_VOLTAGE", "strategy.config.min_cell_voltage = 2"),
            (
                "MAX_CHARGE_CURRENT",
                "strategy.config.max_charge_current = 200, safety.max_charge_current = 200",
            ),
            (
                "MAX_DISCHARGE_CURRENT",
                "strategy.config.max_discharge_current = 200",
            ),
            (
                "MAX_CHARGE_CURRENT_ABOVE_CV1",
                "strategy.config.current_above_cv1 = 50",
            ),
            ("CV1", "strategy.config.cv1 = 2.45"),
            (
                "MAX_CHARGE_CURRENT_ABOVE_CV2",
                "strategy.config.current_above_cv2 = 10",
            ),
            ("CV2", "strategy.config.cv2 = 2.52"),
            ("SCAN_TRIALS", "no counterpart: devices are found"),
        ],
    );
    check_config_passes(&out, "lto-cv", "victron");

    // 3.4 in pass-through mode with a SmartShunt on the loads, cell voltages of the user's own
    // (not the shipped ones, which are no bound of theirs in that mode).
    let text = std::fs::read_to_string(fixture("v3.4/settings.py"))
        .unwrap()
        .replace(
            "OWN_CHARGE_PARAMETERS = True",
            "OWN_CHARGE_PARAMETERS = False",
        )
        .replace("DC_LOADS = False", "DC_LOADS = True")
        .replace("MAX_CELL_VOLTAGE = 2.55", "MAX_CELL_VOLTAGE = 2.57")
        .replace("MIN_CELL_VOLTAGE = 1.9", "MIN_CELL_VOLTAGE = 1.95");
    assert!(text.contains("MAX_CELL_VOLTAGE = 2.57") && text.contains("MIN_CELL_VOLTAGE = 1.95"));
    let src = tempfile::tempdir().unwrap();
    let from = src.path().join("settings.py");
    std::fs::write(&from, text).unwrap();
    let (_dir, out, report) = imported_with(&from, None, &["--max-currents", "200:200"]);
    // 3.4 subtracted a battery-class shunt unless inverted; the victron source adds it.
    assert_eq!(
        row(&report, "INVERT_SMARTSHUNT"),
        "current_source.config.invert_smartshunts = true"
    );
    assert!(
        report.contains("strategy.config.max_cell_voltage_soc_full = 2.57: 3.4 never reset"),
        "{report}"
    );
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("# chosen, not imported: 3.4 never reset the counter to full"),);
    check_config_passes(&out, "serialbattery", "victron");
}

#[test]
fn an_existing_out_file_is_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.yaml");
    std::fs::write(&out, "mine\n").unwrap();
    let from = fixture("v3.4/settings.py");
    let result = import(&from, None, &out, &[]);
    assert_eq!(result.status.code(), Some(2));
    assert_eq!(
        stderr(&result).trim(),
        format!(
            "error: {}: exists already; pass --force to replace it",
            out.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine\n");

    let result = import(&from, None, &out, &["--force"]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("# Imported from"));

    // The state file beside it is not replaced either.
    let state = dir.path().join("state").join(STATE_FILE);
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "{}").unwrap();
    std::fs::remove_file(&out).unwrap();
    let result = import(&from, Some(&fixture("v3.4")), &out, &[]);
    assert_eq!(result.status.code(), Some(2));
    assert!(stderr(&result).contains(&format!("{}: exists already", state.display())));
    assert!(!out.exists());
}

#[test]
fn an_out_file_by_its_bare_name_or_in_a_new_folder_is_written_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let from = fixture("v3.4/settings.py");
    // A bare name, in the folder the command runs in.
    let result = Command::new(support::daemon_program())
        .args(["import-config", "--from"])
        .arg(&from)
        .args(["--out", "config.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("run the binary");
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(
        !stderr(&result).contains("cannot write"),
        "{}",
        stderr(&result)
    );
    let written = fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    assert!(written.starts_with("# Imported from"), "{written}");
    // A folder that does not exist yet, without --state-from.
    let out = dir.path().join("new").join("config.yaml");
    let result = import(&from, None, &out, &[]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(out.exists());
}

#[test]
fn a_setting_that_cannot_be_evaluated_names_file_line_and_setting() {
    let src = tempfile::tempdir().unwrap();
    let from = src.path().join("settings.py");
    std::fs::write(
        &from,
        "MIN_CELL_VOLTAGE = 1.9\n\nCELL_DISCHARGE_LIMITING_VOLTAGE = [MIN_CELL_VOLTAGE,\n    \
         MIN_CEL_VOLTAGE + 0.1]\n",
    )
    .unwrap();
    let out = src.path().join("config.yaml");
    let result = import(&from, None, &out, &[]);
    assert_eq!(result.status.code(), Some(2));
    assert_eq!(
        stderr(&result).trim(),
        format!(
            "error: {}:4: CELL_DISCHARGE_LIMITING_VOLTAGE: `MIN_CEL_VOLTAGE` is not defined \
             above (only settings defined earlier in the file can be used)",
            from.display()
        )
    );
    assert!(!out.exists());

    // Required safety bounds are not made up.
    std::fs::write(
        &from,
        "NR_OF_BATTERIES = 2\nOWN_CHARGE_PARAMETERS = True\nMIN_CELL_VOLTAGE = 1.9\n",
    )
    .unwrap();
    let result = import(&from, None, &out, &[]);
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains(
            "the old settings give no value for safety.max_cell_voltage, \
             safety.max_charge_current, safety.max_discharge_current, which the config requires"
        ),
        "{}",
        stderr(&result)
    );
    assert!(!out.exists());

    // A value of the wrong kind, in an ini file.
    let (_src, from) = variant_ini(&[("NR_OF_BATTERIES = 2", "NR_OF_BATTERIES = two")]);
    let result = import(&from, None, &out, &[]);
    assert_eq!(result.status.code(), Some(2));
    assert_eq!(
        stderr(&result).trim(),
        format!(
            "error: {}:4: NR_OF_BATTERIES: `two` is not a whole number",
            from.display()
        )
    );
}

#[test]
fn the_4x_state_files_become_a_state_json_the_state_module_loads() {
    let (dir, _out, report) = imported(&fixture("v4/config.ini"), Some(&fixture("v4")));
    let state = StateStore::new(dir.path().join("state")).load().unwrap();
    assert_eq!(state.charge_ah, Some(412.25));
    let strategy = state.strategy.expect("the balancing date");
    assert_eq!(strategy.plugin, "lfp-balancing");
    let saved: serde_json::Value = serde_json::from_str(&strategy.state).unwrap();
    let date: plugin_api::LocalDate = saved["last_balancing"].as_str().unwrap().parse().unwrap();
    // Day 12 of its year, at most a year ago.
    assert_eq!((date.month, date.day), (1, 12));
    let today = aggregator::clock::calendar::today();
    assert!(
        date <= today && today.days_since(date) < 366,
        "{date} {today}"
    );
    assert!(
        report.contains("storedvalue_charge = 412.250") && report.contains("charge_ah = 412.25"),
        "{report}"
    );
}

/// Two 22-cell LTO batteries whose BMSs say 80 %, a Multi and a solar charger: what the
/// imported 3.4 settings expect.
const LTO_BANK: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 22, capacity_ah: 340, soc: 80 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 22, capacity_ah: 340, soc: 80 }
vebus: { device_instance: 276 }
solar_chargers: 1
segments:
  - { duration: 1h, cell_voltage: 2.40, battery_current: 0, vebus_current: 0, solar_current: 0 }
"#;

#[test]
fn the_3_4_state_files_are_restored_by_the_daemon_with_the_imported_config() {
    let (dir, out, _) = imported(&fixture("v3.4/settings.py"), Some(&fixture("v3.4")));
    // The imported config as written, with the test's folders in place of the device's.
    let yaml = std::fs::read_to_string(&out).unwrap().replace(
        "  state_dir: state\n",
        "  state_dir: \"@DIR@/state\"\n  plugins_dir: \"@PLUGINS@\"\n",
    );
    assert!(yaml.contains("@DIR@/state"), "{yaml}");
    let state = dir.path().join("state").join(STATE_FILE);
    runtime().block_on(async {
        let w = World::start_prepared(LTO_BANK, &yaml, |test_dir| {
            std::fs::create_dir_all(test_dir.join("state")).unwrap();
            std::fs::copy(&state, test_dir.join("state").join(STATE_FILE)).unwrap();
        })
        .await;
        // The counter from the file (306.005 of 680 Ah), not the BMSs' 80 %.
        let (ok, items) = until(&w.conn, Duration::from_secs(15), |i| {
            num(i, "/Soc").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let soc = num(&items, "/Soc").unwrap();
        assert!((soc - 100.0 * 306.005 / 680.0).abs() < 0.05, "SoC {soc}");
        let log = w.daemon.log_text();
        assert!(log.contains("state restored from"), "{log}");
        assert!(!log.contains("not restored"), "{log}");
        assert!(!log.contains("starting fresh"), "{log}");
    });
}

#[test]
fn the_device_instance_the_old_program_published_is_carried_over() {
    for (line, instance) in [
        // 3.4: among the mandatory paths.
        ("            deviceinstance=0,\n", "0"),
        // 3.41 and later.
        (
            "        self._dbusservice.add_path(\"/DeviceInstance\", 99)\n",
            "99",
        ),
    ] {
        let old = tempfile::tempdir().unwrap();
        fs::copy(fixture("v3.4/settings.py"), old.path().join("settings.py")).unwrap();
        fs::write(
            old.path().join("aggregatebatteries.py"),
            format!(
                "VERSION = \"3.4\"\n# deviceinstance=7 in a comment counts for nothing\n{line}"
            ),
        )
        .unwrap();
        let (_dir, out, report) = imported(&old.path().join("settings.py"), None);
        let config = fs::read_to_string(&out).unwrap();
        assert!(
            config.contains(&format!("device_instance: {instance}")),
            "{config}"
        );
        assert!(
            report.contains(&format!(
                "publish.device_instance = {instance}: the /DeviceInstance"
            )),
            "{report}"
        );
        check_config_passes(&out, "lfp-balancing", "victron");
    }
    // Without the program beside its settings, the instance is not guessed.
    let (_dir, out, _) = imported(&fixture("v3.4/settings.py"), None);
    assert!(!fs::read_to_string(out).unwrap().contains("device_instance"));
}

#[test]
fn the_users_feed_in_value_goes_into_the_state_as_an_episode_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.yaml");
    let result = import(
        &fixture("v3.4/settings.py"),
        Some(&fixture("v3.4")),
        &out,
        &["--user-feed-in", "1"],
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(
        stdout(&result).contains("--user-feed-in 1 "),
        "{}",
        stdout(&result)
    );
    let state = aggregator::state_file::StateStore::new(dir.path().join("state"))
        .load()
        .unwrap();
    assert!(state.feed_in.disabled_by_us);
    assert_eq!(state.feed_in.saved_value, Some(1));
    // It lives in the state: without --state-from there is nowhere to keep it.
    let out = dir.path().join("other.yaml");
    let result = import(
        &fixture("v3.4/settings.py"),
        None,
        &out,
        &["--user-feed-in", "1"],
    );
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("--state-from"),
        "{}",
        stderr(&result)
    );
    assert!(!out.exists());
}

#[test]
fn the_import_says_when_a_strategy_current_is_above_its_safety_cap() {
    // The curve's top factor 0.8: safety.max_charge_current is 160 A, the strategy's scale
    // stays 200 A, of which 160 A is ever published.
    let old = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(fixture("v3.4/settings.py"))
        .unwrap()
        .replace(
            "CELL_CHARGE_LIMITED_CURRENT = [0.2, 1, 1, 0.1, 0]",
            "CELL_CHARGE_LIMITED_CURRENT = [0.2, 0.8, 0.8, 0.1, 0]",
        );
    assert!(text.contains("[0.2, 0.8, 0.8, 0.1, 0]"));
    fs::write(old.path().join("settings.py"), text).unwrap();
    let (_dir, _out, report) = imported(&old.path().join("settings.py"), None);
    assert!(
        report.contains(
            "strategy.config.max_charge_current: 200 A is above safety.max_charge_current (160 A)"
        ),
        "{report}"
    );
    assert!(
        !report.contains("max_discharge_current: 200 A is above"),
        "{report}"
    );
}

/// The v3.4 fixture with `from` replaced by `to`, in a folder of its own with its state files.
fn variant_py(from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let text = fs::read_to_string(fixture("v3.4/settings.py")).unwrap();
    assert!(text.contains(from), "the fixture no longer holds {from:?}");
    let dir = tempfile::tempdir().unwrap();
    for file in ["charge", "last_balancing"] {
        fs::copy(fixture("v3.4").join(file), dir.path().join(file)).unwrap();
    }
    let file = dir.path().join("settings.py");
    fs::write(&file, text.replace(from, to)).unwrap();
    (dir, file)
}

#[test]
fn months_above_the_balancing_voltage_are_refused_naming_both_settings() {
    // The old program charged such a month to its own voltage; lfp-balancing takes none above
    // the balancing voltage, and no value charges the same.
    let (src, from) = variant_py("BALANCING_VOLTAGE = 2.5 ", "BALANCING_VOLTAGE = 2.44 ");
    let out = src.path().join("new").join("config.yaml");
    let result = import(&from, Some(src.path()), &out, &[]);
    assert_eq!(result.status.code(), Some(2), "{}", stdout(&result));
    let said = stderr(&result);
    assert!(
        said.contains(&format!(
            "{}:38: CHARGE_VOLTAGE_LIST: January 2.45, February 2.45, November 2.45, December \
             2.45 above BALANCING_VOLTAGE (2.44).",
            from.display()
        )),
        "{said}"
    );
    assert!(
        said.contains("raise BALANCING_VOLTAGE to at least 2.45"),
        "{said}"
    );
    assert!(!out.exists() && !src.path().join("new/state").exists());

    // 4.x: the months of its own file over the defaults.
    let (_src, from) = variant_ini(&[("BALANCING_VOLTAGE = 2.5", "BALANCING_VOLTAGE = 2.45")]);
    let out = _src.path().join("config.yaml");
    let result = import(&from, None, &out, &[]);
    assert_eq!(result.status.code(), Some(2), "{}", stdout(&result));
    assert!(
        stderr(&result).contains(
            "CHARGE_VOLTAGE_LIST: January 2.5, December 2.5 above BALANCING_VOLTAGE (2.45)"
        ),
        "{}",
        stderr(&result)
    );
    assert!(!out.exists());
}

#[test]
fn a_config_the_plugins_refuse_is_not_written_and_the_error_names_the_old_settings() {
    // lfp-balancing wants the balancing voltage below max_cell_voltage; the import parses.
    let (src, from) = variant_py("MAX_CELL_VOLTAGE = 2.55", "MAX_CELL_VOLTAGE = 2.5");
    let out = src.path().join("new").join("config.yaml");
    let result = import(&from, Some(src.path()), &out, &[]);
    assert_eq!(result.status.code(), Some(2), "{}", stdout(&result));
    let said = stderr(&result);
    assert!(
        said.contains("the imported config does not pass check-config"),
        "{said}"
    );
    assert!(
        said.contains(
            "  strategy.config.balancing_voltage: must be above min_cell_voltage (1.9) and \
             below max_cell_voltage (2.5), found 2.5 (plugin lfp-balancing) (from \
             BALANCING_VOLTAGE)\n"
        ),
        "{said}"
    );
    assert!(!out.exists() && !src.path().join("new/state").exists());
}

#[test]
fn pass_through_settings_without_the_users_cell_voltages_are_refused_until_given() {
    // A 16-cell LFP bank on 3.4's shipped (LTO) cell voltages, which pass-through mode never
    // used: a bound of 2.6 V would stop charging a healthy bank.
    let (src, from) = variant_py(
        "OWN_CHARGE_PARAMETERS = True",
        "OWN_CHARGE_PARAMETERS = False",
    );
    let text = fs::read_to_string(&from).unwrap().replace(
        "NR_OF_CELLS_PER_BATTERY = 22",
        "NR_OF_CELLS_PER_BATTERY = 16",
    );
    fs::write(&from, text).unwrap();
    let out = src.path().join("new").join("config.yaml");
    let result = import(&from, Some(src.path()), &out, &[]);
    assert_eq!(result.status.code(), Some(2), "{}", stdout(&result));
    let said = stderr(&result);
    for part in [
        "the old settings give no value for safety.min_cell_voltage, safety.max_cell_voltage, \
         safety.max_charge_current, safety.max_discharge_current",
        "--cell-voltages MIN:MAX",
        "--max-currents CHARGE:DISCHARGE",
    ] {
        assert!(said.contains(part), "{part}: {said}");
    }
    assert!(!out.exists() && !src.path().join("new/state").exists());

    // Cells that really are those of the defaults: no dead end, the user says so.
    let (_dir, out, report) = imported_with(
        &from,
        Some(src.path()),
        &["--cell-voltages", "2.9:3.65", "--max-currents", "280:300"],
    );
    let yaml = fs::read_to_string(&out).unwrap();
    assert!(yaml.contains("  max_cell_voltage: 3.65\n"), "{yaml}");
    assert!(!yaml.contains("max_cell_voltage_soc_full"), "{yaml}");
    assert_eq!(
        option_row(&report, "--cell-voltages 2.9:3.65"),
        "safety.min_cell_voltage = 2.9, safety.max_cell_voltage = 3.65"
    );
    check_config_passes(&out, "serialbattery", "victron");

    // 4.x: a value only in the defaults file is not the user's either.
    let (_src, from) = variant_ini(&[
        (
            "OWN_CHARGE_PARAMETERS = True",
            "OWN_CHARGE_PARAMETERS = False",
        ),
        ("MAX_CELL_VOLTAGE = 2.6\n", ""),
    ]);
    let out = _src.path().join("config.yaml");
    let result = import(&from, None, &out, &["--max-currents", "200:200"]);
    assert_eq!(result.status.code(), Some(2), "{}", stdout(&result));
    assert!(
        stderr(&result).contains("no value for safety.max_cell_voltage, which"),
        "{}",
        stderr(&result)
    );
    assert!(!out.exists());
}
