#!/usr/bin/env bash
# ensure_deps.sh — installs what `make test` / `make demo` need and is missing,
# and nothing that is already there. On our CPU machines: OpenBLAS from Debian,
# the Python test references from PyPI (torch from the local CPU build), and,
# when nvcc exists but cuBLAS/NCCL headers don't, PyPI's nvidia-cublas and
# nvidia-nccl-cu13 wheels. On the GPU machine everything is already installed
# (and there is no network): every check passes and nothing is installed.
set -euo pipefail
PY=${PYTHON:-python3}
say() { echo "[ensure_deps] $*"; }

have_header() {   # header name -> 0 when some include dir has it
    for d in /usr/include /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu \
             /usr/include/openblas /usr/local/cuda/include; do
        [ -f "$d/$1" ] && return 0
    done
    "$PY" - "$1" <<'PYEOF' 2>/dev/null
import glob, os, site, sys, sysconfig
roots = set(site.getsitepackages()) | {sysconfig.get_paths()["purelib"]}
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "include")) + \
             glob.glob(os.path.join(r, "nvidia", "*", "*", "include")):
        if os.path.isfile(os.path.join(d, sys.argv[1])):
            sys.exit(0)
sys.exit(1)
PYEOF
}

# --- C libraries -------------------------------------------------------------
if ! have_header cblas.h; then
    say "cblas.h missing: installing Debian's libopenblas-dev"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q libopenblas-dev
fi

# --- Python packages ---------------------------------------------------------
missing=()
for mod in numpy pytest setuptools wheel; do
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ "${GPT2_ENGINE_SKIP_TEST_DEPS:-0}" != 1 ]; then
    if ! "$PY" -c "import torch" 2>/dev/null; then
        say "installing torch==2.13.0 (the CPU build)"
        "$PY" -m pip install -q torch==2.13.0
    fi
    for pair in transformers:transformers tokenizers:tokenizers tiktoken:tiktoken \
                safetensors:safetensors; do
        "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
    done
fi
# nvcc present but no cuBLAS / NCCL headers: the wheels carry them
if [ "${GPT2_ENGINE_CUDA:-}" != 0 ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
    have_header cublas_v2.h || missing+=(nvidia-cublas)
    have_header nccl.h || missing+=(nvidia-nccl-cu13)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    "$PY" -m pip install -q "${missing[@]}"
else
    say "all dependencies present; nothing to install"
fi
