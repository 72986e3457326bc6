#!/bin/sh
# generate.sh: writes daemon.ld and plugins.ld, the functions the benchmark's runs execute, in
# the order they have in the program. Builds the workspace without them and with symbols
# (in target/hot-text), runs the benchmark (2x16 and 16x32, both kinds of signals) with the
# daemon under valgrind's callgrind, and lists every function of the daemon and of the
# plugins it loaded that ran. Needs valgrind, nm, dbus-daemon. CONTRIBUTING.md, "Code layout".
set -eu
HERE=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
cd "$REPO"
for tool in valgrind nm dbus-daemon; do
    command -v "$tool" > /dev/null 2>&1 || { echo "generate.sh: needs $tool" >&2; exit 1; }
done
BUILT=${CARGO_TARGET_DIR:-$REPO/target}/hot-text
# Both in a target folder of their own, so that the usual build keeps its lists.
export AGGREGATOR_HOT_TEXT=0 CARGO_PROFILE_RELEASE_STRIP=none CARGO_TARGET_DIR="$BUILT"
cargo build --release --workspace
BENCH=$(cargo bench -p aggregator --bench daemon --no-run --message-format=json 2> /dev/null |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$BENCH" ] || { echo "generate.sh: the benchmark did not build" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ln -s "$BUILT"/release/*.so "$WORK"/
cat > "$WORK/dbus-aggregate-batteries" << WRAP
#!/bin/sh
exec valgrind -q --tool=callgrind --callgrind-out-file=$WORK/profile.%p --demangle=no \
    --compress-strings=no --compress-pos=no --dump-instr=no \
    $BUILT/release/dbus-aggregate-batteries "\$@"
WRAP
chmod +x "$WORK/dbus-aggregate-batteries"
(cd aggregator && BENCH_DAEMON="$WORK/dbus-aggregate-batteries" BENCH_SECONDS=30 \
    BENCH_SIZES=2x16,16x32 BENCH_SIGNALS=properties,items "$BENCH" > "$WORK/bench.log" 2>&1) ||
    { cat "$WORK/bench.log" >&2; exit 1; }

# ran FILE...: "object function" for every function callgrind saw run.
ran() {
    awk '/^ob=/ { ob = substr($0, 4); n = split(ob, part, "/"); ob = part[n] }
         /^fn=/ { print ob, substr($0, 4) }' "$@" | sort -u
}
ran "$WORK"/profile.* > "$WORK/ran"

# script OBJECT-PATTERN OUTPUT BINARY...: the functions of the binaries that ran, by address,
# each as a section pattern without the parts that differ between builds and targets (the
# hash of a legacy name, the crate ids and back references of a v0 name, LLVM's numbered
# copies), so that one list serves every target.
script() {
    pattern=$1 output=$2
    shift 2
    awk -v p="$pattern" '$1 ~ p { print $2 }' "$WORK/ran" | sort -u > "$WORK/names"
    for binary in "$@"; do
        nm -S --defined-only "$binary" | awk '$3 ~ /^[tTwW]$/ { print $1, $4 }'
    done | sort | awk 'NR == FNR { want[$1] = 1; next } ($2 in want) { print $2 }' \
        "$WORK/names" - |
        sed -E -e 's/17h[0-9a-f]{16}E/17h*E/' -e 's/Cs[0-9A-Za-z]+_/Cs*_/g' \
            -e '/^_R/s/B[0-9A-Za-z]*_/B*_/g' -e 's/\.[0-9]+$/*/' |
        awk '!seen[$0]++' > "$WORK/patterns"
    {
        echo "/* The functions that ran in the benchmark, in their order in the program: written"
        echo "   by generate.sh ($(wc -l < "$WORK/patterns") patterns). CONTRIBUTING.md, \"Code layout\". */"
        echo "SECTIONS"
        echo "{"
        echo "  .text.hot : {"
        sed 's/.*/    *(.text.& .text.unlikely.&)/' "$WORK/patterns"
        echo "  }"
        echo "}"
        echo "INSERT BEFORE .text;"
    } > "$HERE/$output"
    echo "$output: $(wc -l < "$WORK/patterns") functions"
}
script '^dbus-aggregate-batteries$' daemon.ld "$BUILT/release/dbus-aggregate-batteries"
script '^libplugin_' plugins.ld "$BUILT"/release/libplugin_*.so
