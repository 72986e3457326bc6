# Sourced by the install scripts: where things live on a Venus OS device, below --root.
# POSIX sh (Venus OS has busybox). Before sourcing, a script sets USAGE and, for the options
# it takes, TAKES_PURGE=1 (--purge), TAKES_MIGRATE=1 (--migrate), TAKES_FEED_IN=1
# (--user-feed-in 0|1).

NAME=dbus-aggregate-batteries
# The app folder as the device sees it: the boot line and service/run name this path even
# when the scripts write below another root.
DEVICE_APP=/data/apps/$NAME

die() {
    echo "$NAME: $*" >&2
    exit 2
}

ROOT=/
PURGE=
MIGRATE=
USER_FEED_IN=
while [ $# -gt 0 ]; do
    case $1 in
        --root)
            [ $# -ge 2 ] || die "--root needs a folder"
            ROOT=$2
            shift 2
            ;;
        --root=*)
            ROOT=${1#--root=}
            shift
            ;;
        --purge)
            [ -n "${TAKES_PURGE:-}" ] || die "unknown option --purge; usage: $USAGE"
            PURGE=1
            shift
            ;;
        --migrate)
            [ -n "${TAKES_MIGRATE:-}" ] || die "unknown option --migrate; usage: $USAGE"
            MIGRATE=1
            shift
            ;;
        --user-feed-in)
            [ -n "${TAKES_FEED_IN:-}" ] || die "unknown option --user-feed-in; usage: $USAGE"
            case ${2:-} in
                0 | 1) USER_FEED_IN=$2 ;;
                *) die "--user-feed-in takes 0 (feed-in was off) or 1 (it was on)" ;;
            esac
            shift 2
            ;;
        -h | --help)
            echo "usage: $USAGE"
            exit 0
            ;;
        *)
            die "unknown argument '$1'; usage: $USAGE"
            ;;
    esac
done
[ -d "$ROOT" ] || die "--root $ROOT: no such folder"
ROOT=$(cd "$ROOT" && pwd -P) || die "--root $ROOT: cannot enter it"
# With ROOT=/ every path below starts with a single slash.
BASE=${ROOT%/}

APP=$BASE$DEVICE_APP
SERVICE=$BASE/service/$NAME
RC_LOCAL=$BASE/data/rc.local
LOG_DIR=$BASE/var/log/$NAME
# Re-runs enable.sh at every boot: /service is a tmpfs rebuilt at boot, /data survives
# firmware updates.
BOOT_LINE="$DEVICE_APP/enable.sh > /dev/null 2>&1 &"

# The Python program this one replaces (3.x): its folder, whose files are never written, and
# the boot line its reinstall-local.sh puts into rc.local (older installs: an `ln -s` line).
OLD_DEVICE_DIR=/data/dbus-aggregate-batteries
OLD_DIR=$BASE$OLD_DEVICE_DIR
# What migrate.sh took away from the Python program, for rollback.sh.
MIGRATION=$APP/migration

# old_boot_lines FILE: the lines of FILE that start the Python program at boot.
old_boot_lines() {
    grep -F "$OLD_DEVICE_DIR/" "$1" 2> /dev/null
}

# What of the Python program is on this device, in words (nothing when it is not there).
old_program() {
    found=
    [ ! -d "$OLD_DIR" ] || found="its folder $OLD_DEVICE_DIR"
    if [ -L "$SERVICE" ] || { [ -d "$SERVICE" ] && ! service_is_ours; }; then
        found="${found:+$found, }its service /service/$NAME"
    fi
    if old_boot_lines "$RC_LOCAL" > /dev/null; then
        found="${found:+$found, }its boot line in /data/rc.local"
    fi
    echo "$found"
}

# Whether the Python program would run: its service in /service or its boot line.
old_enabled() {
    [ -L "$SERVICE" ] || { [ -e "$SERVICE" ] && ! service_is_ours; } ||
        old_boot_lines "$RC_LOCAL" > /dev/null
}

# Whether /service/NAME is our copy of service/ (a symlink never is: ours is a folder).
service_is_ours() {
    [ ! -L "$SERVICE" ] && [ -f "$SERVICE/run" ] &&
        grep -qF '"$APP/dbus-aggregate-batteries" --config' "$SERVICE/run"
}

# Whether the scripts act on the running system, where daemontools' svc controls the service.
on_device() {
    [ "$ROOT" = / ] && command -v svc > /dev/null 2>&1
}

# put SOURCE TARGET MODE: TARGET is never seen half-written (a copy beside it, then a rename);
# a running program keeps its old file.
put() {
    cp "$1" "$2.new" || die "cannot write $2.new"
    chmod "$3" "$2.new" || die "cannot set the mode of $2.new"
    mv -f "$2.new" "$2" || die "cannot replace $2"
}

# put_text TARGET: writes standard input to TARGET as put does, mode 0755 (rc.local).
put_text() {
    cat > "$1.new" || die "cannot write $1.new"
    chmod 0755 "$1.new" || die "cannot set the mode of $1.new"
    mv -f "$1.new" "$1" || die "cannot replace $1"
}
