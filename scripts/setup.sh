#!/usr/bin/env bash
# Set up tritonllm on a fresh Debian/Ubuntu machine: system libraries, a virtualenv in .venv,
# and every Python dependency that runs on a CPU host (pip install -e ".[all]").
# Safe to run again: it only installs what is missing. Needs root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# perf_analyzer (shipped in tritonclient[all]) links libb64.so.0d.
if ! ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "==> apt-get install libb64-0d"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libb64-0d >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi

echo "==> pip install -e .[all] (first run: a few minutes)"
"$VENV/bin/pip" install -q -c constraints.txt -e ".[all]"

# optimum-intel declares torchvision; the build pip resolves is a CUDA one whose C++ ops do not
# load against the CPU torch, which breaks `import transformers` model classes. Nothing we run
# needs it, so it goes.
if "$VENV/bin/pip" show -q torchvision >/dev/null 2>&1; then
    "$VENV/bin/pip" uninstall -y -q torchvision
fi

"$VENV/bin/python" -c "import tritonllm, transformers, openvino_genai, tritonclient.grpc; from transformers import LlamaForCausalLM" \
    || { echo "setup: the environment does not import cleanly" >&2; exit 1; }
echo "==> ready: $VENV/bin/tritonllm"
