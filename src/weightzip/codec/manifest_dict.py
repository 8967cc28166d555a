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


def zstd_dictionary(version: int = 2):
    """The dictionary of format ``version`` (2, or 3: :data:`DICT3` after the format-2 content) as a
    ``zstandard.ZstdCompressionDict`` (raw content)."""
    import zstandard

    data = dictionary_bytes() if version < 3 else dictionary3_bytes()
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


DICT3 = (  # typical format-3 manifests of weightzip.save (keys, zoo models, recipes); frozen
    '{"weightzip_version":"0.1.0","model":{"name":"mlp","kwargs":{"width":512,"depth":3,"batch_norm":true}},"recipe":null,"metrics":{"test":{"loss":0.0,"accuracy":0.9}},"runtime":{},"baseline_bytes":1,"extra":{},"tensors":[null,["layers.0.weight","uniform",[512,784],{"bits":4,"stream_info":{"codes":"bitpack"}},[1]],["layers.0.bias","dense",[512],{"stream_info":{"values":"float16"}},[1],"float16"]]}\n'
    '{"weightzip_version":"0.1.0","model":{"name":"resnet20","kwargs":{"num_classes":10,"in_channels":3,"image_size":32}},"recipe":{"name":"","description":"","model":"resnet20","model_args":{},"data":"cifar10","data_args":{},"baseline":{},"storage":{"entropy":"auto","float_dtype":"float32","sparse":true},"stages":[{"method":"prune_magnitude","label":"","select":{"types":["Linear","Conv2d","LSTMLayer"],"tensors":null,"names":null,"exclude":[],"skip_first":false,"skip_last":false}}]},"metrics":{"baseline_test":{"loss":0.0,"accuracy":0.9},"compressed_test":{"loss":0.0,"accuracy":0.9},"data":"cifar10"},"runtime":{},"baseline_bytes":1,"extra":{},"tensors":[0,["conv1.weight","codebook",[16,3,3,3],{"codebook_size":16,"stream_info":{"codebook":"float32","codes":"huffman"}},[1]],["bn1.weight","dense",[16],{"stream_info":{"values":"float32"}},[1]],["bn1.running_mean","dense",[16],{"stream_info":{"values":"float32"}},[1]],["bn1.num_batches_tracked","dense",[],{"value_dtype":"int64","stream_info":{"values":"raw"}},[1],"int64"]]}\n'
    '{"weightzip_version":"0.1.0","model":{"name":"lenet300_100","kwargs":{"num_classes":10,"in_channels":1,"image_size":28}},"recipe":null,"metrics":{"baseline_test_error":1.5,"test_error_in_memory":1.5},"runtime":{},"baseline_bytes":1066440,"extra":{"recipe":{"path":"recipes/records-lenet300_100.yaml","name":"records-lenet300_100 (lenet300_100-records)","overrides":{"0":{"train":{"epochs":80,"lr":0.1,"optimizer":"sgd","momentum":0.9,"nesterov":true,"weight_decay":0.0005,"schedule":"cosine"}},"1":{"bits":{"layers.0":4,"layers.2":4,"layers.4":4}}}},"requant":{"from":"lenet300_100-records.wz","chosen_on":"validation"}},"tensors":[0,["layers.0.bias","codebook",[300],{"codebook_size":16,"stream_info":{"codebook":"float32","codes":"huffman"}},[1,1]],["layers.0.weight","codebook",[300,784],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"cm_mask"}},[1,1,1]],["layers.2.bias","codebook",[100],{"codebook_size":16,"stream_info":{"codebook":"float32","codes":"huffman"}},[1,1]],["layers.2.weight","codebook",[100,300],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"context_mask"}},[1,1,1]],["layers.4.weight","codebook",[10,100],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"cm_mask"}},[1,1,1]],["layers.4.bias","dense",[10],{"stream_info":{"values":"float32"}},[1]]]}\n'
    '{"weightzip_version":"0.1.0","model":{"name":"lenet5","kwargs":{"num_classes":10,"in_channels":1,"image_size":28}},"recipe":null,"metrics":{"baseline_test_error":0.7,"test_error_in_memory":0.7},"runtime":{},"baseline_bytes":1724320,"extra":{"recipe":{"path":"recipes/records-lenet5.yaml","name":"records-lenet5 (lenet5-records)","overrides":{"0":{"sparsity":{"features.0":0.5,"features.2":0.5,"classifier.0":0.5,"classifier.2":0.5},"train":{"epochs":20,"lr":0.05,"optimizer":"sgd","momentum":0.9,"nesterov":true,"weight_decay":0.0005,"schedule":"cosine"}},"1":{"bits":{"type:Conv2d":4,"type:Linear":3}}}},"requant":{"from":"lenet5-records.wz","chosen_on":"validation"}},"tensors":[0,["features.0.bias","dense",[20],{"stream_info":{"values":"float32"}},[1]],["features.0.weight","codebook",[20,1,5,5],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"cm_mask"}},[1,1,1]],["features.2.weight","codebook",[50,20,5,5],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"cm_mask"}},[1,1,1]],["features.2.bias","codebook",[50],{"codebook_size":16,"stream_info":{"codebook":"float32","codes":"raw"}},[1,1]],["classifier.0.weight","codebook",[500,800],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"cm_mask"}},[1,1,1]],["classifier.0.bias","codebook",[500],{"codebook_size":16,"stream_info":{"codebook":"float32","codes":"huffman"}},[1,1]],["classifier.2.bias","dense",[10],{"stream_info":{"values":"float32"}},[1]],["classifier.2.weight","codebook",[10,500],{"sparse":"context","n_entries":1,"codebook_size":16,"stream_info":{"codebook":"float32","codes":"cm","mask":"cm_mask"}},[1,1,1]]]}\n'
)


def dictionary3_bytes() -> bytes:
    """Format 3's dictionary: the format-2 content, then :data:`DICT3` (compact-table text; the end of
    a raw-content dictionary is the cheapest to refer to)."""
    return dictionary_bytes() + DICT3.encode()


# =============================================================================================
# format 3: the compact tensor table and its dictionary

def _numel(shape) -> int | None:
    if not isinstance(shape, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**40
                                               for x in shape) or len(shape) > 64:
        return None
    n = 1
    for x in shape:
        n *= x
    return n


def _iv(v):
    """``v`` when a plain JSON integer, else None (defaults come only from well-typed fields)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# (path in meta, default(meta, kind, numel)), applied in this order by the reader; a default depends
# only on fields restored before it. None: no default (the field is stored as it is).
def _top_rules():
    return (
        ("sparse", lambda m, kind, n: "none"),
        ("n_entries", lambda m, kind, n: n if m.get("sparse") == "none" else None),
        ("nnz", lambda m, kind, n: _iv(m.get("n_entries"))),
        ("value_dtype", lambda m, kind, n: "float32" if kind == "dense" else None),
    )


_STREAM_COUNT = {"codebook": "codebook_size", "codes": "n_entries", "values": "n_entries"}


def _stream_default(sname: str, key: str, m: dict, kind, n):
    if key == "count":
        if sname in ("mask", "bitmap"):
            return n
        f = _STREAM_COUNT.get(sname)
        return _iv(m.get(f)) if f else None
    if key == "alphabet" and sname == "codes" and kind == "codebook":
        return _iv(m.get("codebook_size"))
    return None


def compact_meta(meta: dict, kind: str, shape: list) -> dict | None:
    """``meta`` without the fields the reader restores (:func:`expand_meta`), a field the reader
    would fill but that is absent stored as null. None when ``meta`` cannot be written this way (a null where a default applies)."""
    n = _numel(shape)
    out = dict(meta)
    for key, rule in _top_rules():
        d = rule(meta, kind, n)
        if d is None:
            continue
        if key in meta:
            if meta[key] is None:
                return None
            if meta[key] == d and type(meta[key]) is type(d):
                del out[key]
        else:
            out[key] = None
    si = meta.get("stream_info")
    if isinstance(si, dict):
        new_si = {}
        for sname, info in si.items():
            if not isinstance(info, dict):
                new_si[sname] = info
                continue
            ci = dict(info)
            for key in ("count", "alphabet"):
                d = _stream_default(sname, key, meta, kind, n)
                if d is None:
                    continue
                if key in info:
                    if info[key] is None:
                        return None
                    if info[key] == d and type(info[key]) is type(d):
                        del ci[key]
                else:
                    ci[key] = None
            new_si[sname] = ci.get("coding") if list(ci) == ["coding"] and isinstance(ci.get("coding"), str) else ci
        out["stream_info"] = new_si
    return out


def expand_meta(meta, kind, shape):
    """Inverse of :func:`compact_meta` (anything that is not a dict is returned as it is: the
    entry checks name it)."""
    if not isinstance(meta, dict):
        return meta
    n = _numel(shape)
    out = dict(meta)
    for key, rule in _top_rules():
        if key in out:
            if out[key] is None:
                del out[key]
            continue
        d = rule(out, kind, n)
        if d is not None:
            out[key] = d
    si = out.get("stream_info")
    if isinstance(si, dict):
        new_si = {}
        for sname, info in si.items():
            if isinstance(info, str):
                info = {"coding": info}
            if isinstance(info, dict):
                info = dict(info)
                for key in ("count", "alphabet"):
                    if key in info:
                        if info[key] is None:
                            del info[key]
                        continue
                    d = _stream_default(sname, key, out, kind, n)
                    if d is not None:
                        info[key] = d
            new_si[sname] = info
        out["stream_info"] = new_si
    return out
