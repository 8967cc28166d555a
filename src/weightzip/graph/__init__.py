"""The computation graph in a ``.wz``: record a model as JSON data, rebuild it without its class.

    g, extra = capture(model, example_inputs)      # GraphCaptureError(reason) if it cannot
    gm = rebuild(g, {name: (shape, dtype)}, extra)  # a torch.fx.GraphModule; fill with load_state_dict

Only allowlisted operators and module kinds (``graph/ops.py``, opset 1) are recorded or
resolved; see docs/file-format.md section 7.
"""
from .capture import EXTRA_PREFIX, GraphCaptureError, capture, capture_export, capture_fx, clean_copy
from .ops import GRAPH_VERSION, OPSET_VERSION
from .rebuild import rebuild

__all__ = ["capture", "capture_fx", "capture_export", "clean_copy", "rebuild", "GraphCaptureError",
           "EXTRA_PREFIX", "GRAPH_VERSION", "OPSET_VERSION"]
