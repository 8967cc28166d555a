"""Data-parallel training on ``torch.distributed`` with quantized gradient communication.

    # torchrun --nproc-per-node 2 -m weightzip train lenet5 -d mnist -o run.pt --grad-bits 2 --grad-clip-sigma 3
    from weightzip.training.distributed import GradQuantConfig, configure, run_local
    configure(GradQuantConfig(scheme="mbit", bits=2, clip=3.0))   # every data-parallel Trainer after this

* :mod:`~weightzip.training.distributed.grad_quant`: the DDP communication hooks (m-bit, sign, ternary;
  counted fp32 all-reduce; PyTorch's uint8 and PowerSGD hooks, counted) and the byte accounting;
* :mod:`~weightzip.training.distributed.launch`: process groups, the Trainer's DDP helper, torchrun
  relaunch and :func:`run_local` (N processes on 127.0.0.1).

The quantizer itself is :mod:`weightzip.primitives.grad_quant` (pure tensor functions).
See ``docs/distributed.md``.
"""
from .grad_quant import (HOOK_SCHEMES, CommState, CommStats, GradQuantConfig, GradQuantState, counted_torch_hook, estimate_step_bytes, fp32_allreduce_hook, grad_quant_hook, register_comm_hook)
from .launch import (DistributedTraining, configure, current_config, init_process_group, is_writer, rank_and_world, run_local, setup_trainer, shutdown)

__all__ = [
    "HOOK_SCHEMES",
    "CommState",
    "CommStats",
    "GradQuantConfig",
    "GradQuantState",
    "counted_torch_hook",
    "estimate_step_bytes",
    "fp32_allreduce_hook",
    "grad_quant_hook",
    "register_comm_hook",
    "DistributedTraining",
    "configure",
    "current_config",
    "init_process_group",
    "is_writer",
    "rank_and_world",
    "run_local",
    "setup_trainer",
    "shutdown",
]
