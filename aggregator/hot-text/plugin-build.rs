//! The build script of every plugin of this repository (each plugin's `Cargo.toml` names this
//! file): the plugins' executed functions first in their library.

include!("link.rs");

fn main() {
    link_hot_text("cdylib", "../../aggregator/hot-text/plugins.ld", false);
}
