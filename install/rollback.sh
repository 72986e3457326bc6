#!/bin/sh
# Goes back to the Python dbus-aggregate-batteries after migrate.sh, in one step: this program
# is disabled (disable.sh: stopped, out of /service and out of /data/rc.local), the Python
# program's /service symlink and boot line come back as they were, and svscan starts it within
# seconds. Its folder was never written, so it finds its settings and state files as they were
# at the switch. This program's folder (config, state) stays: migrate.sh switches again.
USAGE="rollback.sh [--root DIR]"
HERE=$(cd "$(dirname "$0")" && pwd -P)
. "$HERE/paths.sh"

[ -f "$MIGRATION/service-link" ] ||
    die "$MIGRATION/service-link is missing: migrate.sh did not switch this device, nothing to roll back"
[ -d "$OLD_DIR" ] || die "$OLD_DEVICE_DIR is gone: the Python program cannot come back"
LINK=$(cat "$MIGRATION/service-link")

sh "$HERE/disable.sh" --root "$ROOT" || die "disable.sh failed (above): nothing else was changed"

# rc.local as it was before the switch when nobody changed it since (but for our line);
# otherwise the user's changes stay and the Python program's lines are added.
mkdir -p "${RC_LOCAL%/*}" || die "cannot create ${RC_LOCAL%/*}"
if [ -f "$MIGRATION/rc.local" ]; then
    old_boot_lines "$MIGRATION/rc.local" > "$MIGRATION/boot-lines"
    grep -vF "$OLD_DEVICE_DIR/" "$MIGRATION/rc.local" > "$MIGRATION/rc.local.without"
    cat "$RC_LOCAL" 2> /dev/null > "$MIGRATION/rc.local.now"
    if cmp -s "$MIGRATION/rc.local.without" "$MIGRATION/rc.local.now"; then
        cp -p "$MIGRATION/rc.local" "$RC_LOCAL.new" && mv -f "$RC_LOCAL.new" "$RC_LOCAL" ||
            die "cannot restore $RC_LOCAL"
    else
        { cat "$MIGRATION/rc.local.now"; cat "$MIGRATION/boot-lines"; } | put_text "$RC_LOCAL" || exit 2
    fi
fi

# svscan starts it from here (no `down` file in its service folder).
mkdir -p "${SERVICE%/*}" || die "cannot create ${SERVICE%/*}"
ln -s "$LINK" "$SERVICE" || die "cannot create the symlink $SERVICE -> $LINK"
rm -rf "$MIGRATION"
sync
echo "rolled back: the Python program is in /service again ($SERVICE -> $LINK) and starts at boot;"
echo "$APP stays: $APP/migrate.sh switches again"
