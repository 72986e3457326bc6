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
    # -x: supervise exits once the service is down, so nothing is left watching a removed folder.
    if on_device; then
        svc -dx "$SERVICE" "$SERVICE/log"
        # The daemon saves its state on SIGTERM: its folder goes once supervise has seen it end.
        waited=0
        while svok "$SERVICE" 2> /dev/null && [ "$waited" -lt 10 ]; do
            sleep 1
            waited=$((waited + 1))
        done
    fi
    rm -rf "$SERVICE" || die "cannot remove $SERVICE"
fi
if [ -f "$RC_LOCAL" ] && grep -qF "$DEVICE_APP/enable.sh" "$RC_LOCAL"; then
    # put_text's own exit ends only its side of the pipe.
    grep -vF "$DEVICE_APP/enable.sh" "$RC_LOCAL" | put_text "$RC_LOCAL" || exit 2
fi
gui_page_remove
echo "$NAME disabled; $APP stays (enable.sh brings the service back)"
