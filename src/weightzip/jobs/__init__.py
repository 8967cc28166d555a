"""Whole jobs, end to end: the CLI, the exploration and the benchmark scripts call these.

``runs`` (train a zoo model, cached baselines, evaluate a checkpoint), ``compress`` (baseline ->
recipe -> .wz -> accuracy re-measured from the file), ``bench`` (latency of a .wz), ``export``
(ONNX / safetensors), ``explore`` (Optuna studies over designs). Jobs hold no algorithm of their own.
"""
