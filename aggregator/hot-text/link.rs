// Shared by the build scripts of the daemon (`aggregator/build.rs`) and of every plugin
// (`plugin-build.rs`): links the functions a run executes first in the program, one block,
// as `hot-text/*.ld` list them (CONTRIBUTING.md, "Code layout").

/// Hands the linker script `script` (a path from the package's folder) to the link of the
/// `kind` (`bins` or `cdylib`) on Linux, unless `AGGREGATOR_HOT_TEXT=0`; with `optimised_only`,
/// only to an optimised build (the linker matches each of the list's patterns against each of
/// the program's sections: the daemon's debug build has so many that its link took 30 s
/// instead of 3).
fn link_hot_text(kind: &str, script: &str, optimised_only: bool) {
    println!("cargo:rerun-if-env-changed=AGGREGATOR_HOT_TEXT");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let wanted = std::env::var("AGGREGATOR_HOT_TEXT").map_or(true, |v| v != "0");
    let optimised = std::env::var("OPT_LEVEL").is_ok_and(|level| level != "0");
    if !(linux && wanted && (optimised || !optimised_only)) {
        return;
    }
    let Ok(package) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let path = std::path::Path::new(&package).join(script);
    println!("cargo:rerun-if-changed={}", path.display());
    // -Xlinker keeps the path whole (-Wl, would split it at a comma).
    for arg in ["-Xlinker", "-T", "-Xlinker", &path.display().to_string()] {
        println!("cargo:rustc-link-arg-{kind}={arg}");
    }
}
