#!/bin/sh
# Installs and starts the service; safe to run again (it is re-run at every boot from
# /data/rc.local, because /service is a tmpfs and firmware updates replace the root filesystem).
set -e
APP=/data/apps/dbus-aggregate-batteries
SERVICE=/service/dbus-aggregate-batteries

chmod 0755 "$APP" "$APP/dbus-aggregate-batteries" "$APP/service/run" "$APP/service/log/run"
chmod 0755 "$APP/plugins"
chmod 0644 "$APP"/plugins/*.so
if [ ! -f "$APP/config.yaml" ]; then
    cp "$APP/config.default.yaml" "$APP/config.yaml"
    chmod 0644 "$APP/config.yaml"
    echo "created $APP/config.yaml: edit it, then run: $APP/dbus-aggregate-batteries check-config --config $APP/config.yaml"
fi
mkdir -p "$APP/state"
chmod 0755 "$APP/state"

if ! "$APP/dbus-aggregate-batteries" check-config --config "$APP/config.yaml" >/dev/null; then
    "$APP/dbus-aggregate-batteries" check-config --config "$APP/config.yaml" || true
    echo "the configuration has errors: the service is not started"
    exit 2
fi

if [ ! -e "$SERVICE" ]; then
    ln -s "$APP/service" "$SERVICE"
fi

RC=/data/rc.local
LINE="$APP/enable.sh > /dev/null 2>&1 &"
if [ ! -f "$RC" ]; then
    printf '#!/bin/sh\n' > "$RC"
    chmod 0755 "$RC"
fi
grep -qxF "$LINE" "$RC" || echo "$LINE" >> "$RC"
echo "dbus-aggregate-batteries enabled; log: tail -F /var/log/dbus-aggregate-batteries/current | tai64nlocal"
