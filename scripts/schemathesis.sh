#!/usr/bin/env bash
# schemathesis (PyPI) against the live embedding services, axum and actix-web, from their own
# GET /openapi.json: a bounded number of generated requests per operation, valid and invalid.
# Fails on any 5xx other than a documented 503, any status, content type or body not in the
# document, an invalid request that is accepted, or a valid one that is refused: the document
# states the loaded model's limits (inputs per request, ids per input, id range, dimensions,
# prompt names), so every check runs, positive_data_acceptance included; the statuses each
# check takes are in scripts/schemathesis.toml (413 for a text over the model's token limit,
# which a schema cannot count, and for more inputs than --max-client-batch).
#
# Usage: bash scripts/schemathesis.sh [MAX_EXAMPLES]   (default 25; CI's bound)
# Needs: pip install schemathesis (CI pins it); builds the `corestream` command (cli/) and runs
# `corestream serve --server axum`, then `--server actix`. Serves MiniLM when models/ is
# fetched, else TextNet; with MiniLM, also MiniLM, a cross-encoder and a classifier made from
# it (`corestream-heads`, crate corestream-testkit) as three models of one process on the first
# server, for /rerank, /v1/rerank, /predict and the `model` field. Environment: CORESTREAM_ST_SERVERS (default "axum actix"), CORESTREAM_ST_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-25}"
seed="${CORESTREAM_ST_SEED:-1}"
servers="${CORESTREAM_ST_SERVERS:-axum actix}"
st="$(command -v schemathesis || command -v st || true)"
if [ -z "$st" ]; then
    echo "schemathesis not found (pip install schemathesis)" >&2
    exit 1
fi
model_args=(--textnet)
if [ -s models/paraphrase-MiniLM-L3-v2.onnx ] && [ -s models/tokenizer.json ]; then
    model_args=(--models models)
fi
# The README's test command builds the command too (target/debug/corestream): the same
# build, a no-op after it.
cargo test --quiet --workspace --all-features --no-run

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# Serves `corestream serve --server $1` with the remaining arguments and runs schemathesis
# against its document.
check() {
    local server="$1"; shift
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log="target/schemathesis-$server.log"
    RUST_LOG=warn CORESTREAM_QUEUE=1024 target/debug/corestream serve --server "$server" \
        "$@" --bind "127.0.0.1:$port" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 240); do
        if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; exit 1; fi
        sleep 0.5
    done
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { echo "$server never became ready" >&2; cat "$log" >&2; exit 1; }
    echo "==> schemathesis against $server ($*) on port $port, $examples examples per operation"
    # Run from target/ so its cache (.schemathesis/) stays out of the tree.
    (cd target && "$st" --config-file ../scripts/schemathesis.toml \
        run "http://127.0.0.1:$port/openapi.json" \
        --max-examples "$examples" --seed "$seed" --workers 2 --request-timeout 60 \
        --suppress-health-check all --generation-database none)
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

for server in $servers; do
    check "$server" "${model_args[@]}"
done

# The scoring routes (/rerank, /v1/rerank, /predict): a cross-encoder and a classifier made
# from MiniLM (corestream-testkit), served with MiniLM as three models in one process (the
# document then lists every route, and `model` must name one of the route's kind), on the
# first server (the routes are the same code on both).
if [ "${model_args[0]}" = --models ]; then
    cargo build --quiet -p corestream-testkit --bin corestream-heads
    target/debug/corestream-heads models target/heads >/dev/null
    first="${servers%% *}"
    check "$first" --model minilm=models --model org/reranker=target/heads/reranker \
        --model classifier=target/heads/classifier
else
    echo "schemathesis: models/ not fetched, the scoring routes were not checked (bash scripts/fetch-models.sh)"
fi
