#!/usr/bin/env bash
# Runs corestream's concurrent paths under ThreadSanitizer (default) or AddressSanitizer, built
# with nightly's -Zsanitizer and -Zbuild-std (the standard library instrumented too): the ONNX
# Runtime backend's concurrent `Run` (tests/ort_concurrent.rs, tests/ort.rs, tests/backends.rs),
# the batcher (the library's unit tests, tests/batcher*.rs) and the streams, pools and tasks
# (tests/task.rs, tests/multi_stream.rs, tests/caller_runs.rs, tests/context.rs,
# tests/soak_regressions.rs). Passes when every test passes and the sanitizer reports nothing
# outside scripts/tsan.supp (third-party frames only, each named and justified there).
#
#   bash scripts/sanitize.sh [tsan|asan] [TEST...]     # default tsan, every test binary above
#
# TEST names test binaries (`lib` for the library's unit tests, else a tests/*.rs file without
# .rs). Builds into target/sanitize-<mode>/ (its own folder: the sanitizer rebuilds everything,
# std included; about 7 GB each), logs in target/sanitize-<mode>/logs/, one line per binary:
# tests, sanitizer reports, seconds. On the 2-vCPU development VM, tsan: about 7.5 min to build
# from clean and 3 min to run. Needs the nightly toolchain with rust-src (added when missing;
# RUSTUP_TOOLCHAIN picks another nightly) and ONNX Runtime (ORT_DYLIB_PATH, else
# scripts/fetch-onnxruntime.sh is run); the ONNX Runtime tests must run, not skip
# (CORESTREAM_REQUIRE_ORT=1). MiniLM and ResNet-18 tests run when scripts/fetch-models.sh has
# fetched them. libonnxruntime.so is not instrumented: ThreadSanitizer sees its locks, threads,
# malloc and free (intercepted calls) but not its loads and stores, so a race inside it goes
# unseen, and the reports it cannot order are suppressed (scripts/tsan.supp says which and why).
# asan checks no leaks (ONNX Runtime's process-wide environment lives until exit by design;
# scripts/memcheck.sh checks the core's leaks).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-tsan}
shift || true

case "$mode" in
    tsan) sanitizer=thread ;;
    asan) sanitizer=address ;;
    *)
        echo "usage: bash scripts/sanitize.sh [tsan|asan] [TEST...]" >&2
        exit 2
        ;;
esac
if [ $# -gt 0 ]; then
    wanted=("$@")
else
    wanted=(lib batcher batcher_tokens batcher_metrics batcher_tower batcher_tracing batcher_health
        batcher_dead_loop
        ort_concurrent ort backends task multi_stream caller_runs context soak_regressions)
fi

toolchain=${RUSTUP_TOOLCHAIN:-nightly}
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$toolchain" --profile minimal
fi
installed=$(rustup component list --toolchain "$toolchain" --installed)
if ! grep -q '^rust-src' <<<"$installed"; then
    rustup component add rust-src --toolchain "$toolchain"
fi
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ ! -f target/onnxruntime/libonnxruntime.so ]; then
    bash scripts/fetch-onnxruntime.sh
fi
export CORESTREAM_REQUIRE_ORT=1

# Tests left out, by name: ResNet-18 through tract (models/resnet18.onnx, when fetched) is
# minutes of unoptimised, instrumented convolution in tract, which is not the path under test;
# the ONNX Runtime side of ResNet-18 runs in tests/ort.rs.
SKIP=(
    resnet18_same_on_both_backends
)

out=target/sanitize-$mode
logs=$out/logs
rm -rf "$logs" && mkdir -p "$logs"
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
export RUSTFLAGS="-Zsanitizer=$sanitizer"
# The sanitizer's runtime needs a std built with it (-Zbuild-std), which needs --target;
# proc macros and build scripts are then built for the host without it.
target=x86_64-unknown-linux-gnu
test_args=()
for t in "${wanted[@]}"; do
    if [ "$t" = lib ]; then test_args+=(--lib); else test_args+=(--test "$t"); fi
done
start=$(date +%s)
cargo "+$toolchain" test -Zbuild-std --target "$target" --target-dir "$out" -p corestream \
    --features ort,tract,metrics,tracing,tower "${test_args[@]}" --no-run --message-format=json \
    2>"$logs/build.log" >"$logs/build.json" || { tail -30 "$logs/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start ))s"
mapfile -t bins < <(python3 - "$logs/build.json" <<'PY'
import json, os, sys
root = os.path.abspath("Cargo.toml")  # the corestream crate's manifest
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable") \
            or not msg.get("profile", {}).get("test") or msg.get("manifest_path") != root:
        continue
    target = msg["target"]
    name = "lib" if "lib" in target["kind"] else target["name"]
    print(name + " " + msg["executable"])
PY
)

case "$mode" in
    tsan)
        # halt_on_error=0: every report of a binary, not only its first; exitcode 66 if any.
        export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp halt_on_error=0 exitcode=66 second_deadlock_stack=1 history_size=4 ${TSAN_OPTIONS:-}"
        ;;
    asan)
        # ONNX Runtime's process-wide environment lives until exit by design (see
        # scripts/fuzz.sh): leaks are not checked here.
        export ASAN_OPTIONS="detect_leaks=0 halt_on_error=0 exitcode=66 ${ASAN_OPTIONS:-}"
        ;;
esac
# No Rust backtraces: symbolising one in an instrumented binary takes about 9 s on the
# development VM (the sanitizers' reports carry their own stacks). Tests that panic on purpose
# wait on the panic hook, and batcher_dead_loop timed out behind it in a CI rehearsal run with
# RUST_BACKTRACE=1.
export RUST_BACKTRACE=0

skip_args=()
for s in "${SKIP[@]}"; do skip_args+=(--skip "$s"); done

failed=()
total=0
for entry in "${bins[@]}"; do
    name=${entry%% *}
    bin=${entry#* }
    log="$logs/$name.log"
    began=$(date +%s)
    set +e
    "$bin" --test-threads=2 "${skip_args[@]}" >"$log" 2>&1
    rc=$?
    set -e
    reports=$(grep -c -E '^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: AddressSanitizer)' "$log" || true)
    if [ "$rc" -ge 128 ] && [ "$reports" -eq 0 ] && grep -q '^Fatal glibc error' "$log"; then
        # The process died in glibc with no sanitizer report (seen once in a CI rehearsal:
        # "malloc assertion failure in __malloc_arena_thread_freeres" as a thread of the
        # backends test exited under TSan's runtime). Said here with the log's tail, and run
        # once more: a second crash, or any report, still fails.
        echo "$name: died by signal $(( rc - 128 )) in glibc, no sanitizer report; running it once more:"
        tail -3 "$log" | sed 's/^/    /'
        cp "$log" "$log.first"
        set +e
        "$bin" --test-threads=2 "${skip_args[@]}" >"$log" 2>&1
        rc=$?
        set -e
        reports=$(grep -c -E '^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: AddressSanitizer)' "$log" || true)
    fi
    took=$(( $(date +%s) - began ))
    # (|| true: a binary that died prints no result line, and pipefail must not end the script
    # before it says so.)
    result=$( (grep -o 'test result: .*' "$log" || true) | tail -1 | sed 's/; finished in.*//')
    passed=$(grep -o '[0-9]* passed' <<<"$result" | grep -o '[0-9]*' || echo 0)
    total=$(( total + passed ))
    echo "$name: rc $rc, $reports sanitizer reports, ${took}s; ${result:-no test result}"
    if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
        failed+=("$name (rc $rc, $reports reports: $log)")
    fi
done
echo "total: ${#bins[@]} test binaries, $total tests passed, $(( $(date +%s) - start ))s"
if [ ${#failed[@]} -gt 0 ]; then
    printf '%s failed: %s\n' "$mode" "${failed[@]}" >&2
    exit 1
fi
echo "$mode: no report in ${#bins[@]} test binaries"
