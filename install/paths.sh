# Sourced by the install scripts: where things live on a Venus OS device, below --root.
# POSIX sh (Venus OS has busybox). Before sourcing, a script sets USAGE and, if it takes
# --purge, TAKES_PURGE=1.

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
            [ -n "$TAKES_PURGE" ] || die "unknown option --purge; usage: $USAGE"
            PURGE=1
            shift
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
