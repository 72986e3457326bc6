//! The body of the fuzz target `config` (`fuzz/`, nightly) over seed inputs, on the stable
//! toolchain: the shipped `config.yaml`, cut and garbled copies of it. None may panic, and each
//! gives a sensible result. (The D-Bus targets' seeds: the D-Bus layer's tests.)

use aggregator::config::ConfigError;

#[path = "../../fuzz/bodies/config.rs"]
mod fuzzing;

const CONFIG: &str = include_str!("../../config.yaml");

/// The errors of a config that must not parse.
fn errors_of(text: &str) -> Vec<ConfigError> {
    match fuzzing::config(text.as_bytes()) {
        Ok(config) => panic!("parsed, but should not have:\n{text}\n{config:?}"),
        Err(errors) => errors,
    }
}

#[test]
fn the_shipped_config_parses() {
    let config = fuzzing::config(CONFIG.as_bytes()).expect("config.yaml parses");
    assert_eq!(config.strategy.plugin, "serialbattery");
}

#[test]
fn every_cut_of_the_shipped_config_parses_or_says_why() {
    // Every line end, and every 37th byte in between (a cut in a key, a value, a comment).
    let line_ends = CONFIG.match_indices('\n').map(|(at, _)| at);
    let cuts: Vec<usize> = line_ends.chain((0..CONFIG.len()).step_by(37)).collect();
    let mut failed = 0;
    for cut in cuts {
        if fuzzing::config(&CONFIG.as_bytes()[..cut]).is_err() {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "a cut before `strategy:` cannot be a whole config"
    );
}

#[test]
fn garbled_configs_name_the_key_or_its_line() {
    for (from, to, key) in [
        (
            "update_interval: 1s",
            "update_interval: 1e30",
            "update_interval",
        ),
        (
            "update_interval: 1s",
            "update_interval: 1e300h",
            "update_interval",
        ),
        (
            "update_interval: 1s",
            "update_interval: -1",
            "update_interval",
        ),
        ("hold_for: 60s", "hold_for: 9e99", "batteries.hold_for"),
        ("hold_for: 60s", "hold_for: .nan", "batteries.hold_for"),
        ("hold_for: 60s", "hold_for: [1]", "batteries.hold_for"),
        ("  cells: 16", "  cells: -16", "batteries.cells"),
        ("  cells: 16", "  colour: red", "batteries"),
        ("on_lost: block_charge", "on_lost: 7", "batteries.on_lost"),
        ("efficiency: 0.985", "efficiency: .inf", "soc.efficiency"),
        ("efficiency: 0.985", "efficiency: yes", "soc.efficiency"),
        (
            "max_cell_voltage: 3.6",
            "max_cell_voltage: 1e999",
            "safety.max_cell_voltage",
        ),
        ("\nsafety:", "\nsafety: 3\nunsafe:", "safety"),
    ] {
        let at = CONFIG
            .find(from)
            .unwrap_or_else(|| panic!("{from} not in config.yaml"));
        let at = at + from.len() - from.trim_start().len();
        let line = CONFIG[..at].matches('\n').count() + 1;
        let errors = errors_of(&CONFIG.replacen(from, to, 1));
        // A value of a top-level key comes back from the YAML crate without its key; its line
        // still leads there.
        assert!(
            errors
                .iter()
                .any(|e| e.key.starts_with(key) || (e.key.is_empty() && e.line == Some(line))),
            "`{to}`: neither {key} nor line {line} named: {errors:?}"
        );
    }
}

#[test]
fn any_text_gives_a_result() {
    let mut seeds: Vec<Vec<u8>> = [
        "",
        "---",
        "~",
        "[]",
        "\"just a string\"",
        "strategy:\n\tplugin: x",
        "a: &a [*a, *a]\nb: *a",
        "x: !!binary AAAA",
        "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
        "update_interval: 1e30\nstrategy: {plugin: a}\nsafety: {max_cell_voltage: 1, max_charge_current: 1, max_discharge_current: 1}",
        "18446744073709551616",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    seeds.push(vec![0xff, 0xfe, b':', 0x80]);
    seeds.push(CONFIG.replace(':', " ").into_bytes());
    seeds.push(CONFIG.replace("  ", "\t").into_bytes());
    seeds.push(CONFIG.replace('\n', "\r").into_bytes());
    // Old Mac line ends: YAML counts lines `str::lines` does not see.
    seeds.push(format!("{}\rnot yaml: [", CONFIG.replace('\n', "\r")).into_bytes());
    let mut flipped = CONFIG.as_bytes().to_vec();
    for k in (0..flipped.len()).step_by(101) {
        flipped[k] ^= 0x80;
    }
    seeds.push(flipped);
    for seed in seeds {
        let _ = fuzzing::config(&seed);
    }
}
