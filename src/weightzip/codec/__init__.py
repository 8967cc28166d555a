"""The byte layer: encoded tensor formats, bit packing, sparse indices, entropy coding, the .wz file.

No ``nn.Module`` and no training code lives here (a ``.wz`` file loads without them).

    fmt = encode(weight, hint, options={"name": "fc1.weight"})   # smallest exact Format
    w = decode(fmt)                                                # bit-exact (-0.0 -> +0.0)
    container.write("model.wz", manifest, {"fc1.weight": fmt})
    manifest, formats = container.read("model.wz")

Modules: :mod:`.format` (the :class:`Format`), :mod:`.kinds` (one module per format kind, behind
a registry), :mod:`.layout` (sparse layouts), :mod:`.streams` (stream writer / reader),
:mod:`.options` (encode options), :mod:`.encoding` / :mod:`.decoding` / :mod:`.report` (the
functions below), :mod:`.container` (the file), :mod:`.bitpack`, :mod:`.sparse`, :mod:`.entropy`.
"""
from .decoding import decode, decode_parts, validate
from .encoding import encode
from .format import Format
from .kinds import KINDS
from .layout import LAYOUTS
from .report import entropy_bound_bytes, format_summary

__all__ = ["KINDS", "LAYOUTS", "Format", "encode", "decode", "decode_parts", "format_summary",
           "entropy_bound_bytes", "validate"]
