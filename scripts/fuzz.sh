#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every decoder
# that takes untrusted bytes; the targets are in fuzz/fuzz_targets/.
# Ends with "N passed, N failed"; non-zero exit status on a crash.
# scripts/fuzz.sh [--time SECONDS] [--list] [TARGET...]
#   --time S   run each target S seconds (default 60)
#   --list     print the targets and exit
# Finds are kept in target/fuzz-corpus/TARGET (grows from fuzz/seeds/TARGET,
# which it never writes); a crashing input goes to target/fuzz-artifacts/.
# cargo-fuzz is installed on first use into $HV_TOOLS (default
# ~/.cache/hv-tools), shared by every clone on the machine. The machine has
# only a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# sanitizer and coverage flags to it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

CARGO_FUZZ_VERSION=0.13.2
TOOLS=${HV_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/hv-tools}
seconds=60 targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) seconds=${2:?--time needs seconds}; shift ;;
        --list) sed -n 's/^name = "\(.*\)"$/\1/p' "$ROOT/fuzz/Cargo.toml" | grep -vx hv-fuzz; exit 0 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) targets+=("$1") ;;
    esac
    shift
done
all=$("$0" --list)
[ ${#targets[@]} -gt 0 ] || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do grep -qx "$t" <<<"$all" || die "no fuzz target '$t' (scripts/fuzz.sh --list)"; done

export PATH=$TOOLS/bin:$PATH RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    note "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    cargo install --quiet --locked --root "$TOOLS" --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2 ||
        die "cannot install cargo-fuzz (it comes from the crates registry)"
fi

cd "$ROOT/fuzz"
# -O: optimised; -a: with debug assertions (overflow checks), so that an
# arithmetic overflow a guest can cause is found as a crash too.
FUZZ_FLAGS=(-O -a)
started=$(date +%s)
mkdir -p "$ROOT/target"
build_log=$ROOT/target/fuzz-build.log
# One build for every target (they share all their dependencies).
if ! cargo fuzz build "${FUZZ_FLAGS[@]}" >"$build_log" 2>&1; then
    cat "$build_log"; echo "FAIL  fuzz build"; echo "0 passed, 1 failed"; exit 1
fi
note "built in $(( $(date +%s) - started ))s"

passed=0 failed=0
for t in "${targets[@]}"; do
    corpus=$ROOT/target/fuzz-corpus/$t artifacts=$ROOT/target/fuzz-artifacts/$t/ log=$ROOT/target/fuzz-$t.log
    mkdir -p "$corpus" "$artifacts"
    # -timeout: an input that runs 10 s is a hang (no loop may be unbounded).
    cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$corpus" "$ROOT/fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n1)
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        printf 'PASS  fuzz %s (%ss, %s runs, %s exec/s, %s)\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "${cov:-?}"
    else
        failed=$((failed + 1))
        printf 'FAIL  fuzz %s (exit %s; log %s)\n' "$t" "$status" "$log"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "$log" | head -n 12 | sed 's/^/      /'
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
