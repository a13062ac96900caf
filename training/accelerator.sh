#!/usr/bin/env bash
# Train the study's 224x224x3 transfer models from scratch on an accelerator machine that has
# PyTorch but no TensorFlow: the package's own `train` under Keras 3 on the torch backend.
# What comes back is small: each run's best weights as a pack-run file (float16), cut into
# 15 MB parts, plus the training logs. Evaluation, ONNX export, the parity check and int8
# quantization then run on the CPU machine with the usual commands (docs/training.md).
#
# Before: python -m training pack-data --data ../shared/fer2013 --out .devdata/fer2013
#         keras, namex and optree wheels for the machine's Python in .whl/
# Usage:  training/accelerator.sh OUT RESNET_BUDGET VGG_BUDGET   (budgets as `train` reads them)
#         EXTRA_TRAIN_FLAGS="--limit-per-class 4 --batch-size 8" for a dry run on a CPU
set -euo pipefail
out=${1:?OUT folder}
resnet_budget=${2:?ResNet50V2 time budget}
vgg_budget=${3:?VGG16 time budget}
mkdir -p "$out" runs
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

# train NAME BUDGET FLAGS...: a run in runs/NAME, its log and its pack in runs/
train() {
  local name=$1 budget=$2
  shift 2
  python3 -m training train --model "$name" --data .devdata/fer2013 --out "runs/$name" \
    --weights none --split-seed 42 --epochs 60 --time-budget "$budget" \
    --monitor val_accuracy --optimizer adam_cosine --augment standard "$@" ${EXTRA_TRAIN_FLAGS:-} 2>&1 |
    grep --line-buffered -v -e "^$" -e "UserWarning" | tee "$out/$name-train.log"
  python3 -m training pack-run --run "runs/$name" --out "runs/$name.pack.npz" | tee -a "$out/$name-train.log"
}

train resnet50v2 "$resnet_budget" --seed 34 --batch-size 256 --learning-rate 1e-3
split -b 15m -d runs/resnet50v2.pack.npz "$out/resnet50v2.pack.npz.part"
train vgg16 "$vgg_budget" --seed 35 --batch-size 128 --learning-rate 1e-4
ls -la runs "$out"
