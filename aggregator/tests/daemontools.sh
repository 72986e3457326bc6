#!/bin/sh
# daemontools.sh ROOT: runs the bundle in ROOT/tmp/bundle on a device made of ROOT, under real
# daemontools (svscan, supervise, svc, multilog), with the install scripts at their own root /.
# Run by tests/install.rs as root; it makes its own mount namespace, so nothing of the host's
# mounts changes. Prints what it checks and exits non-zero at the first thing that is wrong.
# When ROOT/tmp/scenario.sh exists, that runs in the device instead (migration.sh).
set -eu
R=$1
if [ "${2:-}" != inside ]; then
    exec unshare -m --propagation private sh "$0" "$R" inside
fi
for dir in usr etc; do
    mkdir -p "$R/$dir"
    mount --bind "/$dir" "$R/$dir"
    mount -o remount,bind,ro "$R/$dir"
done
for link in bin lib lib64 sbin; do
    if [ -L "/$link" ]; then ln -sfn "$(readlink "/$link")" "$R/$link"; fi
done
mkdir -p "$R/proc" "$R/dev" "$R/data" "$R/service" "$R/var/log" "$R/tmp"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"

if [ -f "$R/tmp/scenario.sh" ]; then
    exec chroot "$R" /bin/sh -eu /tmp/scenario.sh
fi
exec chroot "$R" /bin/sh -eu -c '
fail() { echo "FAILED: $*"; exit 1; }
S=/service/dbus-aggregate-batteries
APP=/data/apps/dbus-aggregate-batteries
# The pid of the running daemon, once supervise has started it (up to 15 s; svscan looks
# for new services every 5 s).
daemon_pid() {
    for _ in $(seq 1 60); do
        pid=$(svstat "$S" 2> /dev/null | sed -n "s/.*: up (pid \([0-9]*\)).*/\1/p")
        if [ -n "$pid" ] && [ "$pid" != "${1:-}" ]; then echo "$pid"; return 0; fi
        sleep 0.25
    done
    return 1
}

busybox sh /tmp/bundle/install.sh > /tmp/install.out 2>&1 || { cat /tmp/install.out; fail "install.sh"; }
svscan /service > /dev/null 2>&1 &
SVSCAN=$!
trap "svc -dx $S $S/log 2> /dev/null; kill $SVSCAN" EXIT

first=$(daemon_pid) || fail "the service did not start: $(svstat $S 2>&1)"
# exec in service/run: supervise signals the daemon itself, not a shell. svstat says "up" as
# soon as supervise has started service/run, which execs the daemon a moment later (longer
# on a busy machine): up to 5 s for the exec.
for _ in $(seq 1 20); do
    exe=$(readlink /proc/$first/exe || true)
    [ "$exe" = "$APP/dbus-aggregate-batteries" ] && break
    sleep 0.25
done
[ "$exe" = "$APP/dbus-aggregate-batteries" ] || fail "supervise runs $exe, not the daemon"
echo "started: pid $first is $exe"
for _ in $(seq 1 40); do
    grep -q "starting; config" /var/log/dbus-aggregate-batteries/current 2> /dev/null && break
    sleep 0.25
done
line=$(grep -m 1 "starting; config" /var/log/dbus-aggregate-batteries/current) ||
    fail "no start line in the log"
# multilog puts its TAI64N stamp before the line, which starts with the level.
case ${line#* } in
    " INFO dbus-aggregate-batteries "*) echo "logged: $line" ;;
    *) fail "the line is not stamped by multilog alone: $line" ;;
esac

busybox sh $APP/restart.sh
second=$(daemon_pid "$first") || fail "restart.sh did not restart the daemon"
echo "restarted: pid $first then $second"

busybox sh /tmp/bundle/install.sh > /dev/null 2>&1 || fail "the upgrade"
third=$(daemon_pid "$second") || fail "an upgrade did not restart the daemon"
echo "upgraded: pid $second then $third"

busybox sh $APP/disable.sh > /dev/null
[ ! -e "$S" ] || fail "$S is still there"
! kill -0 "$third" 2> /dev/null || fail "the daemon (pid $third) still runs after disable.sh"
echo "disabled: pid $third ended, $S removed"
'
