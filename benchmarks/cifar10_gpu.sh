#!/usr/bin/env bash
# CIFAR-10 runs made on a lent H100 (one GPU), then rendered by cifar10_gpu_report.py.
# The same commands run on any CUDA machine; on 2 CPU cores they would take days.
#   bash benchmarks/cifar10_gpu.sh            (with WEIGHTZIP_DATA pointing at the datasets)
set -euo pipefail
out=${OUT:-benchmarks/results/cifar10-gpu}
mkdir -p "$out"
# Method B (issue 6): vgg_small, 2-bit weights, 2-bit activations, 4x coarse-grain block sparsity.
# The baseline (60 epochs, the recipe's `baseline:` block) is trained first and cached.
python -m weightzip compress vgg_small --data cifar10 -r recipes/structured-qat-vgg.yaml \
    -o "$out/vgg_small-structured-w2a2c4.wz" --device cuda --json > "$out/vgg_small-structured-w2a2c4.json"
# Method D (issue 7): vgg_small binarized by LAB (30-epoch budget), same cached baseline.
python -m weightzip compress vgg_small --data cifar10 -r recipes/loss-aware-lab-vgg-cifar.yaml \
    -o "$out/vgg_small-lab.wz" --device cuda --json > "$out/vgg_small-lab.json"
python benchmarks/cifar10_gpu_report.py "$out"
