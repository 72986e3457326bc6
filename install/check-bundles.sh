#!/bin/sh
# check-bundles.sh: builds both bundles (bundle.sh) and checks each as a device would see it:
# no program or plugin needs a glibc symbol newer than 2.31 (objdump -T), and under qemu-user
# the daemon and the importer print --version, the daemon loads every plugin of its own
# bundle (`plugins` refuses none), each program was linked with the functions that run first
# (a `.text.hot` section), and it runs the benchmark's simulated 2x16 bank on a
# private bus: found, published every tick, stopped cleanly on SIGTERM, nothing in its log
# beyond the setup's own warnings. Then the unit tests of the crates the bundle holds, built for
# armv7 and run under qemu-arm. Installs qemu-user, the targets' C libraries and an objdump
# when missing.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$REPO"
NAME=dbus-aggregate-batteries
GLIBC_FLOOR=2.31

fail() {
    echo "check-bundles.sh: $*" >&2
    exit 1
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=
for package in qemu-user libc6-armhf-cross libc6-arm64-cross; do
    dpkg -s "$package" > /dev/null 2>&1 || missing="$missing $package"
done
# The benchmark's private bus.
command -v dbus-daemon > /dev/null 2>&1 || missing="$missing dbus-daemon"
# llvm-objdump reads both ARM flavours; without it, the targets' binutils.
command -v llvm-objdump > /dev/null 2>&1 ||
    missing="$missing binutils-arm-linux-gnueabihf binutils-aarch64-linux-gnu"
if [ -n "$missing" ]; then
    as_root apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing > /dev/null
fi

sh install/bundle.sh
# The benchmark runs each bundle's daemon against this machine's dbus-daemon and simulator.
cargo bench -p aggregator --bench daemon --no-run

VERSION=$(cargo pkgid -p aggregator | sed 's/.*[#@]//')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for arch in armv7 aarch64; do
    case $arch in
        armv7) qemu=qemu-arm prefix=/usr/arm-linux-gnueabihf binutils=arm-linux-gnueabihf ;;
        aarch64) qemu=qemu-aarch64 prefix=/usr/aarch64-linux-gnu binutils=aarch64-linux-gnu ;;
    esac
    if command -v llvm-objdump > /dev/null 2>&1; then objdump=llvm-objdump; else objdump=$binutils-objdump; fi
    bundle=$NAME-$VERSION-$arch
    tar -xzf "dist/$bundle.tar.gz" -C "$WORK"
    dir=$WORK/$bundle
    echo "== $bundle.tar.gz"
    for elf in "$dir/$NAME" "$dir/$NAME-import" "$dir"/plugins/*.so; do
        newest=$("$objdump" -T "$elf" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
        [ -n "$newest" ] || fail "$elf: $objdump -T shows no GLIBC symbol version"
        echo "$objdump -T ${elf#"$dir"/}: newest GLIBC_$newest"
        [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_FLOOR" | sort -V | tail -n 1)" = "$GLIBC_FLOOR" ] ||
            fail "$elf needs GLIBC_$newest, newer than $GLIBC_FLOOR"
    done
    # The build scripts linked the functions that run first (CONTRIBUTING.md, "Code layout").
    for elf in "$dir/$NAME" "$dir"/plugins/*.so; do
        "$objdump" -h "$elf" | grep -q ' \.text\.hot ' ||
            fail "$elf has no .text.hot section: aggregator/hot-text/*.ld were not linked"
    done
    echo "$objdump -h: .text.hot in the daemon and every plugin"
    echo "\$ $qemu $NAME --version"
    QEMU_LD_PREFIX=$prefix "$qemu" "$dir/$NAME" --version || fail "$arch: --version failed"
    echo "\$ $qemu $NAME-import --version"
    QEMU_LD_PREFIX=$prefix "$qemu" "$dir/$NAME-import" --version ||
        fail "$arch: $NAME-import --version failed"
    echo "\$ $qemu $NAME plugins --plugins-dir plugins"
    listing=$(QEMU_LD_PREFIX=$prefix "$qemu" "$dir/$NAME" plugins --plugins-dir "$dir/plugins") ||
        fail "$arch: plugins failed: $listing"
    echo "$listing"
    shipped=$(ls "$dir"/plugins/*.so | wc -l)
    loaded=$(echo "$listing" | grep -c ' ABI ok ' || true)
    ! echo "$listing" | grep -q refused || fail "$arch: a plugin was refused"
    [ "$loaded" -eq "$shipped" ] || fail "$arch: $loaded of $shipped plugins loaded"

    # The benchmark takes the daemon given and the plugins beside it: a script that runs the
    # bundle's daemon under qemu, beside the bundle's plugins.
    run=$WORK/run-$arch
    mkdir -p "$run"
    cp "$dir"/plugins/*.so "$run/"
    printf '#!/bin/sh\nexec env QEMU_LD_PREFIX=%s %s "%s" "$@"\n' "$prefix" "$qemu" "$dir/$NAME" \
        > "$run/$NAME"
    chmod +x "$run/$NAME"
    echo "\$ BENCH_DAEMON=($qemu $NAME) cargo bench -p aggregator --bench daemon (2x16, 10 s)"
    bench=$(BENCH_DAEMON="$run/$NAME" BENCH_SIZES=2x16 BENCH_SIGNALS=properties \
        BENCH_SECONDS=10 cargo bench -q -p aggregator --bench daemon 2>&1) ||
        fail "$arch: the daemon did not run the simulated bank: $bench"
    ! echo "$bench" | grep -q "log has warnings or errors" ||
        fail "$arch: the daemon's log has warnings or errors: $bench"
    echo "$bench" | grep -E '^(bank|2x16 PC) +'
done

# The unit tests of the safety core, the D-Bus layer, the daemon's library, the plugin API and
# the plugins, built for armv7 (32 bits, as almost every GX is) and run under qemu-arm.
# `the_zone_is_the_one_tz_names` starts its own test program again as a child, which qemu-user
# cannot run without a binfmt handler: it is left out here (`.ci/run` runs it on the host).
echo "\$ cargo-zigbuild test --lib --target armv7 (under qemu-arm)"
tests=$(CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm -L /usr/arm-linux-gnueabihf" \
    cargo-zigbuild test -q --lib --target "armv7-unknown-linux-gnueabihf.$GLIBC_FLOOR" \
    -p aggregator-core -p venus-bus -p aggregator -p plugin-api -p plugin-lfp-balancing \
    -p plugin-lto-cv -p plugin-serialbattery -p plugin-bms -p plugin-victron -p plugin-smartshunt \
    -- --skip the_zone_is_the_one_tz_names 2>&1) || fail "armv7: unit tests failed: $tests"
echo "$tests" | grep '^test result'
echo "check-bundles.sh: both bundles ok"
