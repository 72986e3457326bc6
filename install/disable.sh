#!/bin/sh
# Stops the service, takes it out of /service and its line out of /data/rc.local. The app
# folder (program, config, state) stays: enable.sh brings the service back.
USAGE="disable.sh [--root DIR]"
. "$(dirname "$0")/paths.sh"

if [ -L "$SERVICE" ] || { [ -e "$SERVICE" ] && ! service_is_ours; }; then
    # Another program's service under our name: the Python dbus-aggregate-batteries. Stopping
    # or unlinking it would leave DVCC without a BMS.
    echo "$SERVICE is another program's service (the Python dbus-aggregate-batteries?):" \
        "left as it is"
elif [ -d "$SERVICE" ]; then
    # Out of svscan's sight first (it skips names that start with a dot): it starts a supervise
    # for every folder of /service that has none, and one started while the folder was being
    # removed wrote into it again ("Directory not empty").
    gone="$(dirname "$SERVICE")/.$(basename "$SERVICE").removed"
    rm -rf "$gone"
    mv "$SERVICE" "$gone" || die "cannot move $SERVICE aside"
    # The daemon saves its state on SIGTERM: its folder goes once both supervise processes
    # (the daemon's and its log's) have seen their service end.
    if on_device; then
        stop_supervised "$gone"
    fi
    rm -rf "$gone" || die "cannot remove $SERVICE (moved aside to $gone)"
fi
if [ -f "$RC_LOCAL" ] && grep -qF "$DEVICE_APP/enable.sh" "$RC_LOCAL"; then
    # put_text's own exit ends only its side of the pipe.
    grep -vF "$DEVICE_APP/enable.sh" "$RC_LOCAL" | put_text "$RC_LOCAL" || exit 2
fi
gui_page_remove
echo "$NAME disabled; $APP stays (enable.sh brings the service back)"
