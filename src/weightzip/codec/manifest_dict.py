"""The built-in zstd dictionary of format-2 manifests (header flag bit 1; dictionary id 1).

A raw-content dictionary (``zstandard.DICT_TYPE_RAWCONTENT``): JSON text that manifests repeat
(the keys and usual values of tensor entries, of ``weightzip.save``'s caller fields and of
recipes), made from synthetic content by ``tests/codec/make_manifest_dict.py``. Part of the file
format: it never changes (its SHA-256 is pinned by ``tests/codec/test_manifest_dict.py``).
"""
from __future__ import annotations

import base64
import functools
import zlib

SHA256 = "dbac0e607cafdabbb3a9ef9ffd59462f98534e022ca351ed2bd088abbd7c048d"

_B64 = (
    "eNrtWWuL2zgU/SvCsNCyTmo7iZMJ9FNhYWFadmm/DYNRbCUxsSWPJGde5L/vvbLl2Ek6Y6avoZuWFut1dXXO0ZHsPDqc5syZ"
    "OwljxSAWeSGZUqngjgtVKpZpobE0dy7ZJ6YHI88b+J5HBCcfP/39+QsZkJWkSUkzktMVT3WZMFLIkqd8RW5TvSaSaUlTLLtk"
    "PAjJItVkM8gZ5YrcsnS11kStqWz6x4xrKdKELFPOBrqsRqqCSsXIn8S0FveQasISorSQdMUg2RzKGaSZMc40ZBlBlrY6onKl"
    "nPnjDtZENYVeOU+Vdqpiq3VBFctgWig5rBDxGur9CTTYebC+SgCC0FILiLHMBNVRou8LxNGURgHUVyk7cy1LZkJAAIh39ejk"
    "TK9FAp0RKBbVAMKQjC7MIkw9LLbGDoOxjMUa58d5MIxzCYlSCW0fBN8GCTxcfv7y8ZLeM+lcu45mXAkJPXmZZa6huSmwuzgD"
    "oiAKdFSbtIiWqQRA5kuaKVZXZbSp2dWrSfU9ppDhHGroOXNveDFybTnA8mzSlMdYRvSAfZ3SLNrH8IYeoM1WKY+UZgVUAI6S"
    "3ZSMx9A8gSKPygLo2SctaV6YiLA2g0qLpAAGZBJbfdcRINk8fQAY5o5aJUYFOdBW5iZhCM1gUim2FTeuU8kwSlhMq9w8DyZR"
    "8ZolZYakxkKhKnY7t0Xexmg4QvGyFnemDNxZ+bJG0eo18AjbT3U5HLcJ7LAX1tzhtrJJMr4yG8SBHRGvEVt6F6UawYZdB+mK"
    "rIYQmEAMEILOfqqY8tkAQW5zRROaA8bXu0drSpLFQiZqcLCpv9mY3lxMhuEfbyvDGXukyo2IZcetrEtZe4LmSimKvKmdTL0l"
    "lCfwBMYBtZO67gkjiwXX7E6f/eu1+Fc4OTCw2YGB/RwHG782B7NSPzvZi52sN9a1f7Sg/jaArxyMiFXfB+TJLz4HjJ8Mipsj"
    "79druK6uRZYMVEy59Xe3Y+P//EveJO9n5K8P5B0cD4xsmOQsQyfegsm/94MZeU+mA7yYoisr1/TCx4UQG1IwSYyS3rr7ypan"
    "H5r35Fts+0d7dXMWtjTYgEgQxFdh1nbs3m/rMswDTrytjXwlU1jaFTqqN5xOXB9M2R8G+ID/oCaAmgBrguHkuhJpApCC7tC/"
    "ARyZxgDB1hxf2MrgMVpQDdZZCb/IhK6B7WzoRtN7IGvVVcf/Mr2DAz6navMq3PLowAnteeP1OXCOj5KTh47fxai4OTK8Qoqk"
    "jDW5KSnX6QPV1bvmL8cnsXPP63nncA8w5Xp6sHDjGw503oB+Amg3i0si6wr2NEbSI7QARLNcbGFlAhfCK38ENYJUUD/GMJW5"
    "OxQ0scPtKWsuViZEbhBiiV3fKT8NGj69k4Z6+jqAJlvx+ACQbCGbyljhGjL09s7WOPHB9XRzW7uYw8s8igFShSz4Hh4YUbym"
    "HBCrzD4F62GRgpQg1xnoBG/3KfpYtaZqL5pY1g8juDvpiEkpZH3h2ldEED9nuZD2Lma/XQAf2MvcDIRSdSuN41LSuOp8aMiY"
    "SwlqzFnXj6PFvbm9eago2EAY0yb9CIzpdfWOAhXqneNajOBJAJLgTcwsx8P/WvfPU7vxZ93+HN8AXF+dOvoeu139j3bmzwv0"
    "MTkr46yMQ2XkWXGWxVkWh7IABsAxgvNhctbGkTa2q5UfRnG6NNfAszzO8ujIg2bsDrzjLJCzQL5yGVU6j7L8LI3/hzSWsT+s"
    "psAxm5QnJmT9bm7e1hGRq3DsXoTXgO3RZzTgljYgYBMkkFO8t/IIX8pTBCr0Q7cJa4UCPfhD3aa0ZDQH4pcCg+2/Dphn/GLY"
    "njMWQClE2FVBVaebpLf7LiY4zYo1XbB6RJ1fewjlqj1kPO6O2e1sguowOXh3W6FUZjBcxiP8NaSdlG2eTjvt+xRsh9HUb/XA"
    "CZEZ80X6GV76kcKF+fzUpmR8xMhoZikZv5CR0awHJR10YUQPeP1J8DTA49kBfPilup+0Z+4I//bDsf4psgtlcAxlWCMZvBTJ"
    "8Hkggw6QOAA/onX6x3lk6vZj/LAP3mZFT8B90Wm20zZshSfJeF7Ns5eKeXZEwLQmYPZC/KfP4z9rwz/tBeszNjE68oCgl4Th"
    "TO5rBCcFHHpH+OExX3mB90IEfe8khHHeErnXhtD3ekk4HHt9sMYfh5/C+oCLQw13hlsunlew7/WjQbKM6nSLMoZY7C6qjm2/"
    "QwteB6JlmmX2g/dXNH7x4zR+0dV4nW3P/sH32BNdJ2qmb4Yf0LTgxzsmYVyx72QzW5qV7MSviV8xG9NdPU3D0Qm4H9QYw4ll"
    "wrUWf0qN8Efy33mxu/8Adw+yYg=="
)


@functools.lru_cache(maxsize=1)
def dictionary_bytes() -> bytes:
    """The dictionary's raw content."""
    return zlib.decompress(base64.b64decode("".join(_B64)))


def zstd_dictionary():
    """The dictionary as a ``zstandard.ZstdCompressionDict`` (raw content)."""
    import zstandard

    return zstandard.ZstdCompressionDict(dictionary_bytes(), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
