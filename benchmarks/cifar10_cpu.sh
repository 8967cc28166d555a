#!/usr/bin/env bash
# CIFAR-10 baselines on this 2-core CPU (issue 23), one job at a time, niced, resumable.
#   bash benchmarks/cifar10_cpu.sh [resnet20|alexnet_cifar|vgg16_cifar]
# Every epoch is checkpointed atomically to runs/cifar10/<model>/base.pt (outside git); running
# the same command again continues bit-for-bit from the last epoch. On a new machine the run
# continues from the committed small checkpoint benchmarks/results/cifar10/<model>-base.pt.xz
# (finished) or <model>-base.partial.pt.xz when there is one (unpacked before the first epoch; xz
# keeps ResNet-20's under 2 MB). AlexNet / VGG-16 checkpoints (31 / 59 MB of weights, twice that
# with SGD momentum) are too large for the repository: on a new machine those runs start over
# unless runs/cifar10/<model>/ is carried along (or run them on a GPU: cifar10_gpu.sh).
# VGG-16 trains its forward under bf16 autocast (weights, gradients and momentum fp32) where the CPU
# has native bf16 (AVX512_BF16 / AMX): 1.8x faster per step here (benchmarks/results/train_precision.md).
# PRECISION=fp32 forces full precision; a resumed run must keep the precision it started with.
# To commit the current state: xz -9 -c runs/cifar10/<model>/base.pt > benchmarks/results/cifar10/<model>-base.partial.pt.xz
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-resnet20}
case "$model" in
  resnet20) epochs=${EPOCHS:-70} ;;
  alexnet_cifar|vgg16_cifar) epochs=${EPOCHS:-30} ;;
  *) echo "unknown model $model (resnet20, alexnet_cifar, vgg16_cifar)" >&2; exit 2 ;;
esac
run=runs/cifar10/$model
mkdir -p "$run"
committed=benchmarks/results/cifar10/$model-base.pt.xz          # a finished run
[ -f "$committed" ] || committed=benchmarks/results/cifar10/$model-base.partial.pt.xz
if [ ! -f "$run/base.pt" ] && [ -f "$committed" ]; then
  .venv/bin/python -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$committed" "$run/base.pt"
fi
precision=fp32
if [ "$model" = vgg16_cifar ] && .venv/bin/python -c \
    "import sys, torch; sys.exit(0 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 1)"; then
  precision=bf16
fi
precision=${PRECISION:-$precision}
export WEIGHTZIP_DATA=${WEIGHTZIP_DATA:-$(cd .. && pwd)/shared/data}
exec nice -n 19 .venv/bin/weightzip train "$model" --data cifar10 --epochs "$epochs" \
    -o "$run/base.pt" --resume --no-progress -t precision="$precision"
