//! What each old setting becomes: the keys of our `config.yaml`, or why it has none.
//!
//! The strategy follows `OWN_CHARGE_PARAMETERS` (the monthly voltages with balancing of 3.x and
//! 4.x: `lfp-balancing`, whatever the chemistry, also 3.0's one `CHARGE_VOLTAGE` with
//! balancing; off: `serialbattery`), or `lto-cv` for the constant-voltage settings of 0.1–2.4
//! (`CHARGE_VOLTAGE` without `CHARGE_VOLTAGE_LIST` or `BALANCING_VOLTAGE`). The
//! current source follows `CURRENT_FROM_VICTRON` and the SmartShunt settings. The `safety:`
//! section is filled by [`SAFETY`], one entry per key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Format, ImportError, OldSettings, Request, Value};

mod safety;
mod yaml;

use safety::{safety, Strategy};
use yaml::{yaml_item, yaml_list, yaml_number, yaml_string, Tree};

/// What one old setting (or state file) became.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `NAME = value` as the old program had it.
    pub old: String,
    /// Where it went.
    pub outcome: Outcome,
}

/// Where an old setting went.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// These new keys, with their values.
    Became(Vec<(String, String)>),
    /// Nowhere, for this reason.
    NoCounterpart(String),
}

impl Row {
    /// A setting that became these keys.
    pub fn became(old: String, keys: Vec<(String, String)>) -> Self {
        Self {
            old,
            outcome: Outcome::Became(keys),
        }
    }

    /// A setting without a counterpart.
    pub fn none(old: String, why: impl Into<String>) -> Self {
        Self {
            old,
            outcome: Outcome::NoCounterpart(why.into()),
        }
    }

    /// The report's line: `old -> new = value, ...` or `old -> no counterpart: why` (the
    /// tests' view of a row; the report prints rows as a table).
    #[cfg(test)]
    pub fn line(&self) -> String {
        format!("{} -> {}", self.old, self.target())
    }

    fn target(&self) -> String {
        match &self.outcome {
            Outcome::Became(keys) => keys
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            Outcome::NoCounterpart(why) => format!("no counterpart: {why}"),
        }
    }
}

/// A key whose value was chosen here, not taken from the old settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// The key path.
    pub key: String,
    /// Its value.
    pub value: String,
    /// Why this value.
    pub why: String,
}

/// The result of the mapping.
#[derive(Clone, Debug)]
pub struct Mapped {
    /// The `config.yaml` text.
    pub yaml: String,
    /// The chosen strategy plugin.
    pub strategy: String,
    /// One row per old setting, in the order of the old file.
    pub rows: Vec<Row>,
    /// Keys whose value was chosen.
    pub chosen: Vec<Chosen>,
    /// Safety keys for which the old settings have nothing (and no value may be chosen).
    pub missing: Vec<String>,
    /// How to give the missing keys, where the settings say more than "add them".
    pub missing_how: Vec<String>,
    /// What the state files became (filled by the caller).
    pub state_rows: Vec<Row>,
}

impl Mapped {
    /// The table a person reads.
    pub fn report(
        &self,
        settings: &OldSettings,
        request: &Request,
        state: Option<PathBuf>,
    ) -> String {
        let mut out = String::new();
        let kind = match settings.format {
            Format::SettingsPy => "settings.py",
            Format::ConfigIni => "config.ini",
        };
        out.push_str(&format!(
            "Imported {} ({kind}) into {}.\n",
            request.from.display(),
            request.out.display()
        ));
        if let Some(defaults) = &settings.defaults_file {
            out.push_str(&format!(
                "Defaults read first from {}.\n",
                defaults.display()
            ));
        } else if settings.format == Format::ConfigIni {
            out.push_str("No config.default.ini beside it: the 4.x defaults filled the rest.\n");
        }
        out.push_str(&format!(
            "\nOld setting = old value -> new key = new value ({} settings):\n",
            self.rows.len()
        ));
        let width = self
            .rows
            .iter()
            .chain(&self.state_rows)
            .map(|r| r.old.chars().count())
            .max()
            .unwrap_or(0)
            .min(48);
        let table = |rows: &[Row], out: &mut String| {
            for row in rows {
                out.push_str(&format!("  {:<width$} -> {}\n", row.old, row.target()));
            }
        };
        table(&self.rows, &mut out);
        if !self.chosen.is_empty() {
            out.push_str("\nChosen here, not imported (marked in the file; check them):\n");
            for c in &self.chosen {
                out.push_str(&format!("  {} = {}: {}\n", c.key, c.value, c.why));
            }
        }
        if let Some(path) = state {
            out.push_str(&format!(
                "\nState from {} into {}:\n",
                request
                    .state_from
                    .as_deref()
                    .unwrap_or(std::path::Path::new("."))
                    .display(),
                path.display()
            ));
            table(&self.state_rows, &mut out);
        }
        out.push_str(&format!(
            "\nCheck the result before use: dbus-aggregate-batteries check-config --config {}\n",
            request.out.display()
        ));
        out
    }
}

impl Mapped {
    /// The error for an imported config that `check-config` (with the plugins in `plugins`)
    /// refuses: each problem, with the old settings its key came from.
    pub fn refused(
        &self,
        from: &Path,
        plugins: &Path,
        errors: &[aggregator::config::ConfigError],
    ) -> ImportError {
        let problems: Vec<String> = errors
            .iter()
            .map(|e| {
                let settings = self.settings_of(&e.key);
                let origin = if settings.is_empty() {
                    "no old setting gave it".to_string()
                } else {
                    format!("from {}", settings.join(", "))
                };
                format!("  {}: {} ({origin})", e.key, e.message)
            })
            .collect();
        ImportError::file(
            from,
            format!(
                "the imported config does not pass check-config (with the plugins in {}), so \
                 nothing was written; change these settings and import again:\n{}",
                plugins.display(),
                problems.join("\n")
            ),
        )
    }

    /// The old settings that became `key`, or the key it is a part of (`charge_voltages[0]`).
    fn settings_of(&self, key: &str) -> Vec<String> {
        let within = |part: &str, whole: &str| {
            part.strip_prefix(whole)
                .is_some_and(|rest| rest.starts_with(['[', '.']))
        };
        self.rows
            .iter()
            .filter(|row| match &row.outcome {
                Outcome::Became(keys) => keys.iter().any(|(k, _)| {
                    // A report's key may carry a note: `safety.max_cell_voltage (0.05 V ...)`.
                    let k = k.split(' ').next().unwrap_or(k);
                    key == k || within(key, k) || within(k, key)
                }),
                Outcome::NoCounterpart(_) => false,
            })
            .map(|row| row.old.split(" = ").next().unwrap_or(&row.old).to_string())
            .collect()
    }
}

/// Settings that have no counterpart whatever else is set, and why.
const NO_COUNTERPART: &[(&str, &str)] = &[
    ("BATTERY_SERVICE_NAME", "batteries are always the com.victronenergy.battery.* services"),
    ("DCLOAD_SERVICE_NAME", "SmartShunts in DC-meter mode are always the com.victronenergy.dcload.* services"),
    ("BATTERY_PRODUCT_NAME_PATH", "the product name is always read from /ProductName"),
    ("BATTERY_INSTANCE_NAME_PATH", "a battery is named by its /CustomName, else its /Serial; batteries.include and exclude select by either"),
    ("MPPT_KEY_WORD", "solar chargers are always the com.victronenergy.solarcharger.* services"),
    ("MPPT_KEYWORD", "solar chargers are always the com.victronenergy.solarcharger.* services"),
    ("SMARTSHUNT_NAME_KEY_WORD", "a SmartShunt is always told by its product name"),
    ("SMARTSHUNT_NAME_KEYWORD", "a SmartShunt is always told by its product name"),
    ("SMARTSHUNT_INSTANCE_NAME_PATH", "SmartShunts are selected by /CustomName or VRM instance"),
    ("SEARCH_TRIALS", "devices are found from the bus as they appear, without giving up; batteries.startup_wait (30s) bounds the wait before the service is published with charge and discharge stopped"),
    ("UPDATE_INTERVAL_FIND_DEVICES", "devices are found from the bus as they appear, not by polling"),
    ("READ_TRIALS", "the daemon never exits on bad reads: a battery is held for batteries.hold_for (60s), then counts as lost (batteries.on_lost)"),
    ("TIME_BEFORE_RESTART", "the daemon does not exit on errors, so there is no restart to delay"),
];

/// Settings only the own charge policy (`OWN_CHARGE_PARAMETERS = True`) used.
const OWN_POLICY: &[&str] = &[
    "BALANCING_VOLTAGE",
    "BALANCING_REPETITION",
    "CHARGE_VOLTAGE_LIST",
    "MIN_CELL_VOLTAGE",
    "MIN_CELL_HYSTERESIS",
    "CELL_DIFF_MAX",
    "CELL_CHARGE_LIMITING_VOLTAGE",
    "CELL_CHARGE_LIMITED_CURRENT",
    "CELL_DISCHARGE_LIMITING_VOLTAGE",
    "CELL_DISCHARGE_LIMITED_CURRENT",
];

/// Settings of the Victron current (`CURRENT_FROM_VICTRON = True`).
const VICTRON_CURRENT: &[&str] = &[
    "NR_OF_MPPTS",
    "MULTI_KEY_WORD",
    "MULTI_KEYWORD",
    "DC_LOADS",
    "INVERT_SMARTSHUNT",
    "INVERT_SMARTSHUNTS",
    "USE_SMARTSHUNTS",
    "SMARTSHUNT_AS_BATTERY_CURRENT",
    "IGNORE_SMARTSHUNT_ABSENCE",
];

/// The values a `settings.py` shipped with (0.1 to 3.6: LTO cells), per setting.
const SHIPPED_DEFAULTS: &[(&str, &[f64])] = &[
    ("MAX_CELL_VOLTAGE", &[2.5, 2.53, 2.55, 2.6]),
    ("MIN_CELL_VOLTAGE", &[1.9, 2.0]),
];

/// Settings that only programs after 3.4 have: a `settings.py` holding one is read with their
/// meaning.
const AFTER_3_4: &[&str] = &[
    "USE_SMARTSHUNTS",
    "INVERT_SMARTSHUNTS",
    "IGNORE_SMARTSHUNT_ABSENCE",
    "SMARTSHUNT_AS_BATTERY_CURRENT",
    "MAX_CELL_VOLTAGE_SOC_FULL",
    "MIN_CELL_VOLTAGE_SOC_EMPTY",
    "CAN_batteries",
    "DCLOAD_SERVICE_NAME",
    "MULTI_KEYWORD",
];

/// The `lfp-balancing` plugin's config section as it reads it (JSON text in and out,
/// [`aggregator::plugins::Plugin::resolve_config`]): the importer asks the plugin for its defaults
/// and the curves it derives instead of knowing them.
pub type ResolveLfp<'a> = &'a dyn Fn(&str) -> Result<String, ResolveError>;

/// Why the plugin could not be asked: it is missing, refused, or refused the section.
pub type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds the command line gives where the old settings have none the old program used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Given {
    /// `--cell-voltages MIN:MAX`, V per cell.
    pub cell_voltages: Option<(f64, f64)>,
    /// `--max-currents CHARGE:DISCHARGE`, A.
    pub max_currents: Option<(f64, f64)>,
}

/// The options of [`Given`], as the report names them.
const GIVEN_OPTIONS: [&str; 2] = ["--cell-voltages", "--max-currents"];

/// Maps the settings into the config to be written at `out`; `with_state` adds `paths.state_dir` for the imported state.
pub fn map(
    s: &OldSettings,
    out: &Path,
    with_state: bool,
    given: Given,
    resolve_lfp: ResolveLfp<'_>,
) -> Result<Mapped, ImportError> {
    let later = s.format == Format::ConfigIni || AFTER_3_4.iter().any(|n| s.get(n).is_some());
    let mut ctx = Ctx {
        s,
        given,
        resolve_lfp,
        after_3_4: later,
        dc_loads: s.format == Format::SettingsPy && s.get("USE_SMARTSHUNTS").is_none(),
        // 3.5.20250516 to 3.5.20250623 have 3.4's settings, KEEP_MAX_CVL working: only their
        // code says which they are.
        keep_max_cvl: later
            || s.file
                .parent()
                .and_then(old_program_version)
                .is_some_and(|version| version >= (3, 5)),
        rows: HashMap::new(),
        tree: Tree::default(),
        chosen: Vec::new(),
        missing: Vec::new(),
        missing_how: Vec::new(),
    };

    ctx.int_to("NR_OF_BATTERIES", "batteries.expected", 1, 64)?;
    ctx.int_to("NR_OF_CELLS_PER_BATTERY", "batteries.cells", 1, 64)?;
    ctx.text_to("BATTERY_PRODUCT_NAME", "batteries.product_name")?;
    if let Some(seconds) = ctx.number("UPDATE_INTERVAL_DATA")? {
        if !(seconds > 0.0 && seconds <= 3600.0) {
            return Err(ctx.error("UPDATE_INTERVAL_DATA", "must be between 1 and 3600 seconds"));
        }
        ctx.became(
            "UPDATE_INTERVAL_DATA",
            "update_interval",
            format!("{seconds}s"),
        );
    }

    current_source(&mut ctx)?;

    ctx.bool_to("OWN_SOC", "soc.own_counter")?;
    ctx.number_to("BATTERY_EFFICIENCY", "soc.efficiency")?;
    ctx.number_to("CHARGE_SAVE_PRECISION", "soc.save_precision")?;

    let strategy = strategy(&mut ctx)?;
    safety(&mut ctx, strategy)?;

    if let Some(entry) = s.get("SEND_CELL_VOLTAGES") {
        // The old test was `SEND_CELL_VOLTAGES == 1`.
        let on = entry.value.as_f64() == Some(1.0);
        ctx.became(
            "SEND_CELL_VOLTAGES",
            "publish.cell_voltages",
            on.to_string(),
        );
    }
    if let Some(dir) = s.file.parent() {
        if let Some((instance, program)) = old_device_instance(dir) {
            ctx.choose(
                "publish.device_instance",
                instance.to_string(),
                &format!(
                    "the /DeviceInstance the old program published ({}), so that the GUI's \
                     battery monitor and DVCC's controlling BMS, which name it, keep pointing at \
                     the bank",
                    program.display()
                ),
            );
        }
    }
    if with_state {
        ctx.tree.set(
            "paths.state_dir",
            super::STATE_DIR.into(),
            Some("the imported state.json is in the folder `state` beside this file".into()),
        );
    }
    logging(&mut ctx)?;

    for (name, why) in NO_COUNTERPART {
        ctx.none(name, why);
    }
    let mut rows: Vec<Row> = s
        .names()
        .iter()
        .map(|name| {
            ctx.rows.remove(name).unwrap_or_else(|| {
                Row::none(
                    ctx.old(name),
                    "not a setting of the old program known to this importer (a helper for \
                     other settings' expressions, or a typo)",
                )
            })
        })
        .collect();
    rows.extend(
        GIVEN_OPTIONS
            .iter()
            .filter_map(|option| ctx.rows.remove(*option)),
    );
    let header = format!(
        "Imported from {} by `dbus-aggregate-batteries import-config`.\n\
         Keys marked \"chosen\" were not in the old settings: check them. Check this file with\n  \
         dbus-aggregate-batteries check-config --config {}",
        s.file.display(),
        out.display()
    );
    Ok(Mapped {
        yaml: ctx.tree.render(&header),
        strategy: strategy.plugin().into(),
        rows,
        chosen: ctx.chosen,
        missing: ctx.missing,
        missing_how: ctx.missing_how,
        state_rows: Vec::new(),
    })
}

/// The old program's main files, newest name first.
const OLD_PROGRAMS: [&str; 2] = ["dbus-aggregate-batteries.py", "aggregatebatteries.py"];

/// The `/DeviceInstance` the old program beside its settings published, read from its code:
/// `deviceinstance=0` in the mandatory paths up to 3.40, `add_path("/DeviceInstance", 99)`
/// from 3.41. `None` without a program file or a number in it.
pub fn old_device_instance(dir: &Path) -> Option<(u32, PathBuf)> {
    old_program_code(dir).and_then(|(program, code)| {
        let instance = code.lines().find_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let after = line
                .split_once("deviceinstance=")
                .map(|(_, rest)| rest)
                .or_else(|| {
                    line.split_once("\"/DeviceInstance\",")
                        .map(|(_, rest)| rest)
                })?;
            let digits: String = after
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })?;
        Some((instance, program))
    })
}

/// The old program's main file beside its settings, and its code.
fn old_program_code(dir: &Path) -> Option<(PathBuf, String)> {
    OLD_PROGRAMS.iter().find_map(|name| {
        let program = dir.join(name);
        let code = std::fs::read_to_string(&program).ok()?;
        Some((program, code))
    })
}

/// The major and minor number of the old program beside its settings, from its
/// `VERSION = "3.5.20250516"` line.
fn old_program_version(dir: &Path) -> Option<(u32, u32)> {
    let (_, code) = old_program_code(dir)?;
    code.lines().find_map(|line| {
        let value = line.trim().strip_prefix("VERSION")?.trim_start();
        let text = value.strip_prefix('=')?.trim().trim_matches(['"', '\'']);
        let mut parts = text.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    })
}

fn current_source(ctx: &mut Ctx) -> Result<(), ImportError> {
    // 3.4's default was on, 4.x's off (the defaults file then holds it).
    let victron = match ctx.s.get("CURRENT_FROM_VICTRON") {
        Some(e) => e.value.truthy(),
        None => !ctx.after_3_4,
    };
    let shunts_as_battery = !ctx.dc_loads && ctx.truthy("SMARTSHUNT_AS_BATTERY_CURRENT");
    let selection = ctx.s.get("USE_SMARTSHUNTS").map(|e| e.value.clone());
    let selects_shunts = selection.as_ref().is_some_and(Value::truthy);
    if !victron {
        ctx.became(
            "CURRENT_FROM_VICTRON",
            "current_source.plugin",
            "bms".into(),
        );
        ctx.tree.set("current_source.plugin", "bms".into(), None);
        for name in VICTRON_CURRENT {
            ctx.none(name, "only used with CURRENT_FROM_VICTRON = True");
        }
        return Ok(());
    }
    if shunts_as_battery && selects_shunts {
        ctx.tree
            .set("current_source.plugin", "smartshunt".into(), None);
        ctx.became(
            "CURRENT_FROM_VICTRON",
            "current_source.plugin",
            "smartshunt".into(),
        );
        ctx.became(
            "SMARTSHUNT_AS_BATTERY_CURRENT",
            "current_source.plugin",
            "smartshunt".into(),
        );
        match &selection {
            Some(Value::List(items)) if items.len() == 1 => {
                let shunt = yaml_item(&items[0]);
                ctx.became("USE_SMARTSHUNTS", "current_source.config.shunt", shunt);
            }
            _ => {
                ctx.none(
                    "USE_SMARTSHUNTS",
                    "the smartshunt source takes one shunt: the first battery-monitor SmartShunt (set current_source.config.shunt to pick another)",
                );
            }
        }
        ctx.none(
            "INVERT_SMARTSHUNTS",
            "4.x ignored it with SMARTSHUNT_AS_BATTERY_CURRENT, so current_source.config.invert stays false",
        );
        for name in ["MULTI_KEY_WORD", "MULTI_KEYWORD", "NR_OF_MPPTS"] {
            ctx.none(
                name,
                "the smartshunt source measures the bank with the shunt alone",
            );
        }
        ctx.none(
            "IGNORE_SMARTSHUNT_ABSENCE",
            "without a value from the shunt the BMS current is used, and the log says so",
        );
        return Ok(());
    }
    ctx.tree
        .set("current_source.plugin", "victron".into(), None);
    ctx.became(
        "CURRENT_FROM_VICTRON",
        "current_source.plugin",
        "victron".into(),
    );
    for name in ["MULTI_KEY_WORD", "MULTI_KEYWORD"] {
        if let Some(e) = ctx.s.get(name) {
            let on = e.value.truthy();
            ctx.became(name, "current_source.config.use_multi", on.to_string());
        }
    }
    if ctx.s.get("MULTI_KEY_WORD").is_none() && ctx.s.get("MULTI_KEYWORD").is_none() {
        ctx.tree
            .set("current_source.config.use_multi", "true".into(), None);
    }
    // The old program read NR_OF_MPPTS solar chargers, and none with 0 or less (4.x's default
    // -1); no setting (0.1 to 2.4) read every one.
    let solar = ctx.number("NR_OF_MPPTS")?.is_none_or(|n| n > 0.0);
    if ctx.s.get("NR_OF_MPPTS").is_some() {
        ctx.became(
            "NR_OF_MPPTS",
            "current_source.config.solar_chargers",
            solar.to_string(),
        );
    } else {
        ctx.tree
            .set("current_source.config.solar_chargers", "true".into(), None);
    }
    // The old program counted the Multi, the solar chargers and its SmartShunts, nothing else.
    ctx.tree.set(
        "current_source.config.dc_sources",
        "none".into(),
        Some(
            "the old program counted no inverter, charger, DC-DC converter, alternator or DC \
             meter besides the SmartShunts it was given"
                .into(),
        ),
    );
    ctx.record(
        "CURRENT_FROM_VICTRON",
        "current_source.config.dc_sources".into(),
        "none".into(),
    );
    if !ctx.dc_loads {
        let shunts = match &selection {
            Some(Value::List(items)) => format!(
                "[{}]",
                items.iter().map(yaml_item).collect::<Vec<_>>().join(", ")
            ),
            Some(v) if v.truthy() => "all".into(),
            _ => "none".into(),
        };
        if ctx.s.get("USE_SMARTSHUNTS").is_some() {
            ctx.became(
                "USE_SMARTSHUNTS",
                "current_source.config.smartshunts",
                shunts,
            );
        }
        ctx.bool_to(
            "INVERT_SMARTSHUNTS",
            "current_source.config.invert_smartshunts",
        )?;
        ctx.none(
            "SMARTSHUNT_AS_BATTERY_CURRENT",
            "off, or no SmartShunt selected: the victron source",
        );
        ctx.none(
            "IGNORE_SMARTSHUNT_ABSENCE",
            "a selected SmartShunt without a value makes the victron source give none, and the BMS current is used (as this setting did); the daemon never stops publishing for it",
        );
    } else {
        // 3.x read one battery-class SmartShunt and subtracted it unless INVERT_SMARTSHUNT;
        // the victron source adds battery-class shunts unless inverted.
        let dc_loads = ctx.truthy("DC_LOADS");
        // `battery`, not `all`: a DC meter added later is no battery-class shunt and must not
        // be inverted with it.
        let smartshunts = if dc_loads { "battery" } else { "none" };
        if ctx.s.get("DC_LOADS").is_some() {
            ctx.became(
                "DC_LOADS",
                "current_source.config.smartshunts",
                smartshunts.into(),
            );
        } else {
            ctx.tree.set(
                "current_source.config.smartshunts",
                smartshunts.into(),
                None,
            );
        }
        if dc_loads {
            let invert = !ctx.truthy("INVERT_SMARTSHUNT");
            if ctx.s.get("INVERT_SMARTSHUNT").is_some() {
                ctx.became(
                    "INVERT_SMARTSHUNT",
                    "current_source.config.invert_smartshunts",
                    invert.to_string(),
                );
            } else {
                ctx.tree.set(
                    "current_source.config.invert_smartshunts",
                    invert.to_string(),
                    None,
                );
            }
        } else {
            ctx.none("INVERT_SMARTSHUNT", "no effect while DC_LOADS is False");
        }
    }
    Ok(())
}

fn strategy(ctx: &mut Ctx) -> Result<Strategy, ImportError> {
    // 3.0 kept CHARGE_VOLTAGE as its normal voltage, for every month, and balanced above it.
    let old_lto = ctx.s.get("CHARGE_VOLTAGE").is_some()
        && ctx.s.get("CHARGE_VOLTAGE_LIST").is_none()
        && ctx.s.get("BALANCING_VOLTAGE").is_none();
    // 0.1 had no switch (always its own policy); 3.4's default was on.
    let own = ctx
        .s
        .get("OWN_CHARGE_PARAMETERS")
        .is_none_or(|e| e.value.truthy());
    let strategy = match (own, old_lto) {
        (true, false) => Strategy::LfpBalancing,
        (true, true) => Strategy::LtoCv,
        (false, _) => Strategy::SerialBattery,
    };
    ctx.tree
        .set("strategy.plugin", strategy.plugin().into(), None);
    if ctx.s.get("OWN_CHARGE_PARAMETERS").is_some() {
        ctx.became(
            "OWN_CHARGE_PARAMETERS",
            "strategy.plugin",
            strategy.plugin().into(),
        );
    }
    match strategy {
        Strategy::LfpBalancing => lfp_balancing(ctx)?,
        Strategy::LtoCv => lto_cv(ctx)?,
        Strategy::SerialBattery => serialbattery(ctx)?,
    }
    Ok(strategy)
}

fn lfp_balancing(ctx: &mut Ctx) -> Result<(), ImportError> {
    let c = "strategy.config.";
    ctx.number_to("BALANCING_VOLTAGE", &format!("{c}balancing_voltage"))?;
    ctx.int_to(
        "BALANCING_REPETITION",
        &format!("{c}balancing_every_days"),
        1,
        3660,
    )?;
    if let Some(list) = ctx.numbers("CHARGE_VOLTAGE_LIST")? {
        if list.len() != 12 {
            return Err(ctx.error(
                "CHARGE_VOLTAGE_LIST",
                &format!(
                    "must have 12 values (January to December), found {}",
                    list.len()
                ),
            ));
        }
        months_at_most_balancing(ctx, "CHARGE_VOLTAGE_LIST", &list)?;
        ctx.became(
            "CHARGE_VOLTAGE_LIST",
            &format!("{c}charge_voltages"),
            yaml_list(&list),
        );
    } else if let Some(voltage) = ctx.number("CHARGE_VOLTAGE")? {
        let list = [voltage; 12];
        months_at_most_balancing(ctx, "CHARGE_VOLTAGE", &list)?;
        ctx.became(
            "CHARGE_VOLTAGE",
            &format!("{c}charge_voltages"),
            yaml_list(&list),
        );
        the_curves_of_3_0(ctx)?;
    }
    for (old, new) in [
        ("MAX_CELL_VOLTAGE", "max_cell_voltage"),
        ("MIN_CELL_VOLTAGE", "min_cell_voltage"),
        ("MIN_CELL_HYSTERESIS", "min_cell_hysteresis"),
        ("CELL_DIFF_MAX", "cell_diff_max"),
        ("MAX_CHARGE_CURRENT", "max_charge_current"),
        ("MAX_DISCHARGE_CURRENT", "max_discharge_current"),
    ] {
        ctx.number_to(old, &format!("{c}{new}"))?;
    }
    ctx.bool_to("ZERO_SOC", &format!("{c}zero_soc"))?;

    // The curves as the original completed them; left out where the plugin derives the same.
    for (x, y, key) in [
        (
            "CELL_CHARGE_LIMITING_VOLTAGE",
            "CELL_CHARGE_LIMITED_CURRENT",
            "charge_curve",
        ),
        (
            "CELL_DISCHARGE_LIMITING_VOLTAGE",
            "CELL_DISCHARGE_LIMITED_CURRENT",
            "discharge_curve",
        ),
    ] {
        let given_x = ctx.numbers(x)?;
        let given_y = ctx.numbers(y)?;
        if given_x.is_none() && given_y.is_none() {
            continue;
        }
        let derived = derived_curve(ctx, x, key)?;
        let voltages = given_x
            .filter(|v| !v.is_empty())
            .unwrap_or(derived.0.clone());
        let factors = given_y
            .filter(|v| !v.is_empty())
            .unwrap_or(derived.1.clone());
        if voltages.len() != factors.len() || voltages.len() < 2 {
            return Err(ctx.error(
                x,
                &format!(
                    "{x} and {y} must have equal lengths of 2 or more, found {} and {}",
                    voltages.len(),
                    factors.len()
                ),
            ));
        }
        let path = format!("{c}{key}");
        let same = (voltages.clone(), factors.clone()) == derived;
        if !same {
            ctx.tree
                .set(&format!("{path}.voltages"), yaml_list(&voltages), None);
            ctx.tree
                .set(&format!("{path}.factors"), yaml_list(&factors), None);
        }
        for (name, list, sub) in [(x, &voltages, "voltages"), (y, &factors, "factors")] {
            if ctx.s.get(name).is_some() {
                let key = if same {
                    format!("{path}.{sub} (not written: the plugin derives the same points)")
                } else {
                    format!("{path}.{sub}")
                };
                ctx.record(name, key, yaml_list(list));
            }
        }
    }
    for name in ["MAX_CELL_VOLTAGE_SOC_FULL", "MIN_CELL_VOLTAGE_SOC_EMPTY"] {
        ctx.none(name, "only the pass-through policy used it; lfp-balancing sets the counter full at the balancing voltage and empty at min_cell_voltage");
    }
    let keep = if ctx.keep_max_cvl {
        "only the pass-through policy used it"
    } else {
        "it had no effect in 3.4"
    };
    ctx.none("KEEP_MAX_CVL", keep);
    ctx.none(
        "CAN_batteries",
        "only the pass-through strategy (serialbattery, limits: sum) has a counterpart",
    );
    Ok(())
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Refuses months above `BALANCING_VOLTAGE`. The old program charged such a month to its own
/// voltage and only dated a balancing in it; `lfp-balancing` takes no month above the
/// balancing voltage (it would charge past the balancing goal every day), and no other value
/// charges the same, so the user chooses.
fn months_at_most_balancing(ctx: &Ctx, setting: &str, months: &[f64]) -> Result<(), ImportError> {
    let Some(balancing) = ctx.number("BALANCING_VOLTAGE")? else {
        return Ok(());
    };
    let above: Vec<String> = MONTHS
        .iter()
        .zip(months)
        .filter(|(_, v)| **v > balancing)
        .map(|(month, v)| format!("{month} {}", yaml_number(*v)))
        .collect();
    if above.is_empty() {
        return Ok(());
    }
    let highest = months.iter().copied().fold(balancing, f64::max);
    Err(ctx.error(
        setting,
        &format!(
            "{} above BALANCING_VOLTAGE ({}). The old program charged to such a month's voltage \
             every day and ran no balancing in it; lfp-balancing takes no month above the \
             balancing voltage, so it cannot run this as the old program did and nothing was \
             written. Lower those months to at most BALANCING_VOLTAGE (a month at it charges to \
             the balancing voltage every day, each time a balancing), or raise \
             BALANCING_VOLTAGE to at least {} (below MAX_CELL_VOLTAGE), then import again",
            above.join(", "),
            yaml_number(balancing),
            yaml_number(highest)
        ),
    ))
}

/// 3.0's current curves, written as they are (`CELL_FULL_*` on the highest cell, `CELL_EMPTY_*`
/// on the lowest); its pack-average cut-off has no counterpart.
fn the_curves_of_3_0(ctx: &mut Ctx) -> Result<(), ImportError> {
    let c = "strategy.config.";
    for (x, y, key) in [
        (
            "CELL_FULL_LIMITING_VOLTAGE",
            "CELL_FULL_LIMITED_CURRENT",
            "charge_curve",
        ),
        (
            "CELL_EMPTY_LIMITING_VOLTAGE",
            "CELL_EMPTY_LIMITED_CURRENT",
            "discharge_curve",
        ),
    ] {
        if let (Some(voltages), Some(factors)) = (ctx.numbers(x)?, ctx.numbers(y)?) {
            ctx.became(x, &format!("{c}{key}.voltages"), yaml_list(&voltages));
            ctx.became(y, &format!("{c}{key}.factors"), yaml_list(&factors));
        }
    }
    ctx.none(
        "DISCHARGE_VOLTAGE",
        "3.0 also reset the counter to 0 % at this pack average; lfp-balancing resets it at \
         min_cell_voltage, the lowest cell, as 3.0 did too",
    );
    Ok(())
}

/// The curve `key` as `lfp-balancing` derives it from the voltages of these settings (its own
/// defaults for those not set), asked of the plugin.
fn derived_curve(ctx: &Ctx, setting: &str, key: &str) -> Result<(Vec<f64>, Vec<f64>), ImportError> {
    let mut given = serde_json::Map::new();
    for (old, new) in [
        ("MIN_CELL_VOLTAGE", "min_cell_voltage"),
        ("BALANCING_VOLTAGE", "balancing_voltage"),
        ("MAX_CELL_VOLTAGE", "max_cell_voltage"),
    ] {
        if let Some(v) = ctx.number(old)? {
            given.insert(new.into(), v.into());
        }
    }
    let asked = serde_json::Value::Object(given).to_string();
    let resolved = (ctx.resolve_lfp)(&asked).map_err(|err| {
        ctx.error(
            setting,
            &format!("the lfp-balancing plugin cannot derive `{key}` from {asked}: {err}"),
        )
    })?;
    let list = |value: &serde_json::Value, part: &str| -> Option<Vec<f64>> {
        value
            .get(key)?
            .get(part)?
            .as_array()?
            .iter()
            .map(serde_json::Value::as_f64)
            .collect()
    };
    serde_json::from_str::<serde_json::Value>(&resolved)
        .ok()
        .and_then(|v| Some((list(&v, "voltages")?, list(&v, "factors")?)))
        .ok_or_else(|| {
            ctx.error(
                setting,
                &format!("the lfp-balancing plugin gave no `{key}` with voltages and factors"),
            )
        })
}

fn lto_cv(ctx: &mut Ctx) -> Result<(), ImportError> {
    let c = "strategy.config.";
    for (old, new) in [
        ("CHARGE_VOLTAGE", "charge_voltage"),
        ("MAX_CELL_VOLTAGE", "max_cell_voltage"),
        ("DISCHARGE_VOLTAGE", "discharge_voltage"),
        ("MIN_CELL_VOLTAGE", "min_cell_voltage"),
        ("MAX_CHARGE_CURRENT", "max_charge_current"),
        ("MAX_DISCHARGE_CURRENT", "max_discharge_current"),
        ("CV1", "cv1"),
        ("MAX_CHARGE_CURRENT_ABOVE_CV1", "current_above_cv1"),
        ("CV2", "cv2"),
        ("MAX_CHARGE_CURRENT_ABOVE_CV2", "current_above_cv2"),
    ] {
        ctx.number_to(old, &format!("{c}{new}"))?;
    }
    for name in [
        "VOLTAGE_SET_PRECISION",
        "CELL_FULL_LIMITING_VOLTAGE",
        "CELL_FULL_LIMITED_CURRENT",
        "CELL_EMPTY_LIMITING_VOLTAGE",
        "CELL_EMPTY_LIMITED_CURRENT",
    ] {
        ctx.none(
            name,
            "lto-cv follows the current steps of 0.1 and 2.0; the tables of 2.1-2.4 have no key",
        );
    }
    for name in ["LOG_VOLTAGE_CHANGE", "LOG_CURRENT_CHANGE"] {
        ctx.none(name, "changes of state are logged once each, and logging.summary_every gives a periodic line");
    }
    ctx.none(
        "SCAN_TRIALS",
        "devices are found from the bus as they appear, without giving up",
    );
    Ok(())
}

fn serialbattery(ctx: &mut Ctx) -> Result<(), ImportError> {
    let c = "strategy.config.";
    for name in OWN_POLICY {
        ctx.none(name, "only used with OWN_CHARGE_PARAMETERS = True; the serialbattery strategy passes the BMSs' own limits through");
    }
    for name in ["MAX_CHARGE_CURRENT", "MAX_DISCHARGE_CURRENT"] {
        ctx.none(name, "only used with OWN_CHARGE_PARAMETERS = True: the old program capped no BMS limit in pass-through mode (--max-currents gives the safety caps)");
    }
    if ctx.keep_max_cvl {
        if ctx.s.get("KEEP_MAX_CVL").is_some() {
            let rule = if ctx.truthy("KEEP_MAX_CVL") {
                "keep_max_until_all_float"
            } else {
                "min"
            };
            ctx.became("KEEP_MAX_CVL", &format!("{c}cvl"), rule.into());
        }
    } else {
        ctx.none(
            "KEEP_MAX_CVL",
            "it had no effect in 3.4: the lowest battery CVL is taken (cvl: min)",
        );
    }
    if ctx.after_3_4 {
        if ctx.s.get("CAN_batteries").is_some() {
            let rule = if ctx.truthy("CAN_batteries") {
                "sum"
            } else {
                "min_times_count"
            };
            ctx.became("CAN_batteries", &format!("{c}limits"), rule.into());
        }
        ctx.number_to(
            "MAX_CELL_VOLTAGE_SOC_FULL",
            &format!("{c}max_cell_voltage_soc_full"),
        )?;
        ctx.number_to(
            "MIN_CELL_VOLTAGE_SOC_EMPTY",
            &format!("{c}min_cell_voltage_soc_empty"),
        )?;
        ctx.bool_to("ZERO_SOC", &format!("{c}zero_soc"))?;
    } else {
        ctx.none(
            "ZERO_SOC",
            "3.4 never reset the counter in pass-through mode",
        );
        // A shipped default (LTO) is not taken: on other cells it would reset the counter to
        // full all the time; 3.4 never reset it.
        if let Some(max) = ctx.evident("MAX_CELL_VOLTAGE")? {
            ctx.choose(
                &format!("{c}max_cell_voltage_soc_full"),
                yaml_number(max),
                "3.4 never reset the counter to full in pass-through mode; here it is set full when a cell reaches MAX_CELL_VOLTAGE",
            );
        }
        if let Some(min) = ctx.evident("MIN_CELL_VOLTAGE")? {
            ctx.choose(
                &format!("{c}min_cell_voltage_soc_empty"),
                yaml_number(min),
                "MIN_CELL_VOLTAGE; used only with zero_soc, which stays off as in 3.4",
            );
        }
    }
    Ok(())
}

fn logging(ctx: &mut Ctx) -> Result<(), ImportError> {
    if ctx.s.format == Format::ConfigIni {
        if let Some(Value::Str(level)) = ctx.s.get("LOGGING").map(|e| e.value.clone()) {
            let new = match level.to_ascii_uppercase().as_str() {
                "ERROR" => "error",
                "WARNING" => "warn",
                "DEBUG" => "debug",
                _ => "info",
            };
            ctx.became("LOGGING", "logging.level", new.into());
        }
        if let Some(period) = ctx.number("LOG_PERIOD")? {
            ctx.became(
                "LOG_PERIOD",
                "logging.summary_every",
                format!("{}s", period.max(0.0)),
            );
        }
    } else {
        ctx.none("LOGGING", "not used by 3.4 (logging.level sets the level)");
        if let Some(period) = ctx.number("LOG_PERIOD")? {
            // 3.4 logged every LOG_PERIOD + 1 one-second cycles.
            let seconds = if period > 0.0 { period + 1.0 } else { 0.0 };
            ctx.became("LOG_PERIOD", "logging.summary_every", format!("{seconds}s"));
        }
    }
    Ok(())
}

/// The mapping under way.
struct Ctx<'a> {
    s: &'a OldSettings,
    given: Given,
    resolve_lfp: ResolveLfp<'a>,
    /// The settings of a later program (4.x, or a `settings.py` with keys 3.4's has not): the
    /// pass-through counter resets exist.
    after_3_4: bool,
    /// A `settings.py` that selects its SmartShunt with DC_LOADS and INVERT_SMARTSHUNT (every
    /// 3.x release, 3.6.20250909 included, some of which also have the counter resets), not
    /// with USE_SMARTSHUNTS (a later `settings.py`, and 4.x).
    dc_loads: bool,
    /// KEEP_MAX_CVL takes effect: a later program's settings, or a program from 3.5 beside them.
    keep_max_cvl: bool,
    rows: HashMap<String, Row>,
    tree: Tree,
    chosen: Vec<Chosen>,
    missing: Vec<String>,
    missing_how: Vec<String>,
}

impl Ctx<'_> {
    fn old(&self, name: &str) -> String {
        let pair = match name {
            "--cell-voltages" => self.given.cell_voltages,
            "--max-currents" => self.given.max_currents,
            _ => None,
        };
        if let Some((a, b)) = pair {
            return format!("{name} {}:{}", yaml_number(a), yaml_number(b));
        }
        let value = self.s.get(name).map_or("?".into(), |e| e.value.repr());
        let note = if self.s.get(name).is_some_and(|e| e.from_defaults) {
            " (default)"
        } else {
            ""
        };
        format!("{name} = {value}{note}")
    }

    fn error(&self, name: &str, message: &str) -> ImportError {
        let entry = self.s.get(name);
        ImportError {
            file: self.s.file_of(name),
            line: entry.map(|e| e.line).filter(|l| *l > 0),
            setting: Some(name.to_string()),
            message: message.to_string(),
            source: None,
        }
    }

    /// The value of `name` where the user evidently set it: in their `config.ini` (not only the
    /// defaults file), or in a `settings.py` with a value no release shipped (the shipped ones
    /// were never the user's word on their cells).
    fn evident(&self, name: &str) -> Result<Option<f64>, ImportError> {
        let Some(value) = self.number(name)? else {
            return Ok(None);
        };
        let evident = match self.s.format {
            Format::ConfigIni => self.s.get(name).is_some_and(|e| !e.from_defaults),
            Format::SettingsPy => !SHIPPED_DEFAULTS
                .iter()
                .any(|(n, values)| *n == name && values.contains(&value)),
        };
        Ok(evident.then_some(value))
    }

    fn truthy(&self, name: &str) -> bool {
        self.s.get(name).is_some_and(|e| e.value.truthy())
    }

    fn number(&self, name: &str) -> Result<Option<f64>, ImportError> {
        match self.s.get(name).map(|e| &e.value) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n.is_finite() => Ok(Some(n)),
                _ => Err(self.error(name, &format!("must be a number, found {}", v.repr()))),
            },
        }
    }

    fn numbers(&self, name: &str) -> Result<Option<Vec<f64>>, ImportError> {
        match self.s.get(name).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .map(|v| v.as_f64().filter(|n| n.is_finite()))
                .collect::<Option<Vec<f64>>>()
                .map(Some)
                .ok_or_else(|| {
                    self.error(
                        name,
                        &format!(
                            "must be a list of numbers, found {}",
                            Value::List(items.clone()).repr()
                        ),
                    )
                }),
            Some(v) => Err(self.error(
                name,
                &format!("must be a list of numbers, found {}", v.repr()),
            )),
        }
    }

    /// Records that `name` became `key = value`, without writing the key.
    fn record(&mut self, name: &str, key: String, value: String) {
        let old = self.old(name);
        let row = self
            .rows
            .entry(name.to_string())
            .or_insert_with(|| Row::became(old, Vec::new()));
        match &mut row.outcome {
            Outcome::Became(keys) => keys.push((key, value)),
            outcome @ Outcome::NoCounterpart(_) => *outcome = Outcome::Became(vec![(key, value)]),
        }
    }

    /// Writes `key = value` and records that `name` became it.
    fn became(&mut self, name: &str, key: &str, value: String) {
        self.tree.set(key, value.clone(), None);
        self.record(name, key.to_string(), value);
    }

    /// `name` has no counterpart (unless it already went somewhere); nothing if not set.
    fn none(&mut self, name: &str, why: &str) {
        if self.s.get(name).is_some() && !self.rows.contains_key(name) {
            let old = self.old(name);
            self.rows.insert(name.to_string(), Row::none(old, why));
        }
    }

    /// A key whose value is chosen here: written with a comment, and listed in the report.
    fn choose(&mut self, key: &str, value: String, why: &str) {
        self.tree.set(
            key,
            value.clone(),
            Some(format!("chosen, not imported: {why}")),
        );
        self.chosen.push(Chosen {
            key: key.into(),
            value,
            why: why.into(),
        });
    }

    fn number_to(&mut self, name: &str, key: &str) -> Result<(), ImportError> {
        if let Some(n) = self.number(name)? {
            self.became(name, key, yaml_number(n));
        }
        Ok(())
    }

    fn int_to(&mut self, name: &str, key: &str, low: i64, high: i64) -> Result<(), ImportError> {
        let Some(n) = self.number(name)? else {
            return Ok(());
        };
        if n.fract() != 0.0 || n < low as f64 || n > high as f64 {
            let unset = if n < 0.0 && self.after_3_4 {
                " (the 4.x default -1 means it must be set)"
            } else {
                ""
            };
            return Err(self.error(
                name,
                &format!(
                    "must be a whole number from {low} to {high}, found {}{unset}",
                    yaml_number(n)
                ),
            ));
        }
        self.became(name, key, format!("{}", n as i64));
        Ok(())
    }

    fn bool_to(&mut self, name: &str, key: &str) -> Result<(), ImportError> {
        if let Some(e) = self.s.get(name) {
            let on = e.value.truthy();
            self.became(name, key, on.to_string());
        }
        Ok(())
    }

    fn text_to(&mut self, name: &str, key: &str) -> Result<(), ImportError> {
        match self.s.get(name).map(|e| &e.value) {
            None => Ok(()),
            Some(Value::Str(text)) if !text.trim().is_empty() => {
                let quoted = yaml_string(text);
                self.became(name, key, quoted);
                Ok(())
            }
            Some(v) => Err(self.error(
                name,
                &format!("must be a non-empty string, found {}", v.repr()),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
mod tests {
    use super::*;

    fn mapped(text: &str) -> Mapped {
        let settings = super::super::python::read(Path::new("settings.py"), text).unwrap();
        map_here(&settings).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The map without a plugin: no test here has a curve setting, the one thing asked of
    /// the plugin (`tests/import_config.rs` imports those with the built plugins).
    fn map_here(settings: &OldSettings) -> Result<Mapped, ImportError> {
        map_given(settings, Given::default())
    }

    fn map_given(settings: &OldSettings, given: Given) -> Result<Mapped, ImportError> {
        let no_plugin = |_: &str| Err("no plugin in a unit test".into());
        map(settings, Path::new("config.yaml"), false, given, &no_plugin)
    }

    fn target(m: &Mapped, name: &str) -> String {
        let row = m
            .rows
            .iter()
            .find(|r| r.old.starts_with(&format!("{name} = ")));
        row.unwrap_or_else(|| panic!("no row for {name}")).target()
    }

    #[test]
    fn a_settings_py_after_3_4_is_read_with_the_later_meaning() {
        let later = mapped(
            "OWN_CHARGE_PARAMETERS = False\nKEEP_MAX_CVL = True\nMAX_CELL_VOLTAGE_SOC_FULL = 3.45\n\
             MAX_CELL_VOLTAGE = 3.5\nUSE_SMARTSHUNTS = [279]\nCURRENT_FROM_VICTRON = True\n",
        );
        assert_eq!(
            target(&later, "KEEP_MAX_CVL"),
            "strategy.config.cvl = keep_max_until_all_float"
        );
        assert_eq!(
            target(&later, "MAX_CELL_VOLTAGE_SOC_FULL"),
            "strategy.config.max_cell_voltage_soc_full = 3.45"
        );
        assert_eq!(
            target(&later, "USE_SMARTSHUNTS"),
            "current_source.config.smartshunts = [279]"
        );
        assert!(
            later
                .chosen
                .iter()
                .all(|c| c.key == "safety.plugin_failures" || c.key.ends_with("_temperature")),
            "{:?}",
            later.chosen
        );

        let v3_4 =
            mapped("OWN_CHARGE_PARAMETERS = False\nKEEP_MAX_CVL = True\nMAX_CELL_VOLTAGE = 3.5\n");
        assert!(
            target(&v3_4, "KEEP_MAX_CVL").starts_with("no counterpart: it had no effect in 3.4")
        );
        assert!(v3_4
            .yaml
            .contains("# chosen, not imported: 3.4 never reset the counter to full"));
    }

    #[test]
    fn solar_chargers_and_other_dc_devices_count_only_where_the_old_program_read_them() {
        // A SmartShunt per pack and NR_OF_MPPTS = 0: the shunts measure the solar chargers.
        let per_pack = mapped(
            "CURRENT_FROM_VICTRON = True\nNR_OF_MPPTS = 0\nMULTI_KEY_WORD = ''\n\
             USE_SMARTSHUNTS = [279, 280]\n",
        );
        assert_eq!(
            target(&per_pack, "NR_OF_MPPTS"),
            "current_source.config.solar_chargers = false"
        );
        assert!(
            per_pack.yaml.contains("    solar_chargers: false\n"),
            "{}",
            per_pack.yaml
        );
        let with_mppt = mapped("CURRENT_FROM_VICTRON = True\nNR_OF_MPPTS = 1\n");
        assert_eq!(
            target(&with_mppt, "NR_OF_MPPTS"),
            "current_source.config.solar_chargers = true"
        );
        // Inverters, chargers and DC meters it was not given were never counted.
        for m in [&per_pack, &with_mppt] {
            assert!(m.yaml.contains("    dc_sources: none\n"), "{}", m.yaml);
            assert!(
                target(m, "CURRENT_FROM_VICTRON")
                    .ends_with("current_source.config.dc_sources = none"),
                "{}",
                target(m, "CURRENT_FROM_VICTRON")
            );
        }
        // Without the victron source the setting has no use.
        let bms = mapped("CURRENT_FROM_VICTRON = False\nNR_OF_MPPTS = 1\n");
        assert!(target(&bms, "NR_OF_MPPTS").starts_with("no counterpart: only used with"));
    }

    #[test]
    fn dc_loads_of_a_3x_release_with_the_counter_resets_are_imported() {
        // 3.5.20250707 to 3.6.20250909: the resets of later programs, the shunt of 3.4.
        let released = mapped(
            "OWN_CHARGE_PARAMETERS = False\nCURRENT_FROM_VICTRON = True\nDC_LOADS = True\n\
             INVERT_SMARTSHUNT = False\nMAX_CELL_VOLTAGE_SOC_FULL = 3.45\nMAX_CELL_VOLTAGE = 3.5\n",
        );
        assert_eq!(
            target(&released, "DC_LOADS"),
            "current_source.config.smartshunts = battery"
        );
        assert_eq!(
            target(&released, "INVERT_SMARTSHUNT"),
            "current_source.config.invert_smartshunts = true"
        );
        assert_eq!(
            target(&released, "MAX_CELL_VOLTAGE_SOC_FULL"),
            "strategy.config.max_cell_voltage_soc_full = 3.45"
        );
        let off = mapped(
            "CURRENT_FROM_VICTRON = True\nDC_LOADS = False\nMAX_CELL_VOLTAGE_SOC_FULL = 3.45\n",
        );
        assert_eq!(
            target(&off, "DC_LOADS"),
            "current_source.config.smartshunts = none"
        );
    }

    #[test]
    fn pass_through_bounds_come_only_from_what_the_user_set_or_gives() {
        // A 16-cell LFP bank whose settings.py kept the shipped (LTO) cell voltages, unused in
        // pass-through mode: no bound that would stop it at 2.6 V, no cap the old program did
        // not apply.
        let text = "OWN_CHARGE_PARAMETERS = False\nNR_OF_CELLS_PER_BATTERY = 16\n\
                    MAX_CELL_VOLTAGE = 2.55\nMIN_CELL_VOLTAGE = 1.9\nMAX_CHARGE_CURRENT = 200\n\
                    MAX_DISCHARGE_CURRENT = 200\n";
        let defaults = mapped(text);
        assert_eq!(
            defaults.missing,
            [
                "safety.min_cell_voltage",
                "safety.max_cell_voltage",
                "safety.max_charge_current",
                "safety.max_discharge_current"
            ]
        );
        let how = defaults.missing_how.join("; ");
        assert!(how.contains("--cell-voltages MIN:MAX"), "{how}");
        assert!(how.contains("--max-currents CHARGE:DISCHARGE"), "{how}");
        assert!(!defaults.yaml.contains("cell_voltage"), "{}", defaults.yaml);
        assert!(
            target(&defaults, "MAX_CHARGE_CURRENT")
                .starts_with("no counterpart: only used with OWN_CHARGE_PARAMETERS = True"),
            "{}",
            target(&defaults, "MAX_CHARGE_CURRENT")
        );

        // The user's word on the command line.
        let settings = super::super::python::read(Path::new("settings.py"), text).unwrap();
        let given = Given {
            cell_voltages: Some((2.9, 3.65)),
            max_currents: Some((300.0, 400.0)),
        };
        let m = map_given(&settings, given).unwrap();
        assert!(m.missing.is_empty(), "{:?}", m.missing);
        for line in [
            "  min_cell_voltage: 2.9\n",
            "  max_cell_voltage: 3.65\n",
            "  max_charge_current: 300\n",
            "  max_discharge_current: 400\n",
        ] {
            assert!(m.yaml.contains(line), "{line}{}", m.yaml);
        }
        let rows: Vec<String> = m.rows.iter().map(Row::line).collect();
        assert!(
            rows.contains(
                &"--cell-voltages 2.9:3.65 -> safety.min_cell_voltage = 2.9, \
                  safety.max_cell_voltage = 3.65"
                    .to_string()
            ),
            "{rows:?}"
        );

        // Values no release shipped are the user's: taken, the highest with its margin.
        let own = mapped(
            "OWN_CHARGE_PARAMETERS = False\nMAX_CELL_VOLTAGE = 3.45\nMIN_CELL_VOLTAGE = 2.9\n",
        );
        assert_eq!(
            target(&own, "MAX_CELL_VOLTAGE"),
            "safety.max_cell_voltage (0.05 V above the strategy's bound) = 3.5"
        );
        assert_eq!(
            target(&own, "MIN_CELL_VOLTAGE"),
            "safety.min_cell_voltage = 2.9"
        );
        assert!(own.yaml.contains("max_cell_voltage_soc_full: 3.45"));
        assert_eq!(
            own.missing,
            ["safety.max_charge_current", "safety.max_discharge_current"]
        );
    }

    #[test]
    fn keep_max_cvl_works_from_3_5_whose_settings_are_those_of_3_4() {
        let old = tempfile::tempdir().unwrap();
        let file = old.path().join("settings.py");
        let text = "OWN_CHARGE_PARAMETERS = False\nKEEP_MAX_CVL = True\nMAX_CELL_VOLTAGE = 3.5\n";
        let keep = |version: &str| {
            std::fs::write(
                old.path().join("aggregatebatteries.py"),
                format!("VERSION = \"{version}\"\n"),
            )
            .unwrap();
            let settings = super::super::python::read(&file, text).unwrap();
            target(&map_here(&settings).unwrap(), "KEEP_MAX_CVL")
        };
        // 3.5.20250623 still says 3.5.20250516.
        for version in ["3.5.20250516", "3.5.20250909"] {
            assert_eq!(
                keep(version),
                "strategy.config.cvl = keep_max_until_all_float",
                "{version}"
            );
        }
        assert!(keep("3.4").starts_with("no counterpart: it had no effect in 3.4"));
    }

    #[test]
    fn settings_of_3_0_balance_with_their_one_charge_voltage() {
        let v3_0 = mapped(
            "NR_OF_CELLS_PER_BATTERY = 22\nOWN_CHARGE_PARAMETERS = True\nCHARGE_VOLTAGE = 2.3\n\
             BALANCING_VOLTAGE = 2.45\nBALANCING_REPETITION = 10\nMAX_CELL_VOLTAGE = 2.5\n\
             DISCHARGE_VOLTAGE = 2.0\nMIN_CELL_VOLTAGE = 1.9\n\
             CELL_FULL_LIMITING_VOLTAGE = [CHARGE_VOLTAGE, BALANCING_VOLTAGE, MAX_CELL_VOLTAGE]\n\
             CELL_FULL_LIMITED_CURRENT = [1, 0.05, 0]\n",
        );
        assert_eq!(v3_0.strategy, "lfp-balancing");
        assert_eq!(
            target(&v3_0, "CHARGE_VOLTAGE"),
            "strategy.config.charge_voltages = [2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, \
             2.3, 2.3, 2.3]"
        );
        assert_eq!(
            target(&v3_0, "BALANCING_VOLTAGE"),
            "strategy.config.balancing_voltage = 2.45, safety.max_cell_voltage (0.05 V above \
             the strategy's bound) = 2.55"
        );
        assert_eq!(
            target(&v3_0, "CELL_FULL_LIMITING_VOLTAGE"),
            "strategy.config.charge_curve.voltages = [2.3, 2.45, 2.5]"
        );
        assert!(target(&v3_0, "DISCHARGE_VOLTAGE").starts_with("no counterpart: 3.0 also"));
        // 0.1 to 2.4, without a balancing voltage: constant voltage.
        let v2_4 = mapped("CHARGE_VOLTAGE = 2.5\nMAX_CELL_VOLTAGE = 2.53\n");
        assert_eq!(v2_4.strategy, "lto-cv");
    }

    #[test]
    fn a_safety_key_without_an_old_setting_is_named_as_missing() {
        let m = mapped("NR_OF_BATTERIES = 2\n");
        assert!(
            m.missing.iter().any(|k| k == "safety.max_cell_voltage"),
            "{:?}",
            m.missing
        );
        assert!(m.missing.iter().any(|k| k == "safety.max_charge_current"));
        assert!(!m.yaml.contains("max_cell_voltage:"), "{}", m.yaml);
    }

    #[test]
    fn bad_values_name_the_setting_and_its_line() {
        let settings = super::super::python::read(
            Path::new("settings.py"),
            "NR_OF_BATTERIES = 2\nCHARGE_VOLTAGE_LIST = [2.4] * 11\n",
        )
        .unwrap();
        let e = map_here(&settings).unwrap_err();
        assert_eq!(
            e.to_string(),
            "settings.py:2: CHARGE_VOLTAGE_LIST: must have 12 values (January to December), found 11"
        );
        let settings =
            super::super::python::read(Path::new("settings.py"), "NR_OF_BATTERIES = '2'\n")
                .unwrap();
        let e = map_here(&settings).unwrap_err();
        assert_eq!(
            e.to_string(),
            "settings.py:1: NR_OF_BATTERIES: must be a number, found '2'"
        );
    }
}
