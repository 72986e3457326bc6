#!/bin/sh
# Run by daemontools.sh inside a device at its own root /, under real daemontools, with the
# Python program 3.4 installed as its install leaves it (/data/dbus-aggregate-batteries, the
# /service symlink, the boot line) and the bundle in /tmp/bundle: the switch, the way back and
# the switch again. Its folder is compared byte for byte at each step (but for the supervise/
# folders, which daemontools writes into every service folder).
fail() { echo "FAILED: $*"; exit 1; }
S=/service/dbus-aggregate-batteries
APP=/data/apps/dbus-aggregate-batteries
OLD=/data/dbus-aggregate-batteries
PYTHON="python3 $OLD/aggregatebatteries.py"

# Within 15 s (svscan looks for new services every 5 s).
eventually() {
    for _ in $(seq 1 60); do
        if eval "$1"; then return 0; fi
        sleep 0.25
    done
    return 1
}
old_runs() { pgrep -f "$PYTHON" > /dev/null; }
# Our daemon's pid is kept in OURS: /proc is the host's, where other tests may run a daemon
# of the same path.
ours_runs() {
    OURS=$(svstat "$S" 2> /dev/null | sed -n "s/.*: up (pid \([0-9]*\)).*/\1/p")
    [ -n "$OURS" ] && [ "$(readlink /proc/"$OURS"/exe)" = "$APP/dbus-aggregate-batteries" ]
}
fingerprint() {
    find "$OLD" -name supervise -prune -o -print | sort | while read -r path; do
        if [ -f "$path" ]; then
            echo "$path $(stat -c %a "$path") $(md5sum < "$path")"
        else
            echo "$path $(stat -c %a "$path")"
        fi
    done | md5sum
}

svscan /service > /dev/null 2>&1 &
SVSCAN=$!
trap 'svc -dx $S $S/log $OLD/service $OLD/service/log 2> /dev/null; pkill -f "$PYTHON" || true; kill $SVSCAN' EXIT
eventually old_runs || fail "the Python program did not start: $(svstat $S 2>&1)"
ORIGINAL=$(fingerprint)
RC_LOCAL=$(cat /data/rc.local)
echo "python: $(pgrep -f "$PYTHON") runs $PYTHON"

if busybox sh /tmp/bundle/install.sh > /tmp/refused.out 2>&1; then fail "install.sh did not refuse"; fi
grep -q "install.sh --migrate" /tmp/refused.out || fail "the refusal names no command: $(cat /tmp/refused.out)"
old_runs || fail "the refused install stopped the Python program"
echo "refused: $(tail -n 1 /tmp/refused.out)"

busybox sh /tmp/bundle/install.sh --migrate > /tmp/migrate.out 2>&1 || { cat /tmp/migrate.out; fail "install.sh --migrate"; }
eventually ours_runs || fail "our daemon did not start: $(svstat $S 2>&1)"
eventually '! old_runs' || fail "the Python program still runs after the switch"
[ "$(fingerprint)" = "$ORIGINAL" ] || fail "the switch changed $OLD"
echo "migrated: $(svstat $S)"

ours_runs || fail "our daemon stopped before rollback.sh"
busybox sh $APP/rollback.sh > /tmp/rollback.out 2>&1 || { cat /tmp/rollback.out; fail "rollback.sh"; }
eventually old_runs || fail "the Python program did not come back: $(svstat $S 2>&1)"
! kill -0 "$OURS" 2> /dev/null || fail "our daemon (pid $OURS) still runs after rollback.sh"
[ "$(cat /data/rc.local)" = "$RC_LOCAL" ] || fail "rc.local is not as it was: $(cat /data/rc.local)"
[ "$(readlink $S)" = "$OLD/service" ] || fail "$S is not its symlink again"
[ "$(fingerprint)" = "$ORIGINAL" ] || fail "the rollback changed $OLD"
echo "rolled back: $(pgrep -f "$PYTHON") runs $PYTHON again"

busybox sh $APP/migrate.sh > /tmp/again.out 2>&1 || { cat /tmp/again.out; fail "migrate.sh again"; }
eventually ours_runs || fail "our daemon did not start again: $(svstat $S 2>&1)"
eventually '! old_runs' || fail "the Python program still runs after the second switch"
[ "$(fingerprint)" = "$ORIGINAL" ] || fail "the second switch changed $OLD"
echo "migrated again: $(svstat $S)"
