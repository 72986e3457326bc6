#!/bin/sh
# Stops the service and removes it from the boot; the app folder (config, state) stays.
APP=/data/apps/dbus-aggregate-batteries
SERVICE=/service/dbus-aggregate-batteries
if [ -e "$SERVICE" ]; then
    svc -d "$SERVICE" 2>/dev/null
    rm -f "$SERVICE"
fi
RC=/data/rc.local
if [ -f "$RC" ]; then
    grep -vxF "$APP/enable.sh > /dev/null 2>&1 &" "$RC" > "$RC.tmp" && mv "$RC.tmp" "$RC"
    chmod 0755 "$RC"
fi
echo "dbus-aggregate-batteries disabled"
