#!/usr/bin/env bash
# Fuzzes corestream with cargo-fuzz (libFuzzer + AddressSanitizer): each target for SECONDS,
# one after the other, then minimises the committed corpus fuzz/corpus/<target>/ together
# with the new inputs (libFuzzer -set_cover_merge=1 on edge coverage: it stays small).
# fuzz/checks/tests/corpus.rs replays that corpus on stable in every `cargo test`.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s each, every target
#   bash scripts/fuzz.sh 0 [TARGET...]             # only minimise the committed corpora
#
# Targets: fuzz/fuzz_targets/*.rs (what each checks: fuzz/checks/): cpulist, topology, batch,
# model_tract, model_ort, service_body (the embedding service's request bodies, built with
# features tract, metrics and tracing). Needs cargo-fuzz
# (installed from crates.io when missing) and a C++ compiler for libFuzzer; the installed
# stable rustc is run with RUSTC_BOOTSTRAP=1 for the sanitizer flags (-Zsanitizer). model_ort
# needs ONNX Runtime (scripts/fetch-onnxruntime.sh, run here when missing).
# A crash stops that target: its input is saved under fuzz/artifacts/<target>/, the other
# targets still run, and the script exits 1 listing the crashes. One summary line per target
# (executions, seconds, corpus size, crashes) goes to stdout and fuzz/target/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-60}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
fi
for t in "${targets[@]}"; do
    if [ "$t" = model_ort ] && [ ! -f target/onnxruntime/libonnxruntime.so ]; then
        bash scripts/fetch-onnxruntime.sh
    fi
done

export RUSTC_BOOTSTRAP=1
# The topology target builds a sysfs tree per input: keep those in memory when possible.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
cd fuzz
# Only the backends the chosen targets load are built (tract and ONNX Runtime take most of
# the build time under the sanitizer): the core targets alone build into target/light, each
# backend into its own folder (service_body's feature `service` builds corestream-serve,
# which loads both backends).
features=()
for t in "${targets[@]}"; do
    case "$t" in
        model_tract) features+=(tract) ;;
        model_ort) features+=(ort) ;;
        service_body) features+=(service) ;;
    esac
done
feature_list=$(printf '%s\n' "${features[@]}" | sort -u | paste -sd, -)
case ",$feature_list," in
    *,service,* | *,ort,*tract,* | *,tract,*ort,*) target_dir=target ;;
    *,tract,*) target_dir=target/tract ;;
    *,ort,*) target_dir=target/ort ;;
    *) target_dir=target/light ;;
esac
# Release build with debug assertions (integer overflow checks on), as cargo fuzz run does.
cargo fuzz build -O --debug-assertions --no-default-features --features "$feature_list" \
    --target-dir "$target_dir"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"
mkdir -p target/work artifacts
summary=target/summary.txt
: > "$summary"
crashes=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    work="target/work/$t"
    rm -rf "$work" && mkdir -p "$work"
    cp "corpus/$t"/. "$work"/ -r
    before=$(find "corpus/$t" -type f | wc -l)
    case "$t" in
        model_*) max_len=65536 ;;
        *) max_len=4096 ;;
    esac
    # ONNX Runtime's process-wide environment lives until exit by design (not a leak of one
    # input); the other targets keep LeakSanitizer on.
    leaks=1
    [ "$t" = model_ort ] && leaks=0
    log="target/work/$t.log"
    echo "==> $t: ${secs}s from $before inputs"
    rc=0
    : >"$log"
    if [ "$secs" -gt 0 ]; then
        set +e
        "$bin_dir/$t" "$work" -max_total_time="$secs" -max_len="$max_len" -timeout=20 \
            -rss_limit_mb=4096 -detect_leaks="$leaks" -print_final_stats=1 \
            -artifact_prefix="artifacts/$t/" >"$log" 2>&1
        rc=$?
        set -e
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1 || true)
    # Minimise: the smallest set of inputs (old corpus + this run's) covering every edge they
    # cover (edges only, not hit counts or comparisons: a few hundred files, not thousands).
    # Hand-written seeds (seed_*) and crash regressions (crash-*) are kept whatever they add.
    merged="target/work/$t.merged"
    rm -rf "$merged" && mkdir -p "$merged"
    if "$bin_dir/$t" -set_cover_merge=1 -use_counters=0 -use_cmp=0 -use_value_profile=0 \
        -max_len="$max_len" -timeout=20 -rss_limit_mb=4096 -detect_leaks=0 \
        "$merged" "corpus/$t" "$work" >"target/work/$t.merge.log" 2>&1; then
        find "corpus/$t" -type f \( -name 'seed_*' -o -name 'crash-*' \) -exec cp {} "$merged"/ \;
        rm -rf "corpus/$t" && mv "$merged" "corpus/$t"
    else
        echo "$t: merge failed (fuzz/target/work/$t.merge.log); corpus unchanged" >&2
    fi
    after=$(find "corpus/$t" -type f | wc -l)
    crashed=0
    if [ "$rc" -ne 0 ]; then
        crashed=1
        crashes+=("$t: $(ls -t "artifacts/$t" | head -1) (log: fuzz/$log)")
        tail -40 "$log" >&2
    fi
    line="$t: ${execs:-?} executions in ${took:-$secs} s, corpus $before -> $after inputs, crashes $crashed"
    echo "$line" | tee -a "$summary"
done
cd "$root"
if [ ${#crashes[@]} -gt 0 ]; then
    printf 'crash: %s\n' "${crashes[@]}" >&2
    exit 1
fi
