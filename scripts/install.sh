#!/usr/bin/env bash
# One-command set-up of ovi into the active Python environment (README "Set up, run, test"; .ci/run uses it):
#   scripts/install.sh            library + training + data pipeline + test tools (extra "dev")
#   scripts/install.sh data       or any extras of setup.py
# torch: an installed build (e.g. CUDA on a GPU host) is kept; without one, torch 2.13.0 is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
PIP=(python -m pip install --quiet)

if ! python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" torch==2.13.0
fi
# DS_BUILD_OPS=0: DeepSpeed compiles its ops on first use instead of at install (no CUDA toolkit needed here).
DS_BUILD_OPS=0 "${PIP[@]}" -e ".[${EXTRAS}]"

# syncnet-python's metadata is wrong for us: it requires opencv-contrib-python (clashes with the headless
# opencv we use), pandas and torchvision (which would replace a CPU torch by a CUDA build). Its code needs
# scenedetect < 0.7 (it imports scenedetect.video_manager, removed in 0.7), whose click < 8.3 pin would
# backtrack huggingface_hub / transformers / diffusers. So both come without their requirements; the ones
# they really import are in setup.py's "data" extra.
if [[ ",${EXTRAS}," == *",dev,"* || ",${EXTRAS}," == *",data,"* ]]; then
  "${PIP[@]}" --no-deps syncnet-python==0.2.3 scenedetect==0.6.7.1
fi
# ovi-eval: only these packages' model code is imported; their torchvision/torchaudio pins would replace torch.
if [[ ",${EXTRAS}," == *",dev,"* || ",${EXTRAS}," == *",eval,"* ]]; then
  "${PIP[@]}" --no-deps cd-fvd==0.1.1 audiobox-aesthetics==0.0.4
fi
