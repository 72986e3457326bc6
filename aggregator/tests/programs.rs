//! The three programs: the daemon's hands `demo`, `simulate` and `publish` over to the
//! simulator's and `import-config` to the importer's, with the same command line, and carries
//! none of their code.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DAEMON: &str = env!("CARGO_BIN_EXE_dbus-aggregate-batteries");

fn simulator() -> PathBuf {
    support::program("dbus-aggregate-batteries-sim")
}

fn importer() -> PathBuf {
    support::program("dbus-aggregate-batteries-import")
}

fn run(program: impl AsRef<Path>, args: &[&str]) -> Output {
    Command::new(program.as_ref())
        .args(args)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("run the program")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn publish_is_handed_over_with_its_arguments() {
    let system = "unix:path=/var/run/dbus/system_bus_socket";
    let out = run(DAEMON, &["publish", "--address", system]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{system} is the system bus")),
        "{}",
        stderr(&out)
    );
    let out = run(DAEMON, &["publish", "--scenario", "/nonexistent/s.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/s.yaml: cannot read"));
}

#[test]
fn simulate_is_handed_over_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = run(
        DAEMON,
        &[
            "simulate",
            "--scenario",
            "/nonexistent/s.yaml",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/s.yaml: cannot read"));
    assert!(!out_dir.exists(), "nothing is written for a bad scenario");
}

#[test]
fn the_simulators_program_refuses_the_daemons_commands() {
    for command in ["run", "check-config", "plugins"] {
        let out = run(simulator(), &[command]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(
            stderr(&out).contains("the daemon is dbus-aggregate-batteries"),
            "{command}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn import_config_is_handed_over_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("config.yaml");
    let out = run(
        DAEMON,
        &[
            "import-config",
            "--from",
            "/nonexistent/settings.py",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/settings.py"),
        "{}",
        stderr(&out)
    );
    assert!(!out_file.exists(), "nothing is written for a missing file");
}

#[test]
fn the_importers_program_refuses_the_other_commands() {
    for command in ["run", "check-config", "plugins", "demo"] {
        let out = run(importer(), &[command]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(
            stderr(&out)
                .contains("runs `import-config` only; the daemon is dbus-aggregate-batteries"),
            "{command}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_missing_importer_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("dbus-aggregate-batteries");
    std::fs::copy(DAEMON, &alone).unwrap();
    let out = run(&alone, &["import-config", "--from", "a", "--out", "b"]);
    assert_eq!(out.status.code(), Some(1));
    let missing = dir.path().join("dbus-aggregate-batteries-import");
    assert!(
        stderr(&out).contains(&format!("`import-config` is run by {}", missing.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_simulator_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("dbus-aggregate-batteries");
    std::fs::copy(DAEMON, &alone).unwrap();
    let out = run(&alone, &["demo", "--for", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let missing = dir.path().join("dbus-aggregate-batteries-sim");
    assert!(
        stderr(&out).contains(&format!(
            "`demo`, `simulate` and `publish` are run by {}",
            missing.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// A sentence of the demo scenario, which the simulator embeds.
const DEMO_TEXT: &str = "looping through about three minutes";
/// An error text of the chart drawing of `simulate`.
const CHART_TEXT: &str = "cannot draw the chart";

fn holds(program: impl AsRef<Path>, text: &str) -> bool {
    let bytes = std::fs::read(program.as_ref()).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[test]
fn the_daemons_program_holds_no_simulator() {
    assert!(
        holds(simulator(), DEMO_TEXT),
        "the demo scenario no longer says {DEMO_TEXT:?}"
    );
    assert!(!holds(DAEMON, DEMO_TEXT));
    assert!(
        holds(simulator(), CHART_TEXT),
        "the chart no longer says {CHART_TEXT:?}"
    );
    assert!(!holds(DAEMON, CHART_TEXT));
}

/// An error text of the importer.
const IMPORT_TEXT: &str = "the imported config does not pass check-config";

#[test]
fn the_daemons_program_holds_no_importer() {
    assert!(
        holds(importer(), IMPORT_TEXT),
        "the importer no longer says {IMPORT_TEXT:?}"
    );
    assert!(!holds(DAEMON, IMPORT_TEXT));
}

/// The size of an ELF file's section `name` (64-bit little-endian, as this machine's
/// programs are), `None` without it.
#[cfg(all(
    target_os = "linux",
    target_pointer_width = "64",
    target_endian = "little"
))]
fn section_size(path: &Path, name: &str) -> Option<u64> {
    let elf = std::fs::read(path).expect("read the program");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes"));
    let (table, entry, count) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c));
    let names = u64_at(table + u16_at(0x3e) * entry + 0x18) as usize;
    (0..count).map(|i| table + i * entry).find_map(|header| {
        let start = names + u32::from_le_bytes(elf[header..header + 4].try_into().ok()?) as usize;
        let end = start + elf[start..].iter().position(|&b| b == 0)?;
        (&elf[start..end] == name.as_bytes()).then(|| u64_at(header + 0x20))
    })
}

/// The functions a run executes are linked first, in one block (`hot-text/*.ld`): in the
/// plugins, which the build scripts hand the lists to, and in an optimised daemon (a debug
/// build's is left out: `cargo test --release` checks it, and `install/check-bundles.sh` the
/// bundles').
#[cfg(all(
    target_os = "linux",
    target_pointer_width = "64",
    target_endian = "little"
))]
#[test]
fn the_code_that_runs_is_linked_first() {
    let mut programs = vec![
        support::built_plugin("libplugin_lfp_balancing.so"),
        support::built_plugin("libplugin_victron.so"),
    ];
    // The daemon's list goes to optimised builds only (`hot-text/link.rs`).
    if !cfg!(debug_assertions) {
        programs.push(PathBuf::from(DAEMON));
    }
    for program in programs {
        let hot = section_size(&program, ".text.hot");
        let rest = section_size(&program, ".text").expect("a .text section");
        // A list that no longer matches the code leaves the block empty or a sliver (a debug
        // build's plugins hold some 8 % of their code in it, a release build's 20 %).
        assert!(
            hot.is_some_and(|hot| hot * 20 >= rest),
            "{}: .text.hot {hot:?} bytes, .text {rest} bytes: the build scripts no longer link \
             aggregator/hot-text/*.ld, or the lists no longer match the code (run \
             aggregator/hot-text/generate.sh)",
            program.display()
        );
    }
}

/// The program's symbols say which instance of a generic function each is (the v0 scheme,
/// `.cargo/config.toml`): the code layout's lists name instances, and under the legacy scheme
/// they could only name every instance of a function at once. Checked where the program
/// keeps its symbols (a release build strips them).
#[cfg(debug_assertions)]
#[test]
fn symbols_name_the_instances_of_generic_functions() {
    let elf = std::fs::read(DAEMON).expect("read the program");
    let holds = |text: &str| elf.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(
        holds("_10aggregator6daemon") && !holds("_ZN10aggregator6daemon"),
        "{DAEMON}: the daemon's own functions are not named in the v0 scheme: RUSTFLAGS (or \
         CARGO_ENCODED_RUSTFLAGS) replaces what .cargo/config.toml asks for; add \
         `-C symbol-mangling-version=v0` to it"
    );
}

/// The code layout's patterns (`hot-text/patterns.py`) take out of a name only what differs
/// between builds and targets: the crate ids, back references and impl numbers of a v0 name
/// (never the bytes of an identifier that look like them), the instantiating crate when asked,
/// a legacy name's hash and LLVM's numbered copies.
#[test]
fn the_layouts_patterns_leave_out_only_what_differs_between_builds() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hot-text/patterns.py");
    let patterns = |option: &[&str], names: &str| -> String {
        use std::io::Write;
        let mut child = Command::new("python3")
            .arg(script)
            .args(option)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (the tests' set-up installs it)");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(names.as_bytes()).expect("names written");
        drop(stdin);
        let out = child.wait_with_output().expect("patterns.py ends");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let names = "\
_RNvYNtNtCs48MjU0Jc990_9venus_bus6socket10QuietWriteNtNtNtCslVGL4OE9AOX_4zbus10connection6socket9WriteHalf16can_pass_unix_fdB6_
_RNCNCNvNtCs48MjU0Jc990_9venus_bus6socket13write_in_turn0s_0B7_
_RNvCsabc123XY_3foo8BadCs_x_
_ZN4core3fmt5write17h0123456789abcdefE.llvm.42
_RNvMs3_NtCs48MjU0Jc990_9venus_bus7monitorNtB5_7Monitor5drain
";
    assert_eq!(
        patterns(&[], names),
        "\
_RNvYNtNtCs*_9venus_bus6socket10QuietWriteNtNtNtCs*_4zbus10connection6socket9WriteHalf16can_pass_unix_fdB*_
_RNCNCNvNtCs*_9venus_bus6socket13write_in_turn0s_0B*_
_RNvCs*_3foo8BadCs_x_
_ZN4core3fmt5write17h*E*
_RNvMs*_NtCs*_9venus_bus7monitorNtB*_7Monitor5drain
"
    );
    let any_crate = patterns(&["--any-crate"], names);
    assert_eq!(
        any_crate.lines().take(2).collect::<Vec<_>>(),
        [
            "_RNvYNtNtCs*_9venus_bus6socket10QuietWriteNtNtNtCs*_4zbus10connection6socket9WriteHalf16can_pass_unix_fd*",
            "_RNCNCNvNtCs*_9venus_bus6socket13write_in_turn0s_0*",
        ]
    );
}
