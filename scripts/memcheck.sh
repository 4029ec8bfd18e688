#!/usr/bin/env bash
# Runs corestream's test binaries under valgrind memcheck: the core (library unit tests,
# tests/task.rs, tests/multi_stream.rs, tests/batch.rs), the tract backend (tests/tract.rs)
# and the OpenMP tests (tests/omp.rs, re-executed children traced too). Passes when valgrind
# reports no invalid access and no definite leak outside scripts/valgrind.supp (third-party
# suppressions, each named and justified there) and every test passes.
#
#   bash scripts/memcheck.sh [quick|full]     # default quick (see SKIP below); logs in target/memcheck/
#
# valgrind runs code 20-50x slower and on one thread at a time, so the default skips the
# tests listed in SKIP, by name, and runs 32 proptest cases per property; `full` runs every
# test. Re-executed test binaries (tests/omp.rs runs tests in child processes) are traced too;
# the C compiler those tests run is not. The libiomp5 test runs when CORESTREAM_TEST_IOMP points at libiomp5.so (as in
# .ci/run) or target/ci-cache/intel-openmp/libiomp5.so exists; else it prints a note and passes.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}

if ! command -v valgrind >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
if [ -z "${CORESTREAM_TEST_IOMP:-}" ] && [ -f target/ci-cache/intel-openmp/libiomp5.so ]; then
    export CORESTREAM_TEST_IOMP="$PWD/target/ci-cache/intel-openmp/libiomp5.so"
fi

# Tests left out in quick mode: a test that asserts wall-clock concurrency (valgrind runs one
# thread at a time), and tract's plan-compiling tests (each compiles ExampleNet plans, minutes
# under valgrind; the multi-stream, bad-model, bad-input and tensor tract tests stay in).
SKIP=(
    tasks_on_two_pools_run_concurrently_and_join
    specialised_plans_match_the_symbolic_plan_and_are_cached
    concurrent_first_calls_of_a_batch_size_all_get_correct_results
    runs_in_chunks_equal_whole_batch_runs_and_use_chunk_sized_plans
    models_with_a_second_symbolic_axis_specialise_and_chunk_along_the_batch
    intra_op_stream_with_all_cpus_gives_the_same_result
    examplenet2_structured_outputs_multi_stream_equal_single_stream
)
# Fewer proptest cases (tests/batch.rs): the same properties, 32 cases each instead of 256.
export PROPTEST_CASES=${PROPTEST_CASES:-32}

out=target/memcheck
rm -rf "$out" && mkdir -p "$out"
# The README's test command, so the build is shared with it (a no-op after it); the core
# crate's library tests and the test files below are run.
cargo test --workspace --all-features --no-run --message-format=json \
    2>"$out/build.log" >"$out/build.json" || { tail -30 "$out/build.log"; exit 1; }
mapfile -t bins < <(python3 - "$out/build.json" <<'PY'
import json, os, sys
root = os.path.abspath("Cargo.toml")  # the corestream crate's manifest
wanted = {"lib": {"corestream"}, "test": {"task", "multi_stream", "batch", "tract", "omp"}}
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable") \
            or not msg.get("profile", {}).get("test") or msg.get("manifest_path") != root:
        continue
    target = msg["target"]
    if any(target["name"] in wanted.get(kind, ()) for kind in target["kind"]):
        print(target["name"] + " " + msg["executable"])
PY
)

skip_args=()
if [ "$mode" != full ]; then
    for s in "${SKIP[@]}"; do skip_args+=(--skip "$s"); done
fi

failed=()
for entry in "${bins[@]}"; do
    name=${entry%% *}
    bin=${entry#* }
    echo "==> $name"
    start=$(date +%s)
    set +e
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --error-exitcode=99 --keep-debuginfo=yes --num-callers=30 \
        --suppressions=scripts/valgrind.supp --gen-suppressions=all \
        --trace-children=yes --child-silent-after-fork=yes \
        --trace-children-skip='*/cc,*/cc1,*/gcc,*/gcc-*,*/collect2,*/as,*/ld,*/ld.*,*/x86_64-linux-gnu-*' \
        --log-file="$out/$name.%p.log" \
        "$bin" --test-threads=2 "${skip_args[@]}" >"$out/$name.out" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    # The parent's and every traced child's summary.
    errors=$(grep -h 'ERROR SUMMARY' "$out/$name".*.log | grep -o '[0-9]* errors' | grep -o '[0-9]*' \
        | awk '{s+=$1} END {print s+0}')
    definite=$(grep -h 'definitely lost:' "$out/$name".*.log | grep -o 'lost: [0-9,]* bytes' \
        | tr -d ',' | grep -o '[0-9]*' | awk '{s+=$1} END {print s+0}')
    tests=$(grep -o 'test result: .*' "$out/$name.out" | tail -1)
    echo "$name: rc $rc, $errors errors, $definite bytes definitely lost, ${took}s; $tests"
    if [ "$rc" -ne 0 ] || [ "$errors" -ne 0 ]; then
        failed+=("$name (rc $rc, $errors errors: $out/$name.*.log, $out/$name.out)")
        # The failing tests' own output, so a CI log alone says which test failed and why.
        sed -n '/^failures:$/,$p' "$out/$name.out" | head -60
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'memcheck failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "memcheck: no invalid access and no definite leak in ${#bins[@]} test binaries"
