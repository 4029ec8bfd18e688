#!/usr/bin/env bash
# Schema-checks the Kubernetes manifests in deploy/ offline: kubernetes-validate (PyPI, pinned)
# carries the Kubernetes OpenAPI schemas inside its wheel, so nothing is fetched at check time;
# --strict refuses fields a kind does not have (a misspelt probe or resource key).
#
#   bash scripts/check-manifests.sh     # with CORESTREAM_PYTHON, or python3, that can pip install
#
# Installs kubernetes-validate into a virtual environment under target/ (not the system Python),
# with its dependencies, each pinned with its wheels' sha256 (scripts/manifests-requirements.txt,
# written by scripts/pylock.py).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/ci-cache/kubernetes-validate
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
        --only-binary :all: --no-deps -r scripts/manifests-requirements.txt
fi
"$venv/bin/kubernetes-validate" --strict deploy/*.yaml
