#!/bin/sh
# Disables the service and removes the program, plugins and scripts. config.yaml and the
# state folder stay for a later install unless --purge is given, which removes the app folder
# and the logs too.
USAGE="uninstall.sh [--root DIR] [--purge]"
TAKES_PURGE=1
HERE=$(cd "$(dirname "$0")" && pwd -P)
. "$HERE/paths.sh"

# After a switch the Python program is stopped and this folder holds the way back, while its
# folder is there (removed, there is no way back to keep).
[ ! -f "$MIGRATION/service-link" ] || [ ! -d "$OLD_DIR" ] || die "switched from the Python \
program by migrate.sh: $APP/rollback.sh brings it back first (uninstalling this program alone \
leaves no BMS)"
sh "$HERE/disable.sh" --root "$ROOT" || exit $?
[ -d "$APP" ] || exit 0
if [ -n "$PURGE" ]; then
    # The Python program, where it is still installed, logs into the same folder.
    if [ -d "$OLD_DIR" ]; then
        rm -rf "$APP" || die "cannot remove $APP"
        echo "$NAME removed with its config and state; $LOG_DIR stays (the Python program in \
$OLD_DEVICE_DIR logs there too)"
    else
        rm -rf "$APP" "$LOG_DIR" || die "cannot remove $APP"
        echo "$NAME removed with its config, state and logs"
    fi
else
    for entry in "$APP"/* "$APP"/.[!.]*; do
        case ${entry##*/} in
            config.yaml | state) ;;
            *) [ ! -e "$entry" ] || rm -rf "$entry" || die "cannot remove $entry" ;;
        esac
    done
    echo "$NAME removed; kept $APP/config.yaml and $APP/state (uninstall.sh --purge removes them)"
fi
