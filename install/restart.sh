#!/bin/sh
# Restarts the daemon (after changing config.yaml or a plugin): daemontools sends it SIGTERM,
# it saves its state and supervise starts it again.
USAGE="restart.sh [--root DIR]"
. "$(dirname "$0")/paths.sh"

[ -d "$SERVICE" ] || exit 0
if on_device; then
    svc -t "$SERVICE" || die "svc -t $SERVICE failed"
    echo "$NAME restarted"
fi
