#!/bin/sh
# stage.sh DIR PROGRAM_DIR: lays out a bundle in DIR from the daemon and plugins that cargo
# built in PROGRAM_DIR (target/<triple>/release for a device, target/debug for the tests):
# the daemon and the importer it hands `import-config` to, the built-in plugins in plugins/, config.yaml and the example configs, the
# install scripts and service/. bundle.sh packs it.
set -eu
[ $# -eq 2 ] || { echo "usage: stage.sh DIR PROGRAM_DIR" >&2; exit 2; }
OUT=$1
FROM=$2
REPO=$(cd "$(dirname "$0")/.." && pwd -P)
INSTALL=$REPO/install
NAME=dbus-aggregate-batteries

fail() {
    echo "stage.sh: $*" >&2
    exit 2
}

for program in "$NAME" "$NAME-import"; do
    [ -f "$FROM/$program" ] || fail "$FROM/$program is missing (build it first)"
done
rm -rf "$OUT"
mkdir -p "$OUT/plugins" "$OUT/service/log"

cp "$FROM/$NAME" "$OUT/$NAME"
cp "$FROM/$NAME-import" "$OUT/$NAME-import"
# Every plugin of the workspace but fault-test, which misbehaves on purpose for the tests.
for crate in "$REPO"/plugins/*/Cargo.toml; do
    package=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$crate" | head -n 1)
    [ -n "$package" ] || fail "$crate: no package name"
    [ "$package" != plugin-fault-test ] || continue
    library=lib$(echo "$package" | tr - _).so
    [ -f "$FROM/$library" ] || fail "$FROM/$library is missing (build the plugins first)"
    cp "$FROM/$library" "$OUT/plugins/$library"
done

for script in install.sh enable.sh disable.sh restart.sh uninstall.sh migrate.sh rollback.sh; do
    cp "$INSTALL/$script" "$OUT/$script"
done
cp "$INSTALL/paths.sh" "$OUT/paths.sh"
cp "$INSTALL/service/run" "$OUT/service/run"
cp "$INSTALL/service/log/run" "$OUT/service/log/run"
cp "$INSTALL/README.md" "$OUT/README.md"
cp "$REPO/config.yaml" "$OUT/config.yaml"
cp -R "$INSTALL/examples" "$OUT/examples"
mkdir -p "$OUT/gui-v2"
cp "$INSTALL/gui-v2/$NAME.json" "$OUT/gui-v2/$NAME.json"

# The daemon refuses plugins writable by others; a umask of the build machine must not leak in.
find "$OUT" -type d -exec chmod 0755 {} +
find "$OUT" -type f -exec chmod 0644 {} +
chmod 0755 "$OUT/$NAME" "$OUT/$NAME-import" "$OUT"/*.sh "$OUT/service/run" "$OUT/service/log/run"
chmod 0644 "$OUT/paths.sh"
