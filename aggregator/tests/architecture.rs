//! The crate graph holds the architecture (ARCHITECTURE.md, "Crates"): the core has no
//! runtime, D-Bus, YAML, file or logging crate among its dependencies; no crate of ours depends
//! on a plugin crate (plugins are found on disk); the daemon holds neither the simulator nor
//! the importer; the D-Bus layer knows neither the config nor the daemon; only the simulator
//! draws charts; and every crate's `clippy.toml` keeps file writes to the state writer.

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
const NOT_IN_THE_CORE: [&str; 16] = [
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
    "venus-bus",
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
    for package in [
        "aggregator-core",
        "venus-bus",
        "aggregator",
        "aggregator-sim",
        "aggregator-import",
    ] {
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
                root.lines()
                    .any(|line| line.trim() == format!("mod {module};")),
                "{} is not a module of {}: add `mod {module};`",
                path.display(),
                tests.join("tests.rs").display()
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} test files found");
}

/// The workspace's packages and their declared dependencies (every kind), from `cargo metadata`.
fn declared() -> Vec<(String, Vec<(String, String)>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--offline", "--locked", "--no-deps"])
        .args(["--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|dep| {
                    let name = dep["name"].as_str().expect("name").to_string();
                    // `null` is a normal dependency.
                    let kind = dep["kind"].as_str().unwrap_or("normal").to_string();
                    (name, kind)
                })
                .collect();
            (package["name"].as_str().expect("name").to_string(), deps)
        })
        .collect()
}

#[test]
fn the_daemon_holds_neither_the_simulator_nor_the_importer() {
    let deps = dependencies("aggregator");
    assert!(
        deps.iter().any(|d| d == "venus-bus"),
        "cargo tree lists the daemon's dependencies: {deps:?}"
    );
    for other in ["aggregator-sim", "aggregator-import", "plotters"] {
        assert!(
            !deps.iter().any(|d| d == other),
            "the daemon's program depends on {other}"
        );
    }
}

#[test]
fn the_bus_knows_neither_the_config_nor_the_daemon() {
    let deps = dependencies("venus-bus");
    assert!(
        deps.iter().any(|d| d == "zbus"),
        "cargo tree lists the D-Bus layer's dependencies: {deps:?}"
    );
    let ours = ["aggregator", "aggregator-sim", "aggregator-import"];
    // The config's crates: its YAML parser and the command line.
    let config = ["yaml_serde", "serde_yaml", "unsafe-libyaml", "clap"];
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| ours.contains(&d.as_str()) || config.contains(&d.as_str()))
        .collect();
    assert!(found.is_empty(), "the D-Bus layer depends on {found:?}");
    // Its tests too: they run on the bus alone (the simulator's tests read it with services).
    let (_, bus) = declared()
        .into_iter()
        .find(|(name, _)| name == "venus-bus")
        .expect("venus-bus in the workspace");
    let found: Vec<&(String, String)> = bus
        .iter()
        .filter(|(name, _)| ours.contains(&name.as_str()))
        .collect();
    assert!(found.is_empty(), "the D-Bus layer declares {found:?}");
}

#[test]
fn only_the_simulator_draws_charts() {
    assert!(
        dependencies("aggregator-sim")
            .iter()
            .any(|d| d == "plotters"),
        "the simulator draws its chart with plotters"
    );
    for (package, _) in declared() {
        if package == "aggregator-sim" {
            continue;
        }
        assert!(
            !dependencies(&package).iter().any(|d| d == "plotters"),
            "{package} depends on plotters"
        );
    }
}

/// The simulator and the importer are reached by no program but their own: only the tests and
/// the benchmark use them (a dev-dependency: the daemon's end-to-end tests run it against the
/// simulator's batteries, the importer's tests check their import on them).
#[test]
fn only_tests_and_the_benchmark_reach_the_simulator_and_the_importer() {
    let dev_allowed = [
        ("aggregator", "aggregator-sim"),
        ("aggregator-import", "aggregator-sim"),
    ];
    let mut edges = 0;
    for (package, deps) in declared() {
        for (dep, kind) in deps {
            if dep != "aggregator-sim" && dep != "aggregator-import" {
                continue;
            }
            edges += 1;
            assert!(
                kind == "dev" && dev_allowed.contains(&(package.as_str(), dep.as_str())),
                "{package} depends on {dep} ({kind})"
            );
        }
    }
    assert_eq!(
        edges,
        dev_allowed.len(),
        "cargo metadata lists the dev edges"
    );
}

/// The file-writing calls each crate of ours bans: the `clippy.toml` clippy finds for it (its
/// own folder's, else the nearest parent's) must list `std::fs::write` and the rest.
#[test]
fn every_crate_of_ours_bans_file_writes_outside_the_state_writer() {
    let aggregator = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_dir in ["", "core", "bus", "sim", "import"] {
        let dir = aggregator.join(crate_dir);
        let config = dir
            .ancestors()
            .map(|d| d.join("clippy.toml"))
            .find(|f| f.is_file())
            .unwrap_or_else(|| panic!("no clippy.toml for {}", dir.display()));
        let text = std::fs::read_to_string(&config).expect("clippy.toml");
        for call in [
            "std::fs::write",
            "std::fs::create_dir_all",
            "std::fs::remove_file",
        ] {
            assert!(
                text.contains(&format!("path = \"{call}\"")),
                "{} (for {}) does not ban {call}",
                config.display(),
                dir.display()
            );
        }
    }
}
