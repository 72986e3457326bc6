#!/bin/sh
# Installs or upgrades dbus-aggregate-batteries from this unpacked bundle into
# /data/apps/dbus-aggregate-batteries and enables the service. An existing config.yaml and
# the state folder are kept; the new default config is written beside it as
# config.default.yaml.
USAGE="install.sh [--root DIR]"
BUNDLE=$(cd "$(dirname "$0")" && pwd -P)
. "$BUNDLE/paths.sh"

[ -f "$BUNDLE/$NAME" ] && [ -d "$BUNDLE/plugins" ] ||
    die "$BUNDLE is not an unpacked bundle (no $NAME program or plugins folder beside install.sh)"
check_bundle_fits "$BUNDLE/$NAME"
mkdir -p "$APP" || die "cannot create $APP"
# Only an upgrade of a running service needs a restart: a new one is started by svscan.
WAS_ENABLED=
[ ! -d "$SERVICE" ] || WAS_ENABLED=1
[ "$(cd "$APP" && pwd -P)" != "$BUNDLE" ] ||
    die "run install.sh from the unpacked bundle, not from $APP"

# The daemon refuses plugins and folders writable by others than their owner.
mkdir -p "$APP/plugins" "$APP/state" "$APP/service/log" || die "cannot create folders in $APP"
chmod 0755 "$APP" "$APP/plugins" "$APP/state" "$APP/service" "$APP/service/log"

put "$BUNDLE/$NAME" "$APP/$NAME" 0755
# Plugins are replaced one by one: a plugin of another author in the folder stays.
for plugin in "$BUNDLE"/plugins/*.so; do
    [ -f "$plugin" ] || die "$BUNDLE/plugins holds no plugin"
    put "$plugin" "$APP/plugins/${plugin##*/}" 0644
done
for script in enable.sh disable.sh restart.sh uninstall.sh; do
    put "$BUNDLE/$script" "$APP/$script" 0755
done
put "$BUNDLE/paths.sh" "$APP/paths.sh" 0644
put "$BUNDLE/service/run" "$APP/service/run" 0755
put "$BUNDLE/service/log/run" "$APP/service/log/run" 0755
[ ! -f "$BUNDLE/README.md" ] || put "$BUNDLE/README.md" "$APP/README.md" 0644
# The gui-v2 page: enable.sh puts it where gui-v2 looks.
if [ -f "$BUNDLE/gui-v2/$GUI_PAGE" ]; then
    mkdir -p "$APP/gui-v2" && chmod 0755 "$APP/gui-v2" || die "cannot create $APP/gui-v2"
    put "$BUNDLE/gui-v2/$GUI_PAGE" "$APP/gui-v2/$GUI_PAGE" 0644
fi

# The shipped config is the documented default; the user's own config.yaml is never touched.
put "$BUNDLE/config.yaml" "$APP/config.default.yaml" 0644
for example in "$BUNDLE"/config?*.yaml; do
    [ ! -f "$example" ] || put "$example" "$APP/${example##*/}" 0644
done
if [ -d "$BUNDLE/examples" ]; then
    rm -rf "$APP/examples.new"
    cp -R "$BUNDLE/examples" "$APP/examples.new" || die "cannot copy the examples"
    rm -rf "$APP/examples"
    mv "$APP/examples.new" "$APP/examples" || die "cannot replace $APP/examples"
fi
if [ -f "$APP/config.yaml" ]; then
    echo "kept $APP/config.yaml; the new default is $APP/config.default.yaml"
else
    put "$APP/config.default.yaml" "$APP/config.yaml" 0644
    echo "created $APP/config.yaml from the default: edit it for your bank, then run $APP/restart.sh"
fi
sync

# sh, not the scripts' own #! line: the same shell runs them (busybox sh on the device).
sh "$APP/enable.sh" --root "$ROOT" || exit $?
# The running daemon still has the old program.
[ -z "$WAS_ENABLED" ] || sh "$APP/restart.sh" --root "$ROOT"
