//! The crate graph holds the architecture (ARCHITECTURE.md): the core has no runtime, D-Bus,
//! YAML, file or logging crate among its dependencies, and neither the core nor the host
//! depends on a plugin crate (plugins are found on disk).

use std::process::Command;

/// The packages a crate depends on (normal and build edges), by name.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-p", package])
        .args(["-e", "normal,build", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Crates that would mean I/O, a clock, D-Bus, YAML or logging in the core.
const NOT_IN_THE_CORE: [&str; 15] = [
    "tokio",
    "mio",
    "zbus",
    "zvariant",
    "futures-lite",
    "async-trait",
    "yaml_serde",
    "serde_yaml",
    "unsafe-libyaml",
    "tempfile",
    "rustix",
    "tracing",
    "tracing-subscriber",
    "clap",
    "aggregator",
];

#[test]
fn the_core_has_no_io_clock_bus_yaml_or_logging_crate() {
    let deps = dependencies("aggregator-core");
    assert!(
        deps.iter().any(|d| d == "plugin-api"),
        "cargo tree lists the core's dependencies: {deps:?}"
    );
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| NOT_IN_THE_CORE.contains(&d.as_str()))
        .collect();
    assert!(found.is_empty(), "the core depends on {found:?}");
}

#[test]
fn no_crate_of_ours_depends_on_a_plugin() {
    for package in ["aggregator-core", "aggregator"] {
        let deps = dependencies(package);
        let plugins: Vec<&String> = deps.iter().filter(|d| d.starts_with("plugin-")).collect();
        assert!(
            plugins.iter().all(|p| *p == "plugin-api"),
            "{package} depends on {plugins:?}"
        );
    }
}

/// Every crate of ours with integration tests builds them as one binary, `tests/tests.rs`
/// (`autotests = false`): a file of `tests/` it does not declare would never be compiled.
#[test]
fn every_test_file_is_a_module_of_its_crates_test_binary() {
    let aggregator = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for crate_dir in ["", "bus", "sim", "import"] {
        let tests = aggregator.join(crate_dir).join("tests");
        let root = std::fs::read_to_string(tests.join("tests.rs"))
            .unwrap_or_else(|err| panic!("{}: {err}", tests.join("tests.rs").display()));
        for entry in std::fs::read_dir(&tests).expect("tests folder") {
            let path = entry.expect("entry").path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(module) = name.strip_suffix(".rs") else {
                continue;
            };
            if module == "tests" {
                continue;
            }
            assert!(
                root.lines().any(|line| line.trim() == format!("mod {module};")),
                "{} is not a module of {}: add `mod {module};`",
                path.display(),
                tests.join("tests.rs").display()
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} test files found");
}
