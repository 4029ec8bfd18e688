#!/usr/bin/env bash
# corestream serve side by side with text-embeddings-inference (TEI) built from source
# (../shared/peers/tei/build.sh): the same model directory (the one build.sh lays out), the same
# ONNX Runtime library, the same load client (wrk, Debian), one server at a time, alternating
# rounds, each server at its defaults (TEI: run.sh, LOG_LEVEL=warn; corestream: `corestream
# serve --model DIR`, RUST_LOG=warn). Two workloads, one text per POST /v1/embeddings request:
# `short` (one 6-word sentence) and `mixed` (1 to 90 words, the same pseudo-random sequence for
# both servers). Prints one markdown row per run: workload, round, server, requests/s, p50 and
# p99 ms, non-2xx answers.
#
#   bash scripts/tei-compare.sh TEI_OUT_DIR [ROUNDS] [SECS] [CONNECTIONS]   # default 3 10 64
#
# CONNECTIONS may be a comma-separated list (e.g. 1,4,64: light to heavy load, each level
# measured in turn within a round). WORKLOADS (default "short mixed") picks the workloads;
# SERVERS (default "corestream tei") the servers, where `corestream-WIDTH` runs `corestream
# serve --width WIDTH` (e.g. SERVERS="corestream corestream-narrow tei").
#
# Needs: wrk (apt-get install wrk), TEI_OUT_DIR from build.sh, and a release build of the
# command (cargo build --release -p corestream-cli). Extra corestream flags: CORESTREAM_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
tei="$(cd "$1" && pwd)"; rounds="${2:-3}"; secs="${3:-10}"; conns="${4:-64}"
model="$tei/model"
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
[ -x target/release/corestream ] || { echo "build it first: cargo build --release -p corestream-cli" >&2; exit 1; }
lib=$(ls target/onnxruntime/libonnxruntime.so.* | head -1)
work="$(mktemp -d)"; pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/short.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "m", "input": "a cat sits on the mat"}'
LUA
cat >"$work/mixed.lua" <<'LUA'
local words = {"the", "service", "answered", "quickly", "cats", "sleep", "sixteen", "hours",
  "a", "day", "markets", "fell", "sharply", "guitar", "player", "sunny", "kitchen", "window",
  "reading", "books", "about", "distant", "mountains", "and", "rivers"}
function init(args) math.randomseed(1) end
request = function()
  local n = math.random(1, 90)
  local t = {}
  for i = 1, n do t[i] = words[math.random(#words)] end
  local body = '{"model": "m", "input": "' .. table.concat(t, " ") .. '"}'
  return wrk.format("POST", "/v1/embeddings", {["Content-Type"] = "application/json"}, body)
end
LUA

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() {
    local server="$1" p="$2"
    case "$server" in
        corestream*) local width=""; [ "$server" = corestream ] || width="--width ${server#corestream-}"
                     RUST_LOG=warn ORT_DYLIB_PATH="$lib" target/release/corestream serve --model "$model" \
                        --served-model-name m --bind "127.0.0.1:$p" $width ${CORESTREAM_FLAGS:-} >"$work/$server.log" 2>&1 & ;;
        tei) LOG_LEVEL=warn "$tei/run.sh" "$p" --served-model-name m >"$work/$server.log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 1 240); do
        curl -fsS "http://127.0.0.1:$p/health" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$work/$server.log" >&2; exit 1; }
        sleep 0.5
    done
    echo "$server never became ready" >&2; cat "$work/$server.log" >&2; exit 1
}
# wrk's "Latency Distribution" line for a percentile, in ms.
ms() { awk -v q="$1" '$1 == q { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }; printf "%.1f", v }' "$2"; }

echo "| workload | clients | round | server | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---:|---:|---|---:|---:|---:|---:|"
for workload in ${WORKLOADS:-short mixed}; do
    for round in $(seq 1 "$rounds"); do
        for server in ${SERVERS:-corestream tei}; do
            p=$(port); start "$server" "$p"
            for c in ${conns//,/ }; do
                threads=$(( c < 2 ? 1 : 2 ))
                wrk -t "$threads" -c "$c" -d 2s -s "$work/$workload.lua" "http://127.0.0.1:$p/v1/embeddings" >/dev/null   # warm-up
                wrk -t "$threads" -c "$c" -d "${secs}s" --latency -s "$work/$workload.lua" \
                    "http://127.0.0.1:$p/v1/embeddings" >"$work/out"
                rps=$(awk '/^Requests\/sec/ { printf "%.1f", $2 }' "$work/out")
                bad=$(awk '/Non-2xx/ { print $NF }' "$work/out"); bad=${bad:-0}
                echo "| $workload | $c | $round | $server | $rps | $(ms 50% "$work/out") | $(ms 99% "$work/out") | $bad |"
            done
            kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
        done
    done
done
