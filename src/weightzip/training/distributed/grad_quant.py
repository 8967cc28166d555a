"""DDP communication hooks that send quantized gradients, and the byte accounting of every hook.

``DistributedDataParallel`` hands each gradient *bucket* (a flat fp32 buffer holding several
parameters' gradients) to a communication hook, which must return a future of the averaged
bucket. :func:`grad_quant_hook` replaces the fp32 all-reduce by::

    g      = bucket + residual                    (error feedback, optional)
    packet = encode_packet(g, lengths, ...)       uint8 [P]: fp32 scales + packed b-bit codes
    all    = all_gather(packet)                   uint8 [W, P]  <- the only bytes on the wire
    mean   = decode_packets(all) = 1/W sum_w g_hat_w
    residual = g - g_hat_own                      (error feedback, optional)

(the quantizer is :mod:`weightzip.primitives.grad_quant`: clipping at ``c`` standard deviations,
max-norm scale, unbiased stochastic rounding; ``sign`` and ``ternary`` variants). ``lengths``
are the sizes of the bucket's parameters (``granularity="tensor"``: one scale per parameter
tensor, **[reconstructed]** - the paper states one scale per gradient) or the whole bucket
(``granularity="bucket"``).

Byte accounting (:class:`CommStats`, per worker, cumulative; a step ends with the bucket that
DDP reduces last):

* ``payload_bytes``: the bytes this worker contributes to collectives - its packets
  (``4 S + ceil(n b / 8)`` per bucket), or its fp32 tensors for all-reduce hooks. This is what
  a worker would push to a parameter server, the quantity the paper counts.
* ``wire_bytes``: what the worker transmits under ring algorithms: an all-gather of ``P``-byte
  packets sends ``(W - 1) P``; a ring all-reduce of ``B`` bytes sends ``2 (W - 1) / W * B``
  (reduce-scatter + all-gather). With 2 workers both equal ``payload_bytes``.
* ``fp32_payload_bytes`` / ``fp32_wire_bytes``: the same for the default fp32 all-reduce of the
  same buckets (``4 n``), the reference of every ratio.

PyTorch's own hooks are counted analytically from the bucket (:func:`torch_pertensor_bytes`,
:func:`powersgd_bytes`) by :func:`counted_torch_hook`, which then runs the original hook.

    state = register_comm_hook(ddp_model, GradQuantConfig(scheme="mbit", bits=2, clip=3.0))
    ... train ...
    state.stats.as_dict()        # {"steps", "payload_bytes", "wire_bytes", "fp32_payload_bytes", ...}
"""
# no `from __future__ import annotations`: DDP checks the hooks' annotations at registration
import json
import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Sequence

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from ...errors import WeightzipError
from ...primitives.grad_quant import decode_packets, encode_packet, levels_for_bits, packet_nbytes

__all__ = [
    "HOOK_SCHEMES",
    "GradQuantConfig",
    "CommStats",
    "CommState",
    "GradQuantState",
    "grad_quant_hook",
    "fp32_allreduce_hook",
    "counted_torch_hook",
    "register_comm_hook",
    "bucket_lengths",
    "allreduce_wire_bytes",
    "allgather_wire_bytes",
    "fp32_bytes",
    "torch_pertensor_bytes",
    "powersgd_bytes",
    "estimate_step_bytes",
]

log = logging.getLogger("weightzip.training.distributed")

HOOK_SCHEMES = ("fp32", "mbit", "sign", "ternary", "torch_pertensor", "powersgd")


class GradQuantConfig(BaseModel):
    """How gradients are communicated in data-parallel training. JSON round-trips.

    ``scheme``: ``fp32`` (all-reduce, PyTorch's default, counted), ``mbit`` (``bits``-bit
    stochastic quantization), ``sign`` (1 bit, scale mean|g|), ``ternary`` (levels {-s, 0, s},
    1.6 bits), ``torch_pertensor`` (PyTorch's ``quantization_pertensor_hook``: uint8) or
    ``powersgd`` (PyTorch's ``powerSGD_hook`` with ``powersgd_rank``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["fp32", "mbit", "sign", "ternary", "torch_pertensor", "powersgd"] = "fp32"
    bits: int = Field(2, ge=2, le=8, description="mbit: bits per gradient element (sign + level), k = 2^(b-1) - 1")
    clip: float | None = Field(None, gt=0, description="clip g to +-clip * std(g) before scaling (paper: ~3); "
                                                       "None: no clipping")
    error_feedback: bool = Field(False, description="add the previous quantization error back before quantizing")
    granularity: Literal["tensor", "bucket"] = Field(
        "tensor", description="one scale per parameter tensor of the bucket [reconstructed], or per bucket")
    seed: int = Field(0, ge=0, description="seed of the stochastic rounding (offset by the rank)")
    powersgd_rank: int = Field(1, ge=1, description="powersgd: matrix approximation rank")
    powersgd_start_iter: int = Field(10, ge=2, description="powersgd: fp32 all-reduce for the first N steps")

    @model_validator(mode="after")
    def _check(self) -> "GradQuantConfig":
        if self.scheme == "mbit":
            levels_for_bits(self.bits)
        return self

    @property
    def quantized(self) -> bool:
        """True for this package's own quantizing hooks (mbit, sign, ternary)."""
        return self.scheme in ("mbit", "sign", "ternary")

    def label(self) -> str:
        """Short name for tables: ``fp32``, ``2-bit clip3 EF``, ``sign``, ``powersgd r1``."""
        if self.scheme == "fp32":
            return "fp32"
        if self.scheme == "powersgd":
            return f"powersgd r{self.powersgd_rank}"
        if self.scheme == "torch_pertensor":
            return "torch uint8"
        head = f"{self.bits}-bit" if self.scheme == "mbit" else self.scheme
        parts = [head, f"clip{self.clip:g}" if self.clip is not None else "noclip"]
        if self.error_feedback:
            parts.append("EF")
        return " ".join(parts)

    @classmethod
    def parse(cls, text: "str | dict | GradQuantConfig | None") -> "GradQuantConfig":
        """From a config, a dict, JSON text, or ``"mbit:bits=2,clip=3"`` / ``"fp32"`` shorthand."""
        if text is None:
            return cls()
        if isinstance(text, GradQuantConfig):
            return text
        if isinstance(text, dict):
            return cls(**text)
        text = str(text).strip()
        if text.startswith("{"):
            return cls(**json.loads(text))
        scheme, _, rest = text.partition(":")
        kw: dict[str, Any] = {"scheme": scheme.strip().replace("-", "_")}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            k, sep, v = item.partition("=")
            if not sep:
                raise WeightzipError(f"gradient quantization option {item!r} is not key=value, "
                                     "e.g. 'mbit:bits=2,clip=3'")
            v = v.strip()
            kw[k.strip()] = None if v.lower() == "none" else v  # pydantic converts the rest
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# Byte accounting
# ---------------------------------------------------------------------------------------------
def allreduce_wire_bytes(nbytes: int, world_size: int) -> float:
    """Bytes one worker transmits in a ring all-reduce of ``nbytes``: ``2 (W - 1) / W * nbytes``."""
    return 2.0 * (world_size - 1) / world_size * nbytes if world_size > 1 else 0.0


def allgather_wire_bytes(nbytes: int, world_size: int) -> float:
    """Bytes one worker transmits in a ring all-gather of its ``nbytes``: ``(W - 1) * nbytes``."""
    return float((world_size - 1) * nbytes)


def fp32_bytes(numel: int) -> int:
    """Payload of an fp32 all-reduce of ``numel`` elements: ``4 numel``."""
    return 4 * int(numel)


def torch_pertensor_bytes(numel: int) -> int:
    """Payload of PyTorch's ``quantization_pertensor_hook`` for a bucket of ``numel`` elements.

    It all-gathers ``[scale, zero_point]`` as 2 fp32 (8 bytes), then the uint8 codes (``numel``
    bytes): ``8 + numel``.
    """
    return 8 + int(numel)


def powersgd_bytes(shapes: Sequence[Sequence[int]], rank: int = 1, min_compression_rate: float = 2.0,
                   compressing: bool = True) -> int:
    """Payload of PyTorch's ``powerSGD_hook`` for a bucket holding tensors of ``shapes``.

    Follows ``powerSGD_hook``: each tensor is viewed as ``n x m`` (``n = shape[0]``); with
    ``r = min(n, m, rank)`` it is compressed when ``(n + m) r * min_compression_rate < n m``
    and then costs ``P [n, r]`` + ``Q [m, r]`` in two fp32 all-reduces; the others (biases,
    small tensors) are all-reduced uncompressed. Before ``start_powerSGD_iter``
    (``compressing=False``) the whole bucket is all-reduced in fp32.
    Returns ``4 * (sum uncompressed numel + sum (n + m) r)``.
    """
    total = 0
    for shape in shapes:
        shape = [int(s) for s in shape] or [1]
        numel = 1
        for s in shape:
            numel *= s
        if not compressing:
            total += numel
            continue
        n = shape[0]
        m = numel // n if n else 0
        r = min(n, m, rank)
        if (n + m) * r * min_compression_rate < n * m:
            total += (n + m) * r
        else:
            total += numel
    return 4 * total


@dataclass
class CommStats:
    """Cumulative bytes one worker communicated (see the module docstring for the definitions)."""

    steps: int = 0
    buckets: int = 0
    elements: int = 0
    payload_bytes: int = 0
    wire_bytes: float = 0.0
    fp32_payload_bytes: int = 0
    fp32_wire_bytes: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with the ratios ``fp32 / this`` (``inf``-free: 0 when nothing was sent)."""
        d = asdict(self)
        d["payload_ratio"] = self.fp32_payload_bytes / self.payload_bytes if self.payload_bytes else 0.0
        d["wire_ratio"] = self.fp32_wire_bytes / self.wire_bytes if self.wire_bytes else 0.0
        d["payload_bytes_per_step"] = self.payload_bytes / self.steps if self.steps else 0.0
        d["wire_bytes_per_step"] = self.wire_bytes / self.steps if self.steps else 0.0
        return d

    def copy(self) -> "CommStats":
        return CommStats(**asdict(self))

    def __sub__(self, other: "CommStats") -> "CommStats":
        return CommStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


class CommState:
    """Base state of the counted hooks: process group, world size, rank and :class:`CommStats`."""

    def __init__(self, config: GradQuantConfig, process_group: dist.ProcessGroup | None = None):
        self.config = config
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.rank = dist.get_rank(process_group)
        self.stats = CommStats()

    def count(self, bucket: dist.GradBucket, payload: int, collective: Literal["allreduce", "allgather"]) -> None:
        """Add one bucket's bytes; a step ends with the bucket DDP reduces last (``is_last()``)."""
        n = bucket.buffer().numel()
        s = self.stats
        s.buckets += 1
        s.elements += n
        s.payload_bytes += int(payload)
        s.wire_bytes += (allgather_wire_bytes if collective == "allgather" else allreduce_wire_bytes)(
            payload, self.world_size)
        s.fp32_payload_bytes += fp32_bytes(n)
        s.fp32_wire_bytes += allreduce_wire_bytes(fp32_bytes(n), self.world_size)
        if bucket.is_last():
            s.steps += 1


def bucket_lengths(bucket: dist.GradBucket, granularity: str = "tensor") -> list[int]:
    """Sizes of the segments that get their own scale: the bucket's parameter gradients, in order.

    Falls back to the whole bucket when the gradients do not tile the flat buffer exactly.
    """
    n = bucket.buffer().numel()
    if granularity == "bucket":
        return [n]
    lengths = [int(g.numel()) for g in bucket.gradients()]
    if sum(lengths) != n or any(v == 0 for v in lengths):
        lengths = [v for v in lengths if v > 0]
        if sum(lengths) != n:
            return [n]
    return lengths


class GradQuantState(CommState):
    """State of :func:`grad_quant_hook`: settings, per-bucket error-feedback residuals, RNG, stats."""

    def __init__(self, config: GradQuantConfig, process_group: dist.ProcessGroup | None = None):
        if not config.quantized:
            raise WeightzipError(f"GradQuantState is for the quantizing schemes mbit/sign/ternary, "
                                 f"not {config.scheme!r}; use register_comm_hook(model, config)")
        super().__init__(config, process_group)
        self.residuals: dict[int, Tensor] = {}
        self.layouts: dict[int, list[int]] = {}  # bucket index -> segment lengths, as last seen
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, seeded by ``(seed, rank)``: workers round independently."""
        key = str(device)
        if key not in self._generators:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.config.seed * 1_000_003 + 7919 * self.rank + 1)
            self._generators[key] = gen
        return self._generators[key]


def _gather_into(out: Tensor, packet: Tensor, group) -> torch.futures.Future:
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return gather(out, packet, group=group, async_op=True).get_future()


def grad_quant_hook(state: GradQuantState, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """DDP communication hook: quantize, all-gather the uint8 packets, decode and average.

    Register with ``ddp.register_comm_hook(state, grad_quant_hook)`` (or :func:`register_comm_hook`).
    Every worker decodes the same gathered bytes in rank order, so all end with bit-identical
    averaged gradients and hence identical weights.
    """
    c = state.config
    buf = bucket.buffer()  # [n] (fp32, or the model's dtype)
    lengths = bucket_lengths(bucket, c.granularity)
    g = buf.detach().float()  # [n]
    idx = bucket.index()
    state.layouts[idx] = lengths
    if c.error_feedback:
        res = state.residuals.get(idx)
        if res is None or res.shape != g.shape or res.device != g.device:  # buckets are rebuilt after step 1
            res = torch.zeros_like(g)
        g = g + res
    packet, own = encode_packet(g, lengths, scheme=c.scheme, bits=c.bits, clip=c.clip,
                                generator=state.generator(g.device), return_decoded=True)  # [P], [n]
    if c.error_feedback:
        state.residuals[idx] = g - own
    W = state.world_size
    out = torch.empty(W * packet.numel(), dtype=torch.uint8, device=packet.device)  # [W P]
    state.count(bucket, packet.numel(), "allgather")
    fut = _gather_into(out, packet, state.process_group)

    def decode(f: torch.futures.Future) -> Tensor:
        try:
            f.wait()  # re-raises the collective's error (a `then` callback runs on failure too)
        except Exception as e:
            raise RuntimeError(f"rank {state.rank} of {W}: the all-gather of quantized gradients failed - "
                               f"a peer process exited, hung or is unreachable: {e}") from e
        mean = decode_packets(out.view(W, -1), lengths, scheme=c.scheme, bits=c.bits)  # [n]
        buf.copy_(mean.to(buf.dtype))
        return buf

    return fut.then(decode)


def fp32_allreduce_hook(state: CommState, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """PyTorch's default behaviour (fp32 all-reduce, divided by W), counted in ``state.stats``."""
    buf = bucket.buffer()
    state.count(bucket, buf.numel() * buf.element_size(), "allreduce")
    buf.div_(state.world_size)
    fut = dist.all_reduce(buf, group=state.process_group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class _TorchHookState(CommState):
    def __init__(self, config: GradQuantConfig, process_group=None):
        super().__init__(config, process_group)
        if config.scheme == "powersgd":
            from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps

            self.inner = ps.PowerSGDState(process_group=process_group, matrix_approximation_rank=config.powersgd_rank,
                                          start_powerSGD_iter=config.powersgd_start_iter,
                                          random_seed=config.seed)
            self.hook = ps.powerSGD_hook
        elif config.scheme == "torch_pertensor":
            from torch.distributed.algorithms.ddp_comm_hooks import quantization_hooks as qh

            if str(dist.get_backend(process_group)) != "nccl":
                raise WeightzipError(
                    "PyTorch's quantization_pertensor_hook runs on NCCL only (it indexes the all_gather "
                    "future as NCCL returns it; on gloo it fails with 'invalid index of a 0-dim tensor'); "
                    "use it on GPUs, or count its bytes without running it: estimate_step_bytes(shapes, "
                    "'torch_pertensor')")

            self.inner = process_group
            self.hook = qh.quantization_pertensor_hook
        else:
            raise WeightzipError(f"no PyTorch hook for scheme {config.scheme!r}")


def counted_torch_hook(state: _TorchHookState, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """Run PyTorch's pertensor-quantization or PowerSGD hook, counting its bytes from the bucket.

    Counts (payload per worker): ``torch_pertensor_bytes(n)`` for the uint8 hook (all-gather);
    ``powersgd_bytes(shapes, rank, min_compression_rate, compressing=iter >= start)`` for
    PowerSGD (all-reduce), read from the PowerSGD state before it advances.
    """
    if state.config.scheme == "torch_pertensor":
        state.count(bucket, torch_pertensor_bytes(bucket.buffer().numel()), "allgather")
    else:
        inner = state.inner
        shapes = [tuple(g.shape) for g in bucket.gradients()]
        payload = powersgd_bytes(shapes, inner.matrix_approximation_rank, inner.min_compression_rate,
                                 compressing=inner.iter >= inner.start_powerSGD_iter)
        state.count(bucket, payload, "allreduce")
    return state.hook(state.inner, bucket)


def register_comm_hook(ddp_model: torch.nn.parallel.DistributedDataParallel,
                       config: GradQuantConfig | dict | str | None = None,
                       process_group: dist.ProcessGroup | None = None) -> CommState:
    """Register the hook of ``config`` on a DDP model; returns its state (``state.stats`` counts bytes).

    Every scheme, ``fp32`` included, is counted the same way, so runs compare byte for byte.
    """
    config = GradQuantConfig.parse(config)
    if config.quantized:
        state: CommState = GradQuantState(config, process_group)
        ddp_model.register_comm_hook(state, grad_quant_hook)
    elif config.scheme == "fp32":
        state = CommState(config, process_group)
        ddp_model.register_comm_hook(state, fp32_allreduce_hook)
    else:
        state = _TorchHookState(config, process_group)
        ddp_model.register_comm_hook(state, counted_torch_hook)
    log.debug("rank %d: registered %s gradient communication", state.rank, config.label())
    return state


def estimate_step_bytes(shapes: Sequence[Sequence[int]], config: GradQuantConfig | dict | str,
                        world_size: int = 2, bucket_sizes: Sequence[Sequence[int]] | None = None
                        ) -> dict[str, float]:
    """Bytes per worker per step for parameters of ``shapes`` without running anything.

    ``bucket_sizes``: how the parameters are grouped into buckets (lists of indices into
    ``shapes``); default: one bucket. Returns ``payload``, ``wire``, ``fp32_payload``,
    ``fp32_wire`` (see the module docstring); PowerSGD is counted once compressing.
    """
    config = GradQuantConfig.parse(config)
    groups = [list(b) for b in bucket_sizes] if bucket_sizes is not None else [list(range(len(shapes)))]
    numels = []
    for shape in shapes:
        n = 1
        for s in shape:
            n *= int(s)
        numels.append(n)
    out = {"payload": 0.0, "wire": 0.0, "fp32_payload": 0.0, "fp32_wire": 0.0}
    for grp in groups:
        lens = [numels[i] for i in grp]
        n = sum(lens)
        if config.quantized:
            seg = lens if config.granularity == "tensor" else [n]
            p = packet_nbytes(seg, scheme=config.scheme, bits=config.bits)
            out["payload"] += p
            out["wire"] += allgather_wire_bytes(p, world_size)
        elif config.scheme == "torch_pertensor":
            p = torch_pertensor_bytes(n)
            out["payload"] += p
            out["wire"] += allgather_wire_bytes(p, world_size)
        else:
            p = (fp32_bytes(n) if config.scheme == "fp32" else
                 powersgd_bytes([shapes[i] for i in grp], config.powersgd_rank))
            out["payload"] += p
            out["wire"] += allreduce_wire_bytes(p, world_size)
        out["fp32_payload"] += fp32_bytes(n)
        out["fp32_wire"] += allreduce_wire_bytes(fp32_bytes(n), world_size)
    return out

