"""Compiled runtime: a whole loaded model as one native (numba) program over its compressed
weights. ``weightzip.load(path, mode="compiled")``; see :mod:`.plan` (what compiles),
:mod:`.kernels` (the ops) and :mod:`.module` (the ``nn.Module``)."""
from .module import CompiledModel, compile_model
from .plan import Plan, build_plan

__all__ = ["CompiledModel", "compile_model", "Plan", "build_plan"]
