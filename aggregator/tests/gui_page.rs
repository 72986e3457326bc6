//! The gui-v2 page (`install/gui-v2/`): its plugin file is reproducible and current, qmllint
//! accepts it against our stub of `Victron.VenusOS` with warnings as errors, and it renders
//! offscreen, loaded as gui-v2 loads it, from values dumped from the running service on a
//! private bus (so the page and the service cannot drift apart), with no QML warning.
//!
//! The Qt tools come from PyPI's `pyside6-essentials` 6.8.3 in the venv `target/pyside6-6.8.3`
//! (`bash .ci/setup --gui` makes it) or the Python named by `PYSIDE6_PYTHON`. Without them these
//! tests say so and pass, except under CI (`CI=true`), where they fail.

use crate::support;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::bus::{text, until};
use support::config::TestConfig;
use support::world::{runtime, World};
use venus_bus::variant::Field;
use zbus::zvariant::OwnedValue;

const NAME: &str = "dbus-aggregate-batteries";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn gui_dir() -> PathBuf {
    repo().join("install/gui-v2")
}

/// A Python with PySide6 6.8 and the folder of its Qt tools.
struct Qt {
    python: PathBuf,
    pyside: PathBuf,
}

fn qt() -> Option<Qt> {
    let python = std::env::var_os("PYSIDE6_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/pyside6-6.8.3/bin/python"));
    let found = Command::new(&python)
        .args([
            "-c",
            "import os, PySide6; print(PySide6.__version__); print(os.path.dirname(PySide6.__file__))",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    let Some(found) = found else {
        let why = format!(
            "{}: no PySide6 (python3 -m venv target/pyside6-6.8.3 && \
             target/pyside6-6.8.3/bin/pip install pyside6-essentials==6.8.3; .ci/setup --gui does)",
            python.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return None;
    };
    let mut lines = found.lines();
    let version = lines.next().unwrap_or_default();
    assert!(
        version.starts_with("6.8."),
        "{}: PySide6 {version}, the page is checked with 6.8",
        python.display()
    );
    let pyside = PathBuf::from(lines.next().expect("the PySide6 folder"));
    Some(Qt { python, pyside })
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Qt {
    fn pack(&self, out: &Path) {
        self.pack_from(&gui_dir().join("page"), out);
    }

    fn pack_from(&self, page_dir: &Path, out: &Path) {
        let done = Command::new(&self.python)
            .arg(gui_dir().join("pack.py"))
            .arg("--page-dir")
            .arg(page_dir)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(done.status.success(), "pack.py: {}", output_text(&done));
    }

    fn qmllint(&self, files: &[PathBuf]) -> Output {
        Command::new(self.pyside.join("qmllint"))
            .arg("-I")
            .arg(gui_dir().join("stub"))
            .args(["--max-warnings", "0"])
            .args(files)
            .output()
            .unwrap()
    }

    /// Renders the shipped plugin file with `values` (path → value), then taps each of
    /// `packs`; returns the list items' texts, one "text\tsecondary\tcaption" line each, and
    /// "== name" before each pack's details.
    fn render(&self, values: &serde_json::Value, png: &Path, packs: &[&str]) -> Vec<String> {
        self.render_then(values, None, png, packs)
    }

    /// [`Qt::render`], the page then given `then` (render.py's `RENDER_THEN`) before the packs
    /// are tapped.
    fn render_then(
        &self,
        values: &serde_json::Value,
        then: Option<&serde_json::Value>,
        png: &Path,
        packs: &[&str],
    ) -> Vec<String> {
        let plugin = gui_dir().join(format!("{NAME}.json"));
        let done = self.render_plugin(&plugin, values, then, png, packs);
        assert!(
            done.0.status.success(),
            "render.py: {}",
            output_text(&done.0)
        );
        done.1
    }

    /// render.py on `plugin`: its output and the texts it listed.
    fn render_plugin(
        &self,
        plugin: &Path,
        values: &serde_json::Value,
        then: Option<&serde_json::Value>,
        png: &Path,
        packs: &[&str],
    ) -> (Output, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let values_file = dir.path().join("values.json");
        fs::write(&values_file, values.to_string()).unwrap();
        let texts = dir.path().join("texts.txt");
        let mut render = Command::new(&self.python);
        render
            .arg(gui_dir().join("render/render.py"))
            .arg(plugin)
            .arg(&values_file)
            .arg(png)
            .arg(&texts)
            .args(packs)
            .env("QT_QPA_PLATFORM", "offscreen");
        if let Some(then) = then {
            let then_file = dir.path().join("then.json");
            fs::write(&then_file, then.to_string()).unwrap();
            render.env("RENDER_THEN", &then_file);
        }
        let done = render.output().unwrap();
        let listed = fs::read_to_string(&texts)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (done, listed)
    }
}

#[test]
fn the_plugin_file_is_reproducible_and_made_from_the_page_as_committed() {
    let Some(qt) = qt() else { return };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (first, second) = (
        a.path().join(format!("{NAME}.json")),
        b.path().join(format!("{NAME}.json")),
    );
    qt.pack(&first);
    qt.pack(&second);
    let bytes = fs::read(&first).unwrap();
    assert_eq!(
        bytes,
        fs::read(&second).unwrap(),
        "two packs of the same sources differ"
    );
    assert!(
        bytes == fs::read(gui_dir().join(format!("{NAME}.json"))).unwrap(),
        "install/gui-v2/{NAME}.json is not the packed page: run install/gui-v2/pack.py"
    );
    let plugin: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(plugin["name"], NAME);
    assert_eq!(plugin["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(plugin["minRequiredVersion"], "v1.3.6");
    let integrations = plugin["integrations"].as_array().unwrap();
    assert_eq!(integrations.len(), 1);
    assert_eq!(integrations[0]["type"], 2);
    assert_eq!(
        integrations[0]["productId"],
        format!("0x{:X}", aggregator_core::published::PRODUCT_ID)
    );
    assert_eq!(integrations[0]["url"], format!("qrc:/{NAME}/BankPage.qml"));
}

#[test]
fn qmllint_accepts_the_page_and_fails_a_misspelt_property() {
    let Some(qt) = qt() else { return };
    let pages = [
        gui_dir().join("page/BankPage.qml"),
        gui_dir().join("page/PackPage.qml"),
        // The render's own harness, held to the same rule.
        gui_dir().join("render/Root.qml"),
    ];
    let out = qt.qmllint(&pages);
    assert!(out.status.success(), "qmllint: {}", output_text(&out));

    // The same page with one property misspelt: the stub must know gui-v2's names.
    let dir = tempfile::tempdir().unwrap();
    for file in ["BankPage.qml", "Listing.js"] {
        fs::copy(gui_dir().join("page").join(file), dir.path().join(file)).unwrap();
    }
    let bad = dir.path().join("BankPage.qml");
    let source = fs::read_to_string(&bad).unwrap();
    assert!(source.contains("secondaryTextColor:"));
    fs::write(
        &bad,
        source.replace("secondaryTextColor:", "secondaryTextColour:"),
    )
    .unwrap();
    let out = qt.qmllint(&[bad]);
    assert!(!out.status.success(), "qmllint passed a misspelt property");
    assert!(
        output_text(&out).contains("secondaryTextColour"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn a_missing_or_malformed_listing_shows_a_placeholder_not_a_qml_error() {
    let Some(qt) = qt() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (listing, placeholder) in [
        (
            serde_json::json!("[{\"name\": 3}"),
            "The pack listing is not readable",
        ),
        (
            serde_json::json!("{\"name\": \"Bat1\"}"),
            "The pack listing is not readable",
        ),
        (
            serde_json::Value::Null,
            "The service publishes no pack listing yet",
        ),
    ] {
        let mut values = serde_json::json!({
            "/ProductId": aggregator_core::published::PRODUCT_ID,
            "/Info/ChargeMode": "Bulk",
        });
        if !listing.is_null() {
            values["/System/Batteries"] = listing.clone();
        }
        let texts = qt.render(&values, &dir.path().join("page.png"), &[]);
        assert!(
            texts
                .iter()
                .any(|l| l == &format!("Packs\t\t{placeholder}")),
            "{listing}: {texts:#?}"
        );
        assert!(
            texts.iter().any(|l| l == "Packs online\t--\t"),
            "{texts:#?}"
        );
    }
}

#[test]
fn a_missing_or_malformed_bms_only_list_shows_a_placeholder_on_the_pack_page() {
    let Some(qt) = qt() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pack = |name: &str, bms_only: Option<serde_json::Value>| {
        let mut entry = serde_json::json!({
            "name": name, "service": format!("com.victronenergy.battery.{name}"),
            "state": "online", "voltage": 53.6, "current": 1.0, "soc": 50.0,
            "min_cell_voltage": 3.35, "max_cell_voltage": 3.36,
            "blocking_charge": false, "blocking_discharge": false,
        });
        if let Some(list) = bms_only {
            entry["bms_only"] = list;
        }
        entry
    };
    let listing = serde_json::json!([
        pack("Old", None),
        pack("Text", Some(serde_json::json!("temperature"))),
        pack("Number", Some(serde_json::json!([3]))),
        pack("Temp", Some(serde_json::json!(["temperature"]))),
    ]);
    let values = serde_json::json!({
        "/ProductId": aggregator_core::published::PRODUCT_ID,
        "/System/Batteries": listing.to_string(),
    });
    let names = ["Old", "Text", "Number", "Temp"];
    let all = qt.render(&values, &dir.path().join("page.png"), &names);
    let mut sections = all.split(|l| l.starts_with("== "));
    let bank = sections.next().unwrap();
    for (name, shown) in names.iter().zip([
        "Not published by the service",
        "Not readable",
        "Not readable",
        "temperature",
    ]) {
        let details = sections.next().unwrap();
        let row = details
            .iter()
            .find(|l| l.starts_with("Protected by its BMS alone\t"))
            .unwrap_or_else(|| panic!("{name}: {details:#?}"));
        assert_eq!(row.split('\t').nth(1), Some(shown), "{name}: {details:#?}");
        // The rest of the pack is read all the same.
        assert!(
            details.iter().any(|l| l == "Lowest cell\t3.350 V\t"),
            "{name}: {details:#?}"
        );
        let marked = bank
            .iter()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name}: {bank:#?}"))
            .ends_with("partly guarded by its BMS alone");
        assert_eq!(marked, *name == "Temp", "{name}: {bank:#?}");
    }
}

/// The bank page's values with a listing of `packs` (name, pack voltage).
fn with_packs(packs: &[(&str, f64)]) -> serde_json::Value {
    let listing: Vec<serde_json::Value> = packs
        .iter()
        .map(|(name, volts)| {
            serde_json::json!({
                "name": name, "service": format!("com.victronenergy.battery.{name}"),
                "state": "online", "voltage": volts, "current": 1.0, "soc": 50.0,
                "min_cell_voltage": 3.35, "max_cell_voltage": 3.36,
                "blocking_charge": false, "blocking_discharge": false,
            })
        })
        .collect();
    serde_json::json!({
        "/ProductId": aggregator_core::published::PRODUCT_ID,
        "/System/Batteries": serde_json::Value::Array(listing).to_string(),
    })
}

#[test]
fn a_new_listing_updates_the_pack_rows_in_place_and_a_shorter_one_drops_a_row() {
    let Some(qt) = qt() else { return };
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("page.png");
    let first = with_packs(&[("Bat1", 53.6), ("Bat2", 53.4)]);
    let row = |texts: &[String], name: &str| -> Option<String> {
        let line = texts.iter().find(|l| l.starts_with(&format!("{name}\t")))?;
        Some(line.split('\t').nth(1).unwrap_or_default().to_string())
    };
    // The next tick's listing: the same packs, other values.
    let next = with_packs(&[("Bat1", 53.7), ("Bat2", 53.5)]);
    let all = qt.render_then(&first, Some(&next), &png, &[]);
    let mut parts = all.split(|l| l == "== then");
    let (before, after) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(
        row(before, "Bat1").unwrap().contains("53.60 V"),
        "{before:#?}"
    );
    assert_eq!(after[0], "rows kept", "{all:#?}");
    assert!(
        row(after, "Bat1").unwrap().contains("53.70 V"),
        "{after:#?}"
    );
    assert!(
        row(after, "Bat2").unwrap().contains("53.50 V"),
        "{after:#?}"
    );
    // A pack fewer: its row goes, without a QML warning (render fails on one).
    let shorter = with_packs(&[("Bat1", 53.7)]);
    let all = qt.render_then(&first, Some(&shorter), &png, &[]);
    let after = all.split(|l| l == "== then").nth(1).unwrap();
    assert!(row(after, "Bat1").is_some(), "{after:#?}");
    assert_eq!(row(after, "Bat2"), None, "{after:#?}");
}

#[test]
fn a_page_that_warns_fails_the_render() {
    let Some(qt) = qt() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page");
    fs::create_dir(&page).unwrap();
    for file in ["BankPage.qml", "PackPage.qml", "Listing.js"] {
        fs::copy(gui_dir().join("page").join(file), page.join(file)).unwrap();
    }
    // A binding that reads a name nobody defines: a warning at run time, not a load error.
    let bank = page.join("BankPage.qml");
    let source = fs::read_to_string(&bank).unwrap();
    let marker = "title: qsTr(\"Bank and packs\")";
    assert!(source.contains(marker));
    fs::write(
        &bank,
        source.replace(marker, "title: qsTr(\"Bank\") + noSuchName"),
    )
    .unwrap();
    let plugin = dir.path().join(format!("{NAME}.json"));
    qt.pack_from(&page, &plugin);
    let values = serde_json::json!({ "/ProductId": aggregator_core::published::PRODUCT_ID });
    // The shipped page first, so that Qt's QML disk cache holds it under the same qrc URL: the
    // changed page must not be taken for it (its file date moves with its sources).
    qt.render(&values, &dir.path().join("shipped.png"), &[]);
    let (out, _) = qt.render_plugin(&plugin, &values, None, &dir.path().join("page.png"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("QML warning"),
        "{}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("noSuchName"),
        "{}",
        output_text(&out)
    );
}

/// A fast tick; a pack held 4 s before it is lost; the CAN pack taken by its product name.
fn config() -> String {
    TestConfig::default()
        .batteries(|b| {
            b.unset("expected")
                .set("product_name", ["SerialBattery", "JK BMS"])
                .startup_wait("2s")
                .hold_for("4s")
        })
        .section("soc", |s| s.set("source", "batteries"))
        .to_yaml()
}

/// Every valid path of the service as JSON: numbers and texts as the page's items read them.
fn dump(items: &HashMap<String, (OwnedValue, String)>) -> serde_json::Value {
    let mut values = serde_json::Map::new();
    for (path, (value, _)) in items {
        match Field::from_owned(value) {
            Field::Number(n) => {
                values.insert(path.clone(), serde_json::json!(n));
            }
            Field::Text(t) => {
                values.insert(path.clone(), serde_json::json!(t));
            }
            Field::Invalid | Field::Other(_) => {}
        }
    }
    serde_json::Value::Object(values)
}

fn states(items: &HashMap<String, (OwnedValue, String)>) -> Vec<String> {
    text(items, "/System/Batteries")
        .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap_or(""),
                p["state"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn the_page_renders_the_running_service_with_stale_lost_left_out_and_blocking_packs() {
    let Some(qt) = qt() else { return };
    let scenario = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/tests/gui-page.yaml"),
    )
    .unwrap();
    runtime().block_on(async {
        let w = World::start(&scenario, &config()).await;
        // In the listing's order: by service name.
        let wanted = [
            "Bat6 online",
            "Bat1 online",
            "Bat2 online",
            "Bat3 lost",
            "Bat4 stale",
            "Bat5 left out",
        ];
        let (ok, items) = until(&w.conn, Duration::from_secs(30), |i| states(i) == wanted).await;
        assert!(ok, "{:?}\n{}", states(&items), w.daemon.log_text());
        let values = dump(&items);
        let png = repo().join("target/gui-v2/bank-page.png");
        fs::create_dir_all(png.parent().unwrap()).unwrap();
        let all = qt.render(&values, &png, &["Bat1", "Bat4", "Bat6"]);
        let mut sections = all.split(|l| l.starts_with("== "));
        let texts = sections.next().unwrap().to_vec();
        let (bat1, bat4, bat6) = (
            sections.next().unwrap(),
            sections.next().unwrap(),
            sections.next().unwrap(),
        );
        assert!(
            fs::metadata(&png).unwrap().len() > 1000,
            "{}",
            png.display()
        );

        let row = |label: &str| -> Vec<String> {
            let line = texts
                .iter()
                .find(|l| l.split('\t').next() == Some(label))
                .unwrap_or_else(|| panic!("no row {label}: {texts:#?}"));
            line.split('\t').map(str::to_string).collect()
        };
        // The bank, as the service published it.
        let online = text(&items, "/System/BatteriesOnline").unwrap();
        assert_eq!(online, "3/6");
        assert_eq!(row("Packs online")[1], online);
        let voltage = support::bus::num(&items, "/Dc/0/Voltage").unwrap();
        assert!(
            row("Bank")[1].starts_with(&format!("{voltage:.2} V")),
            "{:?}",
            row("Bank")
        );
        let cvl = support::bus::num(&items, "/Info/MaxChargeVoltage").unwrap();
        let ccl = support::bus::num(&items, "/Info/MaxChargeCurrent").unwrap();
        let dcl = support::bus::num(&items, "/Info/MaxDischargeCurrent").unwrap();
        assert_eq!(
            row("Limits (CVL / CCL / DCL)")[1],
            format!("{cvl:.2} V / {ccl:.1} A / {dcl:.1} A")
        );
        // The reason in full, not cut.
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("Bat5"), "{mode}");
        assert_eq!(row("Reason for the limits")[2], mode);
        // Each pack: its state first, the one blocking charge says so.
        assert!(row("Bat1")[1].starts_with("Online  "), "{:?}", row("Bat1"));
        assert!(
            row("Bat1")[2].ends_with("blocks charge"),
            "{:?}",
            row("Bat1")
        );
        assert!(!row("Bat2")[2].contains("blocks"), "{:?}", row("Bat2"));
        assert!(
            row("Bat2")[2].starts_with("Cells 3.350 V"),
            "{:?}",
            row("Bat2")
        );
        assert!(row("Bat3")[1].starts_with("Lost  "), "{:?}", row("Bat3"));
        assert!(
            row("Bat4")[1].starts_with("Stale (held)  "),
            "{:?}",
            row("Bat4")
        );
        assert_eq!(row("Bat5")[1], "Left out");
        assert!(
            !texts.iter().any(|l| l.starts_with("Packs\t")),
            "no placeholder: {texts:#?}"
        );

        // Tapping a pack opens its details, read from the same listing.
        for (details, state, blocking) in [(bat1, "Online", "Yes"), (bat4, "Stale (held)", "No")] {
            let has = |line: &str| details.iter().any(|l| l == line);
            assert!(has(&format!("State\t{state}\t")), "{details:#?}");
            assert!(
                has(&format!("Blocking charge\t{blocking}\t")),
                "{details:#?}"
            );
            assert!(has("Lowest cell\t3.350 V\t"), "{details:#?}");
        }
        assert!(
            bat4.iter()
                .any(|l| l == "Service\tcom.victronenergy.battery.ttyUSB3\t"),
            "{bat4:#?}"
        );

        // Which bounds rest on a pack's BMS alone, in words: the service's list for each.
        let bms_only = |name: &str| -> Vec<String> {
            let json = text(&items, "/System/Batteries").unwrap();
            let listing: serde_json::Value = serde_json::from_str(&json).unwrap();
            listing
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .and_then(|p| p["bms_only"].as_array())
                .unwrap_or_else(|| panic!("{name}: no bms_only in {json}"))
                .iter()
                .map(|b| b.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            bms_only("Bat6"),
            ["max_cell_voltage", "min_cell_voltage", "temperature"]
        );
        assert!(bms_only("Bat1").is_empty() && bms_only("Bat4").is_empty());
        let protected = |details: &[String]| -> Vec<String> {
            let line = details
                .iter()
                .find(|l| l.starts_with("Protected by its BMS alone\t"))
                .unwrap_or_else(|| panic!("no BMS-alone row: {details:#?}"));
            line.split('\t').map(str::to_string).collect()
        };
        assert_eq!(
            protected(bat6)[1],
            "high cell, low cell, temperature",
            "{bat6:#?}"
        );
        assert!(protected(bat6)[2].contains("only its own BMS"), "{bat6:#?}");
        assert!(bat6.iter().any(|l| l == "Lowest cell\t--\t"), "{bat6:#?}");
        for details in [bat1, bat4] {
            assert_eq!(protected(details)[1], "None", "{details:#?}");
            assert_eq!(protected(details)[2], "", "{details:#?}");
        }
        // The bank page marks the pack's row; the others carry no mark.
        assert!(
            row("Bat6")[2].ends_with("partly guarded by its BMS alone"),
            "{:?}",
            row("Bat6")
        );
        assert!(!row("Bat2")[2].contains("BMS alone"), "{:?}", row("Bat2"));
    });
}
