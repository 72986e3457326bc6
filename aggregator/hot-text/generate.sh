#!/bin/sh
# generate.sh: writes daemon.ld and plugins.ld, the functions the benchmark's runs execute:
# first those of the steady state (the ticks and the signals between them), then the others
# (start-up, discovery, exit), each part in the order it has in the program. Builds the
# workspace without them and with symbols (in target/hot-text), runs the benchmark (2x16 and
# 16x32, both kinds of signals) with the daemon under valgrind's callgrind, and lists every
# function of the daemon and of the plugins it loaded that ran. Needs valgrind (with
# callgrind_control), nm, python3, dbus-daemon. CONTRIBUTING.md, "Code layout".
#
#   generate.sh           build, run, and write the lists
#   generate.sh --again   write the lists again from the last run (after a change to the
#                         pattern rules in patterns.py), without building or running
set -eu
HERE=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
cd "$REPO"
for tool in valgrind callgrind_control nm python3 dbus-daemon; do
    command -v "$tool" > /dev/null 2>&1 || { echo "generate.sh: needs $tool" >&2; exit 1; }
done
BUILT=${CARGO_TARGET_DIR:-$REPO/target}/hot-text
PROFILES=$BUILT/profiles
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "${1-}" != --again ]; then
    # Both in a target folder of their own, so that the usual build keeps its lists.
    export AGGREGATOR_HOT_TEXT=0 CARGO_PROFILE_RELEASE_STRIP=none CARGO_TARGET_DIR="$BUILT"
    cargo build --release --workspace
    BENCH=$(cargo bench -p aggregator --bench daemon --no-run --message-format=json 2> /dev/null |
        grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [ -x "$BENCH" ] || { echo "generate.sh: the benchmark did not build" >&2; exit 1; }
    rm -rf "$PROFILES"
    mkdir -p "$PROFILES"
    ln -s "$BUILT"/release/*.so "$WORK"/
    # Each run in three parts: start-up (its first 12 s), the steady state (the next 16 s,
    # profile.<pid>.2) and the rest. A run of the daemon under callgrind starts within a few
    # seconds and lasts the benchmark's 30 s after its first publish.
    cat > "$WORK/dbus-aggregate-batteries" << WRAP
#!/bin/sh
(sleep 12; callgrind_control -d \$\$; sleep 16; callgrind_control -d \$\$) > /dev/null 2>&1 &
exec valgrind -q --tool=callgrind --callgrind-out-file=$PROFILES/profile.%p --demangle=no \
    --compress-strings=no --compress-pos=no --dump-instr=no \
    $BUILT/release/dbus-aggregate-batteries "\$@"
WRAP
    chmod +x "$WORK/dbus-aggregate-batteries"
    (cd aggregator && BENCH_DAEMON="$WORK/dbus-aggregate-batteries" BENCH_SECONDS=30 \
        BENCH_SIZES=2x16,16x32 BENCH_SIGNALS=properties,items "$BENCH" > "$WORK/bench.log" 2>&1) ||
        { cat "$WORK/bench.log" >&2; exit 1; }
fi
ls "$PROFILES"/profile.* > /dev/null 2>&1 ||
    { echo "generate.sh: no profiles in $PROFILES: run it without --again" >&2; exit 1; }

# ran FILE...: "object function" for every function callgrind saw run.
ran() {
    awk '/^ob=/ { ob = substr($0, 4); n = split(ob, part, "/"); ob = part[n] }
         /^fn=/ { print ob, substr($0, 4) }' "$@" | sort -u
}
ran "$PROFILES"/profile.* > "$WORK/ran"
ls "$PROFILES"/profile.*.2 > /dev/null 2>&1 ||
    { echo "generate.sh: no run reached its steady state: run it without --again" >&2; exit 1; }
ran "$PROFILES"/profile.*.2 > "$WORK/steady"

# code_of RAN: every name of the code of each function in RAN (lines of `ran`) whose object
# matches the pattern of `script` (below), by address in the binaries' symbols.
code_of() {
    awk -v p="$pattern" '$1 ~ p { print $2 }' "$1" | sort -u > "$WORK/names"
    awk 'NR == FNR { want[$1] = 1; next } ($2 in want) { print $1 }' \
        "$WORK/names" "$WORK/symbols" | sort -u > "$WORK/addresses"
    awk 'NR == FNR { at[$1] = 1; next } ($1 in at) { print $2 }' \
        "$WORK/addresses" "$WORK/symbols"
}

# script OBJECT-PATTERN OUTPUT PATTERNS-OPTION BINARY...: the functions of the binaries that
# ran, by address, each as a section pattern without the parts that differ between builds and
# targets (patterns.py), so that one list serves every target. With each, every other name of
# its code (LLVM merges functions whose code is the same, and which name the one left keeps
# differs between builds), and its instances made by other crates (of identical copies, which
# one link-time optimisation keeps differs too).
script() {
    pattern=$1 output=$2 option=$3
    shift 3
    n=0
    for binary in "$@"; do
        n=$((n + 1))
        nm --defined-only "$binary" | awk -v n="$n" '$2 ~ /^[tTwW]$/ { print n ":" $1, $3 }'
    done | sort -s -k1,1 > "$WORK/symbols"
    awk '{ print $2 }' "$WORK/symbols" > "$WORK/every"
    # The steady state's functions first: a tick then runs through a few dense pages of code,
    # its small functions sharing cache lines, instead of pages it shares with start-up code.
    # Then every function that ran; patterns.py writes each pattern once, where it first comes.
    { code_of "$WORK/steady"; code_of "$WORK/ran"; } |
        # shellcheck disable=SC2086 # no option: no word
        python3 "$HERE/patterns.py" $option --all "$WORK/every" > "$WORK/patterns"
    # The block goes after the rest of the code, next to what the linker puts at the end (the
    # PLT, which every call into the C library passes on ARM): a run of it would otherwise map
    # the last 64 KiB of the rest with it. The start-up and exit code (.init, .fini) and the
    # code of C objects (.text, with _start) run too.
    {
        echo "/* The functions that ran in the benchmark, those of its steady state first, each part"
        echo "   in its order in the program: written by generate.sh ($(wc -l < "$WORK/patterns") patterns)."
        echo "   CONTRIBUTING.md, \"Code layout\". */"
        echo "SECTIONS"
        echo "{"
        echo "  .text.hot : {"
        echo "    KEEP(*(SORT_NONE(.init)))"
        echo "    KEEP(*(SORT_NONE(.fini)))"
        echo "    *(.text)"
        sed 's/.*/    *(.text.& .text.unlikely.&)/' "$WORK/patterns"
        echo "  }"
        echo "}"
        echo "INSERT AFTER .text;"
        echo "/* The exception tables, read only when a panic unwinds, after the constants, which"
        echo "   are read: between them and the relocations, which the loader reads, the pages"
        echo "   mapped with their neighbours were half of them. */"
        echo "SECTIONS"
        echo "{"
        echo "  .gcc_except_table : { *(.gcc_except_table .gcc_except_table.*) }"
        echo "}"
        echo "INSERT AFTER .rodata;"
    } > "$HERE/$output"
    echo "$output: $(wc -l < "$WORK/patterns") functions"
}
# The daemon's instances by any crate (patterns.py says what it costs the link).
script '^dbus-aggregate-batteries$' daemon.ld --any-crate "$BUILT/release/dbus-aggregate-batteries"
script '^libplugin_' plugins.ld "" "$BUILT"/release/libplugin_*.so
