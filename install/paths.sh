# Sourced by the install scripts: where things live on a Venus OS device, below --root.
# POSIX sh (Venus OS has busybox). Before sourcing, a script sets USAGE and, for the options
# it takes, TAKES_PURGE=1 (--purge), TAKES_MIGRATE=1 (--migrate), TAKES_FEED_IN=1
# (--user-feed-in 0|1, and the import's --cell-voltages MIN:MAX and --max-currents
# CHARGE:DISCHARGE, which go to import-config as they are).

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
CELL_VOLTAGES=
MAX_CURRENTS=
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
        --cell-voltages | --max-currents)
            [ -n "${TAKES_FEED_IN:-}" ] || die "unknown option $1; usage: $USAGE"
            # Two numbers as A:B; import-config says what is wrong with them.
            case ${2:-} in
                *:*) ;;
                *) die "$1 takes two numbers as A:B (--cell-voltages 2.9:3.65, --max-currents 200:300)" ;;
            esac
            if [ "$1" = --cell-voltages ]; then CELL_VOLTAGES=$2; else MAX_CURRENTS=$2; fi
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

# stop_supervised DIR: stops the service DIR and its log (-x: each supervise exits once its
# service is down, so nothing is left watching the folder) and waits, 10 s at most, for both
# supervise processes to end.
stop_supervised() {
    svc -dx "$1" "$1/log" 2> /dev/null
    waited=0
    while { svok "$1" || svok "$1/log"; } 2> /dev/null && [ "$waited" -lt 10 ]; do
        sleep 1
        waited=$((waited + 1))
    done
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

# The gui-v2 page (a plugin file gui-v2 reads from /data/apps/enabled/<app>/gui-v2/); the app
# folder keeps a copy so that enable.sh can put it back.
GUI_PAGE=$NAME.json
GUI_ENABLED=$BASE/data/apps/enabled/$NAME
VENUS_VERSION=$BASE/opt/victronenergy/version

# Whether this firmware's gui-v2 loads app pages: Venus OS v3.80~21 and later. The version
# file's first line reads v3.70, v3.80~21, v3.80~21-large-7 or v3.80-large-7 (a release is
# newer than its betas).
gui_page_supported() {
    version=$(head -n 1 "$VENUS_VERSION" 2> /dev/null) || return 1
    version=${version#v}
    version=${version%%-*}
    beta=999999
    case $version in *~*)
        beta=${version#*~}
        version=${version%%~*}
        ;;
    esac
    major=${version%%.*}
    minor=${version#*.}
    case "$major.$minor.$beta" in *[!0-9.]* | .* | *..* | *.) return 1 ;; esac
    # Without leading zeros: v3.08 is not octal.
    minor=$(echo "$minor" | sed 's/^0*//')
    [ $((major * 100000000 + ${minor:-0} * 1000000 + beta)) -ge 380000021 ]
}

# Puts the page where gui-v2 looks, only when it changed (gui-v2 reloads on every change).
gui_page_enable() {
    [ -f "$APP/gui-v2/$GUI_PAGE" ] || return 0
    if ! gui_page_supported; then
        echo "Venus OS $(head -n 1 "$VENUS_VERSION" 2> /dev/null || echo '(version unknown)')" \
            "shows the stock battery page only: the bank page needs v3.80~21 or newer"
        return 0
    fi
    cmp -s "$APP/gui-v2/$GUI_PAGE" "$GUI_ENABLED/gui-v2/$GUI_PAGE" && return 0
    mkdir -p "$GUI_ENABLED/gui-v2" || die "cannot create $GUI_ENABLED/gui-v2"
    put "$APP/gui-v2/$GUI_PAGE" "$GUI_ENABLED/gui-v2/$GUI_PAGE" 0644
    echo "the bank page: Settings > Device list > the aggregate battery > Bank and packs"
}

# Takes the page out of gui-v2; the folders go when nothing else is in them.
gui_page_remove() {
    rm -f "$GUI_ENABLED/gui-v2/$GUI_PAGE" || die "cannot remove $GUI_ENABLED/gui-v2/$GUI_PAGE"
    rmdir "$GUI_ENABLED/gui-v2" "$GUI_ENABLED" 2> /dev/null || true
}

# The machine a program is built for, as uname -m names it (its ELF header's e_machine).
elf_machine() {
    case $(od -An -tu1 -j18 -N2 "$1" 2> /dev/null | tr -s ' ') in
        " 40 0") echo armv7 ;;
        " 183 0") echo aarch64 ;;
        " 62 0") echo x86_64 ;;
        *) echo unknown ;;
    esac
}

# Refuses a bundle built for another machine than this one, before anything is changed.
check_bundle_fits() {
    built=$(elf_machine "$1")
    # Cannot tell (no od): the program's own start will fail instead.
    [ "$built" != unknown ] || return 0
    device=$(uname -m)
    case $device in armv7* | armv8l) device=armv7 ;; esac
    [ "$built" = "$device" ] && return 0
    # A 64-bit kernel can run a 32-bit userland: then the shell's own machine decides.
    if [ "$device" = aarch64 ] && [ "$built" = armv7 ] && [ "$(elf_machine /bin/sh)" = armv7 ]; then
        return 0
    fi
    die "this bundle is built for $built and does not fit this device (uname -m: $(uname -m));" \
        "take the bundle ending in -$device.tar.gz"
}
