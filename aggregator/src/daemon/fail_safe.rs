//! A config file with errors at start: the service still comes up, with charge and discharge
//! stopped and the error as `/Info/ChargeMode`, as for a strategy that refuses its section.
//! Exiting instead would leave DVCC without its BMS while the supervisor restarts the daemon,
//! which exits again, for ever.
//!
//! What the file still tells (read leniently: the service name, the device instance, the cell
//! count, the state folder and the strategy's name) is kept, so that the GUI's choices keep pointing at the
//! service and the feed-in memory and counter are the ones of the bank; everything else comes
//! from the shipped default configuration. No plugin is loaded.

use std::path::{Path, PathBuf};

use crate::config::check::{resolve_paths, Failed, Ready};
use crate::config::{
    read_config_text, valid_service_name, Config, ConfigError, PluginChoice, Source,
};
use crate::plugins::Scan;

/// The current source's error text: not loaded, the strategy's error says why.
pub const NOT_LOADED: &str = "not loaded: the config has errors";

/// The shipped default configuration, which parses (a test says so).
const SHIPPED: &str = include_str!("../../../config.yaml");

/// The service to run for `file`, whose `errors` keep it from running as configured: no
/// strategy (its error is the config's first error), no current source.
pub fn ready(file: &Path, errors: &[ConfigError]) -> Ready {
    let mut config = shipped();
    let lenient = read_config_text(file)
        .ok()
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok());
    let text_at = |section: &str, key: &str| -> Option<String> {
        lenient
            .as_ref()?
            .get(section)?
            .get(key)?
            .as_str()
            .map(str::to_string)
    };
    // Only a name the bus lets us own: with another (`…battery.2nd`), DVCC would never see
    // the fail-safe service; the shipped name stands in.
    if let Some(name) = text_at("publish", "service_name").filter(|n| valid_service_name(n)) {
        config.publish.service_name = name;
    }
    if let Some(instance) = lenient
        .as_ref()
        .and_then(|v| v.get("publish")?.get("device_instance")?.as_u64())
        .and_then(|n| u32::try_from(n).ok())
    {
        config.publish.device_instance = instance;
    }
    // The shipped default's cell count is of one bank, not of this one: a pack of another
    // count would be reported as left out. The file's own count, where it reads as one.
    config.batteries.cells = lenient
        .as_ref()
        .and_then(|v| v.get("batteries")?.get("cells")?.as_u64())
        .and_then(|n| u32::try_from(n).ok());
    if let Some(dir) = text_at("paths", "state_dir") {
        config.paths.state_dir = PathBuf::from(dir);
    }
    let strategy = text_at("strategy", "plugin").unwrap_or_else(|| "(unknown)".into());
    config.strategy = PluginChoice {
        plugin: strategy.clone(),
        ..config.strategy
    };
    resolve_paths(&mut config, file, None);

    let first = errors.first().map_or_else(
        || format!("{} has errors", file.display()),
        ToString::to_string,
    );
    let text = format!("config error: {first}");
    let current_source = config.current_source.plugin.clone();
    Ready {
        config,
        scan: Scan {
            plugins: Vec::new(),
            refused: Vec::new(),
            skipped: Vec::new(),
        },
        strategy: Err(Failed {
            plugin: strategy,
            text,
            errors: errors.to_vec(),
        }),
        current_source: Err(Failed {
            plugin: current_source,
            text: NOT_LOADED.into(),
            errors: Vec::new(),
        }),
    }
}

fn shipped() -> Config {
    let source = Source {
        file: PathBuf::from("config.yaml (shipped default)"),
        text: SHIPPED.to_string(),
    };
    match source.parse() {
        Ok(config) => config,
        // Checked by a test: the shipped default parses.
        Err(errors) => panic!("the shipped default config does not parse: {errors:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_parses() {
        let config = shipped();
        assert_eq!(
            config.publish.service_name,
            "com.victronenergy.battery.aggregate"
        );
    }

    #[test]
    fn what_a_broken_file_still_tells_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "batteries: { expectd: 2 }\nstrategy: { plugin: lto-cv }\n\
             publish: { service_name: com.victronenergy.battery.bank2, device_instance: 0 }\n\
             paths: { state_dir: state }\n",
        )
        .unwrap();
        let error = ConfigError {
            file: file.clone(),
            key: "batteries.expectd".into(),
            line: Some(1),
            message: "unknown field `expectd`".into(),
        };
        let ready = ready(&file, std::slice::from_ref(&error));
        assert_eq!(
            ready.config.publish.service_name,
            "com.victronenergy.battery.bank2"
        );
        assert_eq!(ready.config.publish.device_instance, 0);
        assert_eq!(ready.config.paths.state_dir, dir.path().join("state"));
        let failed = ready.strategy.err().expect("no strategy");
        assert_eq!(failed.plugin, "lto-cv");
        assert!(failed.text.contains("batteries.expectd"), "{}", failed.text);
    }

    #[test]
    fn a_service_name_the_bus_refuses_gives_way_to_the_shipped_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        for name in [
            "com.victronenergy.battery.2nd",
            "com.victronenergy.battery.bank.two",
            "'com.victronenergy.battery.bank 2'",
        ] {
            std::fs::write(&file, format!("publish: {{ service_name: {name} }}\n")).unwrap();
            let ready = ready(&file, &[]);
            assert_eq!(
                ready.config.publish.service_name, "com.victronenergy.battery.aggregate",
                "{name}"
            );
        }
    }
}
