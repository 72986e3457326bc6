#!/bin/sh
# Puts the service into /service and adds one line to /data/rc.local that runs this script
# again at every boot (/service is a tmpfs; /data survives firmware updates). Safe to run
# again. Refuses a config.yaml that fails check-config.
USAGE="enable.sh [--root DIR]"
. "$(dirname "$0")/paths.sh"

[ -x "$APP/$NAME" ] || die "$APP/$NAME is missing: run install.sh from the bundle first"
# Never through the Python program's /service symlink into its folder, never beside its boot line.
! old_enabled || die "the Python dbus-aggregate-batteries is enabled ($(old_program)): \
$APP/migrate.sh switches from it; nothing was changed"
if ! "$APP/$NAME" check-config --config "$APP/config.yaml" --plugins-dir "$APP/plugins"; then
    # Enabled before (our boot line is there: this is a boot): a service that publishes
    # charge and discharge stopped is better for DVCC than none.
    grep -qxF "$BOOT_LINE" "$RC_LOCAL" 2> /dev/null ||
        die "$APP/config.yaml has errors (above): the service is not enabled"
    echo "$APP/config.yaml has errors (above): enabled all the same, the daemon publishes" \
        "charge and discharge stopped with the error as /Info/ChargeMode until it is fixed"
fi

# svscan ignores names that start with a dot: the service appears whole, in one rename.
if [ -d "$SERVICE" ]; then
    put "$APP/service/run" "$SERVICE/run" 0755
    put "$APP/service/log/run" "$SERVICE/log/run" 0755
    # Started again if someone stopped it with svc -d.
    if on_device; then svc -u "$SERVICE"; fi
else
    mkdir -p "${SERVICE%/*}" || die "cannot create ${SERVICE%/*}"
    rm -rf "${SERVICE%/*}/.$NAME"
    mkdir -p "${SERVICE%/*}/.$NAME/log" &&
        cp "$APP/service/run" "${SERVICE%/*}/.$NAME/run" &&
        cp "$APP/service/log/run" "${SERVICE%/*}/.$NAME/log/run" &&
        chmod 0755 "${SERVICE%/*}/.$NAME/run" "${SERVICE%/*}/.$NAME/log/run" &&
        mv "${SERVICE%/*}/.$NAME" "$SERVICE" || die "cannot create $SERVICE"
fi

mkdir -p "${RC_LOCAL%/*}" || die "cannot create ${RC_LOCAL%/*}"
if [ ! -f "$RC_LOCAL" ]; then
    # put_text's own exit ends only its side of the pipe.
    printf '#!/bin/sh\n%s\n' "$BOOT_LINE" | put_text "$RC_LOCAL" || exit 2
elif ! grep -qxF "$BOOT_LINE" "$RC_LOCAL"; then
    # Other versions of our line go; the user's own lines stay as they are.
    { grep -vF "$DEVICE_APP/enable.sh" "$RC_LOCAL"; echo "$BOOT_LINE"; } |
        put_text "$RC_LOCAL" || exit 2
elif [ ! -x "$RC_LOCAL" ]; then
    # The boot runs rc.local only when it is executable.
    chmod 0755 "$RC_LOCAL"
fi
gui_page_enable
echo "$NAME enabled; its log: tail -F /var/log/$NAME/current | tai64nlocal"
