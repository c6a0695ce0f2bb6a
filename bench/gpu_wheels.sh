#!/usr/bin/env bash
# What bench/gpu_check.sh needs on the lent GPU machine that its image lacks, fetched HERE (that
# machine reaches no registry) into ./.whl/, which the device call then carries (`carry: [".whl"]`).
#
#     bash bench/gpu_wheels.sh          # from the repository root, on a machine with network
#
# * Python wheels for CPython 3.12 on manylinux x86-64 (the image's python3), each at the version
#   this checkout's .venv runs (so the GPU run uses what the tests here ran): the CLI's imports that
#   the image's package list (/work/.library/device/KINDS.md) does not name. paramiko is not among
#   them: gpu_check.sh launches on the machine itself, never over SSH.
# * tmux and the two libraries it links that a slim image may lack, as Debian packages in
#   .whl/deb/; gpu_check.sh unpacks them under its own temp folder (never over /) and runs tmux
#   through a wrapper that points the loader there.
# Files already in .whl/ are kept; a second run fetches only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
# pydantic-core must match pydantic exactly; annotated-types, typing-inspection and typing-extensions
# (pydantic-core needs a recent one: the image may hold an older) are pydantic's needs,
# python-dotenv pydantic-settings'.
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions pydantic-settings python-dotenv libtmux)
DEBS=(tmux libevent-core-2.1-7 libutempter0)
mkdir -p .whl/deb
for name in "${PACKAGES[@]}"; do
    version=$("$VENV_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    norm=${name//-/_}
    if ls .whl/"${norm}"-"${version}"-*.whl >/dev/null 2>&1; then
        echo "have $name $version"
        continue
    fi
    "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$version"
    echo "got  $name $version"
done
(cd .whl/deb && for deb in "${DEBS[@]}"; do
    if ls "${deb}"_*.deb >/dev/null 2>&1; then echo "have $deb"; else apt-get download -q "$deb"; echo "got  $deb"; fi
done)
du -sh .whl | awk '{print "carry .whl (" $1 "; the device call carries at most 64 MiB in all)"}'
