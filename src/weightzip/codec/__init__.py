"""The byte layer: encoded tensor formats, bit packing, sparse indices, entropy coding, the .wz file.

No ``nn.Module`` and no training code lives here (a ``.wz`` file loads without them).

    fmt = encode(weight, hint, options={"name": "fc1.weight"})   # smallest exact Format
    w = decode(fmt)                                                # bit-exact (-0.0 -> +0.0)
    container.write("model.wz", manifest, {"fc1.weight": fmt})
    manifest, formats = container.read("model.wz")
"""
from .formats import (KINDS, LAYOUTS, Format, decode, decode_parts, encode, entropy_bound_bytes,
                      format_summary, validate)

__all__ = ["KINDS", "LAYOUTS", "Format", "encode", "decode", "decode_parts", "format_summary",
           "entropy_bound_bytes", "validate"]
