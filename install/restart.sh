#!/bin/sh
# Restarts the daemon (after changing config.yaml or a plugin): daemontools sends it SIGTERM,
# it saves its state and supervise starts it again. Refuses a config.yaml that fails
# check-config: the running daemon goes on with the config it has.
USAGE="restart.sh [--root DIR]"
. "$(dirname "$0")/paths.sh"

service_is_ours || die "$SERVICE is not this program's service: $APP/enable.sh enables it"
if ! "$APP/$NAME" check-config --config "$APP/config.yaml" --plugins-dir "$APP/plugins"; then
    die "$APP/config.yaml has errors (above): not restarted, the daemon goes on with the config it started with"
fi
if on_device; then
    svok "$SERVICE" || die "$SERVICE is not supervised (svscan starts supervise within seconds; see svstat $SERVICE)"
    svc -t "$SERVICE" || die "svc -t $SERVICE failed"
    echo "$NAME restarted"
fi
