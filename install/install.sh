#!/bin/sh
# Installs or upgrades dbus-aggregate-batteries from this unpacked bundle into
# /data/apps/dbus-aggregate-batteries and enables the service. An existing config.yaml and
# the state folder are kept; the new default config is written beside it as
# config.default.yaml. Where the Python program (3.x, in /data/dbus-aggregate-batteries) is
# enabled, it refuses, naming --migrate: the install then runs migrate.sh, which imports its
# settings and state and switches over (rollback.sh goes back).
USAGE="install.sh [--root DIR] [--migrate [--user-feed-in 0|1] [--cell-voltages MIN:MAX] [--max-currents CHARGE:DISCHARGE]]"
TAKES_MIGRATE=1
TAKES_FEED_IN=1
BUNDLE=$(cd "$(dirname "$0")" && pwd -P)
. "$BUNDLE/paths.sh"

[ -f "$BUNDLE/$NAME" ] && [ -f "$BUNDLE/$NAME-import" ] && [ -d "$BUNDLE/plugins" ] ||
    die "$BUNDLE is not an unpacked bundle (no $NAME program, $NAME-import program or plugins \
folder beside install.sh)"
check_bundle_fits "$BUNDLE/$NAME"
# 3.5 and later of the Python program live in the folder of this one.
for python in aggregatebatteries.py dbus-aggregate-batteries.py; do
    [ ! -f "$APP/$python" ] || die "$DEVICE_APP holds the Python dbus-aggregate-batteries \
($python, 3.5 or later), in the folder this program uses: these scripts switch from 3.x in \
$OLD_DEVICE_DIR only; nothing was changed"
done
if [ -z "$MIGRATE" ]; then
    ! old_enabled || die "the Python dbus-aggregate-batteries is installed ($(old_program)) and \
this program never writes into its files; nothing was changed. To switch, its settings and \
state imported, it stopped and kept for $DEVICE_APP/rollback.sh: sh $BUNDLE/install.sh --migrate"
else
    old_enabled || die "--migrate: the Python dbus-aggregate-batteries is not enabled here \
(nothing in /service or /data/rc.local): nothing to switch from; nothing was changed"
fi
[ -z "$USER_FEED_IN$CELL_VOLTAGES$MAX_CURRENTS" ] || [ -n "$MIGRATE" ] ||
    die "--user-feed-in, --cell-voltages and --max-currents go with --migrate"
mkdir -p "$APP" || die "cannot create $APP"
# Only an upgrade of a running service needs a restart: a new one is started by svscan.
WAS_ENABLED=
! service_is_ours || WAS_ENABLED=1
[ "$(cd "$APP" && pwd -P)" != "$BUNDLE" ] ||
    die "run install.sh from the unpacked bundle, not from $APP"

# An upgrade: the config kept must pass this version's check before anything is replaced. A
# new program that refuses it would otherwise publish charge and discharge stopped at its next
# start (a reboot, a firmware update), with the old one running until then.
if [ -z "$MIGRATE" ] && [ -f "$APP/config.yaml" ]; then
    # The daemon refuses plugins writable by others than their owner (an unpacked bundle's may
    # be).
    chmod go-w "$BUNDLE/plugins" "$BUNDLE"/plugins/*.so 2> /dev/null
    "$BUNDLE/$NAME" check-config --config "$APP/config.yaml" --plugins-dir "$BUNDLE/plugins" ||
        die "$APP/config.yaml has errors for this version (above): nothing was changed; fix it \
(this version's default is $BUNDLE/config.yaml) and run install.sh again"
fi

# The daemon refuses plugins and folders writable by others than their owner.
mkdir -p "$APP/plugins" "$APP/state" "$APP/service/log" || die "cannot create folders in $APP"
chmod 0755 "$APP" "$APP/plugins" "$APP/state" "$APP/service" "$APP/service/log"

put "$BUNDLE/$NAME" "$APP/$NAME" 0755
# import-config: the daemon's program hands it over to this one beside it.
put "$BUNDLE/$NAME-import" "$APP/$NAME-import" 0755
# Plugins are replaced one by one: a plugin of another author in the folder stays.
for plugin in "$BUNDLE"/plugins/*.so; do
    [ -f "$plugin" ] || die "$BUNDLE/plugins holds no plugin"
    put "$plugin" "$APP/plugins/${plugin##*/}" 0644
done
for script in enable.sh disable.sh restart.sh uninstall.sh migrate.sh rollback.sh; do
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
elif [ -n "$MIGRATE" ]; then
    echo "config.yaml comes from the Python program's settings (migrate.sh)"
else
    put "$APP/config.default.yaml" "$APP/config.yaml" 0644
    echo "created $APP/config.yaml from the default: edit it for your bank, then run $APP/restart.sh"
fi
sync

# sh, not the scripts' own #! line: the same shell runs them (busybox sh on the device).
if [ -n "$MIGRATE" ]; then
    exec sh "$APP/migrate.sh" --root "$ROOT" ${USER_FEED_IN:+--user-feed-in "$USER_FEED_IN"} \
        ${CELL_VOLTAGES:+--cell-voltages "$CELL_VOLTAGES"} \
        ${MAX_CURRENTS:+--max-currents "$MAX_CURRENTS"}
fi
sh "$APP/enable.sh" --root "$ROOT" || exit $?
# The running daemon still has the old program.
[ -z "$WAS_ENABLED" ] || sh "$APP/restart.sh" --root "$ROOT"
