#!/bin/sh
# Switches from the Python dbus-aggregate-batteries 3.x (in /data/dbus-aggregate-batteries) to
# this program, never both at once and with only the seconds of the handover between them:
# imports its settings and state (import-config), stops it through daemontools, takes its boot
# line out of /data/rc.local and puts ours in. Its folder is never written: rollback.sh brings it back as it
# was. A config.yaml of an earlier switch is kept (the new import is written beside it as
# config.imported.yaml); the state is always imported again, the Python program's is the newer.
USAGE="migrate.sh [--root DIR] [--user-feed-in 0|1] [--cell-voltages MIN:MAX] [--max-currents CHARGE:DISCHARGE]"
TAKES_FEED_IN=1
HERE=$(cd "$(dirname "$0")" && pwd -P)
. "$HERE/paths.sh"

PROGRAM=$APP/$NAME
[ -x "$PROGRAM" ] || die "$PROGRAM is missing: run install.sh --migrate from the bundle"
SETTINGS=$OLD_DIR/settings.py
[ -d "$OLD_DIR" ] || die "$OLD_DEVICE_DIR is not there: there is no Python program to switch from"
[ -f "$SETTINGS" ] || die "$OLD_DEVICE_DIR/settings.py is missing: its settings cannot be imported"
if ! old_enabled; then
    [ ! -f "$MIGRATION/service-link" ] ||
        die "already switched from the Python program: $APP/rollback.sh goes back"
    die "the Python program is neither in /service nor in /data/rc.local: nothing to stop. \
Write $APP/config.yaml (import-config imports its settings) and run $APP/enable.sh"
fi

# The bounds the import asks for where the old settings have none (pass-through mode), as the
# user gave them.
IMPORT_ARGS=
[ -z "$CELL_VOLTAGES" ] || IMPORT_ARGS="--cell-voltages $CELL_VOLTAGES"
[ -z "$MAX_CURRENTS" ] || IMPORT_ARGS="$IMPORT_ARGS --max-currents $MAX_CURRENTS"

# The import is tried before anything is stopped: settings it cannot read stop here.
SCRATCH=$APP/.import
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH" || die "cannot create $SCRATCH"
# shellcheck disable=SC2086 # empty, or options with their values
"$PROGRAM" import-config --from "$SETTINGS" --state-from "$OLD_DIR" \
    --out "$SCRATCH/config.yaml" --plugins-dir "$APP/plugins" $IMPORT_ARGS \
    > "$SCRATCH/report.txt" 2>&1 || {
    cat "$SCRATCH/report.txt" >&2
    rm -rf "$SCRATCH"
    die "the Python program's settings cannot be imported (above): nothing was changed; an \
option the import asks for goes to $APP/migrate.sh as it is"
}
# The config enable.sh will enable, checked as it checks it (check-config, the installed
# plugins), also before anything is stopped: a config.yaml of an earlier switch, which is
# kept, else this import.
if [ -f "$APP/config.yaml" ]; then
    CHECKED=$APP/config.yaml
    REFUSED="$CHECKED, kept from an earlier switch, does not pass check-config (above): fix it, \
or move it away to take this import"
else
    CHECKED=$SCRATCH/config.yaml
    REFUSED="the imported config does not pass check-config (above): change the settings it \
came from in $OLD_DEVICE_DIR/settings.py and run migrate.sh again"
fi
"$PROGRAM" check-config --config "$CHECKED" --plugins-dir "$APP/plugins" \
    > "$SCRATCH/check.txt" 2>&1 || {
    sed "s|$SCRATCH/config.yaml|the imported config|g" "$SCRATCH/check.txt" >&2
    rm -rf "$SCRATCH"
    die "$REFUSED; nothing was changed"
}

# 3.x keeps no feed-in memory: when it switched DC-coupled feed-in off and did not switch it
# back, the setting reads 0 whatever the user's own value was, and only the user knows it.
# Its log says which it did last (the lines of its own, before any of ours). 3.0 to 3.1 write
# the 0 without a line of their own, at "Dynamic CVL reduction started"; later versions say
# after that line what they did ("de-activated"), or, those that read the setting first, that
# it "was not active" (the user's own 0).
last_feed_in_word() {
    cat "$LOG_DIR"/@* "$LOG_DIR"/current 2> /dev/null |
        grep -e "DC-coupled PV feed-in de-activated" -e "DC-coupled PV feed-in re-activated" \
            -e "Dynamic CVL reduction started" -e "DC-coupled PV feed-in was not active" |
        tail -n 1
}
# feed_in_unknown WORD: whether the log's last word leaves the user's own value unknown.
feed_in_unknown() {
    case $1 in
        *de-activated* | *"Dynamic CVL reduction started"*) return 0 ;;
        *) return 1 ;;
    esac
}
ask_feed_in() {
    echo "the Python program switched DC-coupled PV feed-in off and had not switched it back \
(its log: $1); your own setting cannot be read while it is held at 0. Run again saying what it \
is: $APP/migrate.sh --user-feed-in 1 (feed-in was on) or --user-feed-in 0 (it was off)"
}
# Asked before anything is stopped: the Python program keeps running while the user answers.
word=$(last_feed_in_word)
if [ -z "$USER_FEED_IN" ] && feed_in_unknown "$word"; then
    rm -rf "$SCRATCH"
    die "$(ask_feed_in "$word"); nothing was changed"
fi

# What rollback.sh needs to put back, saved before anything changes.
rm -rf "$MIGRATION"
mkdir -p "$MIGRATION" || die "cannot create $MIGRATION"
if [ -L "$SERVICE" ]; then
    readlink "$SERVICE" > "$MIGRATION/service-link.new"
else
    # No /service entry (the device had not booted it yet): its boot line makes this one.
    echo "$OLD_DEVICE_DIR/service" > "$MIGRATION/service-link.new"
fi
if [ -f "$RC_LOCAL" ]; then
    cp -p "$RC_LOCAL" "$MIGRATION/rc.local" || die "cannot save $RC_LOCAL"
fi
# Written last: its presence says the record is whole.
mv "$MIGRATION/service-link.new" "$MIGRATION/service-link" || die "cannot write $MIGRATION"

# From here the Python program is stopped: a failure starts it again, and takes back what
# this run wrote into the app folder (a later run then finds it as this one did).
WROTE_STATE=
WROTE_CONFIG=
restart_old() {
    [ -z "$WROTE_CONFIG" ] || rm -f "$WROTE_CONFIG"
    if [ -n "$WROTE_STATE" ]; then
        if [ -f "$MIGRATION/state.json" ]; then
            cp -p "$MIGRATION/state.json" "$APP/state/state.json"
        else
            rm -f "$APP/state/state.json"
        fi
    fi
    [ ! -f "$MIGRATION/rc.local" ] || cp -p "$MIGRATION/rc.local" "$RC_LOCAL"
    ln -sfn "$(cat "$MIGRATION/service-link")" "$SERVICE" 2> /dev/null
    if on_device; then svc -u "$OLD_DIR/service" 2> /dev/null; fi
    rm -rf "$SCRATCH" "$MIGRATION"
    die "$*; the Python program runs again, its own files unchanged"
}

# The /service entry goes first, then the program: svscan cannot start it again in between.
if [ -L "$SERVICE" ] || { [ -e "$SERVICE" ] && ! service_is_ours; }; then
    rm -f "$SERVICE" || die "cannot remove the symlink $SERVICE"
fi
if on_device; then
    stop_supervised "$OLD_DIR/service"
    # Its run file starts python3 without exec: the TERM reaches the shell, not always
    # the program, which is then ended by its own command line (as its restart.sh does).
    pkill -f "python3 $OLD_DEVICE_DIR/aggregatebatteries.py" 2> /dev/null
fi

# Its log again, now that it is stopped: it may have switched feed-in off since.
word=$(last_feed_in_word)
FEED_IN_ARGS=
if feed_in_unknown "$word"; then
    [ -n "$USER_FEED_IN" ] || restart_old "$(ask_feed_in "$word")"
    FEED_IN_ARGS="--user-feed-in $USER_FEED_IN"
fi

# The state now, with the program stopped; the config from the same import.
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH" || restart_old "cannot create $SCRATCH"
# shellcheck disable=SC2086 # empty, or the option and its value
"$PROGRAM" import-config --from "$SETTINGS" --state-from "$OLD_DIR" \
    --out "$SCRATCH/config.yaml" --plugins-dir "$APP/plugins" $FEED_IN_ARGS $IMPORT_ARGS \
    > "$SCRATCH/report.txt" 2>&1 || {
    cat "$SCRATCH/report.txt" >&2
    restart_old "the import failed (above)"
}
mkdir -p "$APP/state" || restart_old "cannot create $APP/state"
if [ -f "$APP/state/state.json" ]; then
    cp -p "$APP/state/state.json" "$MIGRATION/state.json" ||
        restart_old "cannot save $APP/state/state.json"
fi
WROTE_STATE=1
# put's die would end the script with the Python program stopped: in a subshell, its failure
# starts the program again.
(put "$SCRATCH/state/state.json" "$APP/state/state.json" 0644) ||
    restart_old "cannot write $APP/state/state.json"
if [ -f "$APP/config.yaml" ]; then
    CONFIG=$APP/config.imported.yaml
    CONFIG_SAID="kept $APP/config.yaml; this import is $CONFIG"
else
    CONFIG=$APP/config.yaml
    CONFIG_SAID="$CONFIG imported from $OLD_DEVICE_DIR/settings.py"
fi
# The import names the files it wrote (in the config's header, and in its report): the
# scratch files, which go away; the names they get instead.
sed "s|$SCRATCH/config.yaml|$CONFIG|g" "$SCRATCH/config.yaml" > "$SCRATCH/config.named" ||
    restart_old "cannot write $SCRATCH/config.named"
WROTE_CONFIG=$CONFIG
(put "$SCRATCH/config.named" "$CONFIG" 0644) || restart_old "cannot write $CONFIG"
# The imported config names its state folder relative to itself: it is $APP/state.
sed -e "s|$SCRATCH/config.yaml|$CONFIG|g" -e "s|$SCRATCH/state/|$APP/state/|g" \
    "$SCRATCH/report.txt"
rm -rf "$SCRATCH"

# Its boot line goes (the user's own lines stay), ours comes with enable.sh.
if old_boot_lines "$RC_LOCAL" > /dev/null; then
    grep -vF "$OLD_DEVICE_DIR/" "$RC_LOCAL" | put_text "$RC_LOCAL" ||
        restart_old "cannot write $RC_LOCAL"
fi
sync
sh "$HERE/enable.sh" --root "$ROOT" || restart_old "enable.sh failed (above)"
rm -f "$MIGRATION/state.json"
echo "$CONFIG_SAID"
echo "switched from the Python program; $OLD_DEVICE_DIR is untouched: $APP/rollback.sh goes back"
