//! Shared by the integration tests: where the built plugins are, and private copies of them.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Library file names of the plugins the workspace builds.
pub const PLUGIN_FILES: [&str; 7] = [
    "libplugin_bms.so",
    "libplugin_fault_test.so",
    "libplugin_lfp_balancing.so",
    "libplugin_lto_cv.so",
    "libplugin_serialbattery.so",
    "libplugin_smartshunt.so",
    "libplugin_victron.so",
];

/// The folder cargo put this test binary's sibling artifacts in (`target/debug`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The path of a built plugin; panics with the command to run when it is missing.
pub fn built_plugin(file: &str) -> PathBuf {
    let path = build_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with `cargo build --workspace` (the README's \
         test command does)",
        path.display()
    );
    path
}

/// A private plugins folder (mode 0755) holding copies of the given built plugins.
pub fn plugins_dir_with(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    set_mode(dir.path(), 0o755);
    for file in files {
        let target = dir.path().join(file);
        fs::copy(built_plugin(file), &target).expect("copy plugin");
        set_mode(&target, 0o755);
    }
    dir
}

/// Sets a file's or folder's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}
