#!/bin/sh
# bundle.sh [armv7|aarch64]: builds dist/dbus-aggregate-batteries-<version>-<arch>.tar.gz for
# Venus OS (no argument: both). The programs are linked against glibc 2.31, the oldest on
# Venus OS 3.x, with cargo-zigbuild; musl is no option, plugins need dlopen. Installs what it
# needs (the rust targets, zig, cargo-zigbuild) when it is missing.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$REPO"
NAME=dbus-aggregate-batteries
GLIBC=2.31

case ${1:-both} in
    armv7) ARCHES=armv7 ;;
    aarch64) ARCHES=aarch64 ;;
    both) ARCHES="armv7 aarch64" ;;
    *) echo "usage: bundle.sh [armv7|aarch64]" >&2; exit 2 ;;
esac

triple() {
    case $1 in
        armv7) echo armv7-unknown-linux-gnueabihf ;;
        aarch64) echo aarch64-unknown-linux-gnu ;;
    esac
}

for arch in $ARCHES; do
    target=$(triple "$arch")
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
# cargo-zigbuild finds zig on PATH or as the ziglang Python package.
if ! command -v zig > /dev/null 2>&1 && ! python3 -c 'import ziglang' 2> /dev/null; then
    python3 -m pip install --quiet ziglang 2> /dev/null ||
        python3 -m pip install --quiet --break-system-packages ziglang
fi
command -v cargo-zigbuild > /dev/null 2>&1 || cargo install --quiet cargo-zigbuild --locked

VERSION=$(cargo pkgid -p aggregator | sed 's/.*[#@]//')
PLUGINS=
for crate in plugins/*/Cargo.toml; do
    package=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$crate" | head -n 1)
    [ "$package" = plugin-fault-test ] || PLUGINS="$PLUGINS -p $package"
done

TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p dist
for arch in $ARCHES; do
    target=$(triple "$arch")
    cargo zigbuild --release --target "$target.$GLIBC" -p aggregator --bin "$NAME"
    # import-config: the daemon's program hands it over to this one (migrate.sh runs it).
    cargo zigbuild --release --target "$target.$GLIBC" -p aggregator-import --bin "$NAME-import"
    # shellcheck disable=SC2086 # one -p per plugin
    cargo zigbuild --release --target "$target.$GLIBC" --lib $PLUGINS
    bundle=$NAME-$VERSION-$arch
    sh install/stage.sh "dist/$bundle" "$TARGET_DIR/$target/release"
    tar -czf "dist/$bundle.tar.gz.new" --owner=0 --group=0 -C dist "$bundle"
    mv -f "dist/$bundle.tar.gz.new" "dist/$bundle.tar.gz"
    rm -rf "dist/$bundle"
    echo "dist/$bundle.tar.gz"
done
