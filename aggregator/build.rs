//! The day the program was built, for the clock check of `clock::calendar::DateGuard`: a
//! device booted without network time reads a date before it. `SOURCE_DATE_EPOCH` (seconds)
//! makes it reproducible. And the layout of the program's code: the functions a run executes
//! first, in one block (`hot-text/link.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

include!("hot-text/link.rs");

fn main() {
    link_hot_text("bins", "hot-text/daemon.ld", true);
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    println!(
        "cargo:rustc-env=AGGREGATOR_BUILD_DAY={}",
        seconds.div_euclid(86_400)
    );
}
