"""Process groups, data-parallel training of the Trainer, and launching workers.

Three ways to get several processes (see ``docs/distributed.md``):

* ``weightzip train MODEL -d DATA -o OUT --nproc-per-node N [--grad-bits 2 ...]``: the CLI
  re-runs itself under ``torchrun`` (:func:`relaunch`), multi-node with ``--nnodes`` and
  ``--rdzv-endpoint``;
* ``torchrun --nproc-per-node N -m weightzip <command> ...``: any command whose training goes
  through the :class:`~weightzip.training.trainer.Trainer` (training, the stages of a compression recipe)
  becomes data-parallel: the first Trainer initializes the process group from torchrun's
  environment (:func:`init_process_group`), gradient communication from
  ``$WEIGHTZIP_GRAD_QUANT`` (e.g. ``mbit:bits=2,clip=3``);
* :func:`run_local`: N processes on 127.0.0.1 from Python (tests, benchmarks).

Inside a worker the Trainer calls :func:`setup_trainer`: when ``torch.distributed`` is
initialized with ``W > 1`` processes it wraps the model in ``DistributedDataParallel`` with the
communication hook of :func:`current_config`, gives each rank its own part of every epoch
(:func:`shard_loader`: a ``DistributedSampler`` for map-style image data - ``batch_size`` is per
process, the global batch is ``W * batch_size``; a contiguous ``1/W`` of the token stream for
language models), sums the training metrics over ranks, keeps buffers (BatchNorm statistics)
equal, and lets only rank 0 write checkpoints and run records.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ...errors import WeightzipError
from .grad_quant import CommState, GradQuantConfig, register_comm_hook

__all__ = [
    "ENV_GRAD_QUANT",
    "ENV_TIMEOUT",
    "configure",
    "current_config",
    "launched_by_torchrun",
    "init_process_group",
    "shutdown",
    "rank_and_world",
    "is_writer",
    "shard_loader",
    "ShardedLoaders",
    "DistributedTraining",
    "setup_trainer",
    "describe_comm_error",
    "comm_errors",
    "torchrun_command",
    "strip_launch_options",
    "relaunch",
    "cli_setup",
    "run_local",
    "free_port",
]

log = logging.getLogger("weightzip.training.distributed")

ENV_GRAD_QUANT = "WEIGHTZIP_GRAD_QUANT"
"""Environment variable with the gradient communication of torchrun workers (``mbit:bits=2,clip=3``)."""
ENV_TIMEOUT = "WEIGHTZIP_DIST_TIMEOUT"
"""Environment variable: seconds before a collective that waits on a lost peer fails (default 300)."""
DEFAULT_TIMEOUT_S = 300.0

_CONFIG: GradQuantConfig | None = None


# ---------------------------------------------------------------------------------------------
# Settings and process groups
# ---------------------------------------------------------------------------------------------
def configure(grad_quant: GradQuantConfig | dict | str | None) -> GradQuantConfig | None:
    """Set this process's gradient communication for every later data-parallel Trainer.

    ``None`` resets to the default (``$WEIGHTZIP_GRAD_QUANT``, else fp32 all-reduce).
    """
    global _CONFIG
    _CONFIG = None if grad_quant is None else GradQuantConfig.parse(grad_quant)
    return _CONFIG


def current_config() -> GradQuantConfig:
    """The configured gradient communication: :func:`configure`, else ``$WEIGHTZIP_GRAD_QUANT``, else fp32."""
    if _CONFIG is not None:
        return _CONFIG
    env = os.environ.get(ENV_GRAD_QUANT)
    if env:
        try:
            return GradQuantConfig.parse(env)
        except Exception as e:
            raise WeightzipError(f"${ENV_GRAD_QUANT}={env!r} is not a gradient quantization setting "
                                 f"({e}); use e.g. 'fp32', 'mbit:bits=2,clip=3' or 'sign:error_feedback=true'") from e
    return GradQuantConfig()


def launched_by_torchrun() -> bool:
    """True in a worker started by ``torchrun`` (its ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` are set)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _timeout(timeout_s: float | None) -> datetime.timedelta:
    if timeout_s is None:
        raw = os.environ.get(ENV_TIMEOUT)
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise WeightzipError(f"${ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    if timeout_s <= 0:
        raise WeightzipError(f"the process-group timeout must be > 0 seconds, got {timeout_s}")
    return datetime.timedelta(seconds=timeout_s)


def _backend_for(backend: str, device: str | torch.device | None) -> str:
    if backend != "auto":
        if backend not in ("gloo", "nccl"):
            raise WeightzipError(f"unknown backend {backend!r}; use gloo (CPU), nccl (GPU) or auto")
        return backend
    dev = None if device is None or str(device) == "auto" else torch.device(device)
    use_cuda = torch.cuda.is_available() if dev is None else dev.type == "cuda"
    return "nccl" if use_cuda and dist.is_nccl_available() else "gloo"


def init_process_group(backend: str = "auto", *, rank: int | None = None, world_size: int | None = None,
                       init_method: str | None = None, timeout_s: float | None = None,
                       device: str | torch.device | None = None) -> tuple[int, int]:
    """Join the default process group; returns ``(rank, world_size)``. No-op when already joined.

    Without ``rank``/``world_size`` they come from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). ``backend="auto"``: ``nccl`` when the
    training device is a GPU, else ``gloo``. With CUDA the process uses GPU ``LOCAL_RANK``
    (``torch.cuda.set_device``), so ``device="cuda"`` means each worker's own GPU.
    ``timeout_s`` (default ``$WEIGHTZIP_DIST_TIMEOUT`` or 300 s): a collective waiting for a
    peer that hangs fails after this long instead of blocking forever.
    """
    if not dist.is_available():
        raise WeightzipError("torch.distributed is not available in this PyTorch build; "
                             "install a build with distributed support")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if rank is None and not launched_by_torchrun():
        raise WeightzipError("no process group to join: start the workers with torchrun "
                             "(or `weightzip train ... --nproc-per-node N`), or pass rank/world_size/init_method")
    backend = _backend_for(backend, device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)) % max(1, torch.cuda.device_count()))
    kwargs: dict[str, Any] = {"backend": backend, "timeout": _timeout(timeout_s)}
    if rank is not None:
        kwargs.update(rank=rank, world_size=world_size, init_method=init_method or "env://")
    dist.init_process_group(**kwargs)
    r, w = dist.get_rank(), dist.get_world_size()
    log.debug("rank %d of %d joined (%s)", r, w, backend)
    return r, w


def shutdown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer() -> bool:
    """True on the process that writes files: rank 0, or a process outside any group."""
    return rank_and_world()[0] == 0


# ---------------------------------------------------------------------------------------------
# Data: each rank its own part of the epoch
# ---------------------------------------------------------------------------------------------
class _StridedLoader:
    """Batches ``rank, rank + W, ...`` of a loader with a length (the ``W`` ranks see the same order)."""

    def __init__(self, base: Any, rank: int, world_size: int):
        try:
            n = len(base)
        except TypeError:
            raise WeightzipError(f"cannot split a training loader without a length ({type(base).__name__}) "
                                 "among processes; give it __len__ or use a DataLoader") from None
        if n < world_size:
            raise WeightzipError(f"the training loader has {n} batch(es), fewer than the {world_size} processes")
        self.base, self.rank, self.world_size = base, rank, world_size
        self.sampler = getattr(base, "sampler", None)  # the trainer reseeds it: every rank draws the same order
        self.dataset = getattr(base, "dataset", None)
        self.batch_size = getattr(base, "batch_size", None)

    def __len__(self) -> int:
        return len(self.base) // self.world_size

    def __iter__(self) -> Iterator[Any]:
        stop = len(self) * self.world_size  # equal step counts on every rank
        for i, batch in enumerate(self.base):
            if i >= stop:
                break
            if i % self.world_size == self.rank:
                yield batch

    def set_epoch(self, epoch: int) -> None:
        fn = getattr(self.base, "set_epoch", None)
        if callable(fn):
            fn(epoch)


def shard_loader(loader: Any, rank: int, world_size: int, seed: int = 0) -> Any:
    """This rank's training loader: every rank gets ``1/W`` of each epoch, all the same number of steps.

    * ``DataLoader`` over a map-style dataset: the same loader with a
      ``DistributedSampler(shuffle=<the original shuffled>, seed=seed, drop_last=False)``
      (``batch_size`` per process; the sampler pads with repeated examples so that ranks take
      equal steps; its order is a function of ``(seed, epoch)`` through ``set_epoch``);
    * a language-model stream (``tokens``, ``batch_size``, ``bptt``, e.g. ``LMBatches``): the
      ``rank``-th contiguous ``1/W`` of the tokens, batchified the same way;
    * any other loader with a length: batches ``rank, rank + W, ...``.
    """
    from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

    if world_size <= 1:
        return loader
    if (isinstance(loader, DataLoader) and loader.batch_size is not None
            and not isinstance(loader.dataset, IterableDataset)
            and isinstance(loader.sampler, (RandomSampler, SequentialSampler))):
        if len(loader.dataset) < world_size:
            raise WeightzipError(f"the training set has {len(loader.dataset)} example(s), fewer than the "
                                 f"{world_size} processes")
        sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank,
                                     shuffle=isinstance(loader.sampler, RandomSampler), seed=seed, drop_last=False)
        extra: dict[str, Any] = {}
        if loader.num_workers > 0:
            extra.update(persistent_workers=loader.persistent_workers, prefetch_factor=loader.prefetch_factor)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout,
                          worker_init_fn=loader.worker_init_fn, generator=loader.generator, **extra)
    tokens = getattr(loader, "tokens", None)
    if isinstance(tokens, torch.Tensor) and hasattr(loader, "bptt") and hasattr(loader, "batch_size"):
        part = tokens.numel() // world_size
        if part < 2 * loader.batch_size:
            raise WeightzipError(f"{tokens.numel()} tokens split among {world_size} processes leave {part} each, "
                                 f"too few for batch_size {loader.batch_size}")
        return type(loader)(tokens[rank * part:(rank + 1) * part], loader.batch_size, loader.bptt)
    return _StridedLoader(loader, rank, world_size)


class ShardedLoaders:
    """``loaders`` with ``.train`` replaced by this rank's part (:func:`shard_loader`); the rest delegates."""

    def __init__(self, loaders: Any, rank: int, world_size: int, seed: int = 0):
        self._base = loaders
        self.train = shard_loader(loaders.train, rank, world_size, seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


# ---------------------------------------------------------------------------------------------
# The Trainer's data-parallel helper
# ---------------------------------------------------------------------------------------------
class DistributedTraining:
    """What a data-parallel :class:`~weightzip.training.trainer.Trainer` holds: the DDP wrapper and the hook state.

    ``ddp``: ``DistributedDataParallel(model)`` with the communication hook of ``config``
    registered (``comm.stats`` counts the bytes); ``rank``, ``world_size``, ``backend``.
    ``bucket_cap_mb``: DDP's bucket size (default: DDP's 25 MiB, first bucket 1 MiB). PowerSGD on
    gloo gets one bucket for the whole model: its hook issues further all-reduces from future
    callbacks, which gloo may run in a different order on different ranks when several buckets
    are in flight ("Received data size doesn't match expected size").
    """

    def __init__(self, model: nn.Module, config: GradQuantConfig | dict | str | None = None, *,
                 process_group: dist.ProcessGroup | None = None, find_unused_parameters: bool = False,
                 bucket_cap_mb: float | None = None):
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.config = GradQuantConfig.parse(config if config is not None else current_config())
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self.backend = str(dist.get_backend(process_group))
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.module = model
        if bucket_cap_mb is None and self.config.scheme == "powersgd" and self.backend == "gloo":
            bucket_cap_mb = max(25.0, 2 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20)
        self.ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                       process_group=process_group, find_unused_parameters=find_unused_parameters,
                       bucket_cap_mb=bucket_cap_mb)
        self.comm: CommState = register_comm_hook(self.ddp, self.config, process_group)
        self._epoch_start = self.comm.stats.copy()

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def end_epoch(self, *sums: float) -> tuple[float, ...]:
        """Sum per-rank totals (loss sums, counts) over ranks; make every buffer equal to rank 0's.

        Buffers (BatchNorm running statistics) are broadcast from rank 0 so that validation,
        the plateau schedule and the checkpoint agree on every rank.
        """
        dev = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        t = torch.tensor(sums, dtype=torch.float64, device=dev)
        dist.all_reduce(t, group=self.process_group)
        for b in self.module.buffers():
            dist.broadcast(b, src=dist.get_global_rank(self.process_group, 0) if self.process_group else 0,
                           group=self.process_group)
        return tuple(float(v) for v in t.tolist())

    def epoch_metrics(self) -> dict[str, float]:
        """Bytes of the epoch that just ended (per worker), for the trainer's history."""
        now = self.comm.stats.copy()
        d = now - self._epoch_start
        self._epoch_start = now
        return {"comm_steps": d.steps, "comm_payload_bytes": d.payload_bytes, "comm_wire_bytes": d.wire_bytes,
                "comm_fp32_payload_bytes": d.fp32_payload_bytes, "comm_fp32_wire_bytes": d.fp32_wire_bytes}

    def summary(self) -> dict[str, Any]:
        """World size, backend, the gradient communication and its cumulative byte counts."""
        return {"world_size": self.world_size, "backend": self.backend, "grad_quant": self.config.model_dump(),
                "grad_quant_label": self.config.label(), "comm": self.comm.stats.as_dict()}


def setup_trainer(trainer: Any) -> DistributedTraining | None:
    """Called by the Trainer at construction: make it data-parallel when there are several processes.

    Returns ``None`` (train alone) when ``torch.distributed`` is not initialized - unless this
    process was started by torchrun with ``WORLD_SIZE > 1``, in which case the process group is
    joined here - or when the group has one process. Otherwise wraps ``trainer.model`` in DDP
    (``trainer.train_module``), shards ``trainer.loaders.train`` and returns the helper.
    ``trainer.config.distributed=True`` makes the absence of a process group an error.
    """
    required = getattr(trainer.config, "distributed", None) is True
    if not dist.is_available() or not dist.is_initialized():
        if launched_by_torchrun() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if trainer.device.type == "cuda" and trainer.device.index is None:  # this worker's own GPU
                trainer.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
                trainer.model.to(trainer.device)
            init_process_group(device=trainer.device)
        elif required:
            raise WeightzipError("TrainConfig.distributed=True but torch.distributed is not initialized: "
                                 "launch with torchrun or `weightzip train ... --nproc-per-node N`")
        else:
            return None
    if dist.get_world_size() <= 1:
        return None
    helper = DistributedTraining(trainer.model)
    trainer.loaders = ShardedLoaders(trainer.loaders, helper.rank, helper.world_size, seed=trainer.config.seed)
    trainer.train_module = helper.ddp
    if helper.rank == 0:
        log.info("data-parallel training on %d processes (%s), gradients: %s", helper.world_size,
                 helper.backend, helper.config.label())
    return helper


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
_COMM_MARKERS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "timed out",
                 "timeout", "processgroup", "broken pipe", "peer", "collective", "socket")


def describe_comm_error(e: BaseException) -> str | None:
    """A clear one-line message when ``e`` is a failed collective (a peer died, hung or vanished)."""
    text = f"{type(e).__name__}: {e}"
    is_dist = isinstance(e, getattr(dist, "DistError", ())) or any(m in text.lower() for m in _COMM_MARKERS)
    if not is_dist:
        return None
    rank, world = rank_and_world()
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return (f"rank {rank} of {world}: a collective operation failed - another worker process exited, hung "
            f"past the timeout or became unreachable ({first[:300]}). Look at the other ranks' output for "
            f"the first error; ${ENV_TIMEOUT} sets the timeout (now {_timeout(None).total_seconds():g}s)")


@contextlib.contextmanager
def comm_errors() -> Iterator[None]:
    """Turn a failed collective into a :class:`WeightzipError` with :func:`describe_comm_error`'s message."""
    try:
        yield
    except WeightzipError:
        raise
    except (RuntimeError, OSError) as e:
        msg = describe_comm_error(e)
        if msg is None:
            raise
        raise WeightzipError(msg) from e


# ---------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------
_LAUNCH_OPTIONS = ("--nproc-per-node", "--nnodes", "--rdzv-endpoint")


def strip_launch_options(args: Sequence[str]) -> list[str]:
    """``args`` without ``--nproc-per-node N``, ``--nnodes N``, ``--rdzv-endpoint H:P`` (also ``--opt=value``)."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in _LAUNCH_OPTIONS:
            skip = True
            continue
        if any(a.startswith(o + "=") for o in _LAUNCH_OPTIONS):
            continue
        out.append(a)
    return out


def torchrun_command(args: Sequence[str], nproc_per_node: int, *, nnodes: str | int | None = None,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "weightzip",
                     python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run <rendezvous> -m weightzip <args>`` (launch options removed).

    One node (no ``nnodes``/``rdzv_endpoint``): ``--standalone`` (a local rendezvous on a free
    port). Several nodes: ``--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
    --rdzv-id ID``, the same command on every node.
    """
    if nproc_per_node < 1:
        raise WeightzipError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node)]
    if nnodes is None and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise WeightzipError("--nnodes needs --rdzv-endpoint HOST:PORT (a node every worker can reach)")
        cmd += ["--nnodes", str(nnodes or 1), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint,
                "--rdzv-id", rdzv_id]
    return cmd + ["-m", "weightzip", *strip_launch_options(args)]


def relaunch(args: Sequence[str], nproc_per_node: int, *, nnodes: str | int | None = None,
             rdzv_endpoint: str | None = None) -> int:
    """Run this command line again under torchrun; returns torchrun's exit status.

    Refused inside a torchrun worker (the options would start processes from processes).
    """
    if launched_by_torchrun():
        raise WeightzipError("--nproc-per-node/--nnodes are for the launching command; this process is "
                             "already a torchrun worker: drop them")
    cmd = torchrun_command(args, nproc_per_node, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    log.info("launching: %s", shlex.join(cmd))
    return subprocess.run(cmd, env=env).returncode


def cli_setup(*, grad_quant: str | None = None, bits: int | None = None, clip_sigma: float | None = None,
              error_feedback: bool | None = None, backend: str = "auto",
              device: str | None = None) -> tuple[int, int]:
    """For CLI commands: join torchrun's process group (if a worker) and set the gradient communication.

    ``grad_quant`` (``fp32``, ``mbit``, ``sign``, ``ternary``, ``torch_pertensor``, ``powersgd``;
    default ``mbit`` when ``bits`` is given, else ``fp32``), ``bits``, ``clip_sigma`` (0 = no
    clipping) and ``error_feedback`` override ``$WEIGHTZIP_GRAD_QUANT``. Non-zero ranks log
    warnings only. Returns ``(rank, world_size)``; ``(0, 1)`` outside torchrun.
    """
    given = {k: v for k, v in (("bits", bits), ("error_feedback", error_feedback)) if v is not None}
    if clip_sigma is not None:
        given["clip"] = clip_sigma if clip_sigma > 0 else None
    scheme = grad_quant.replace("-", "_") if grad_quant else None
    if scheme is None and ("bits" in given or "clip" in given):
        scheme = "mbit"
    if scheme is not None or given:
        base = current_config().model_dump()
        if scheme is not None and scheme != base["scheme"]:
            base = GradQuantConfig().model_dump()
            base["scheme"] = scheme
        configure(GradQuantConfig(**{**base, **given}))
    if not launched_by_torchrun():
        if scheme is not None and scheme != "fp32":
            log.warning("gradient quantization only acts between processes; add --nproc-per-node N")
        return 0, 1
    rank, world = init_process_group(backend, device=device)
    if rank != 0:
        logging.getLogger("weightzip").setLevel(logging.WARNING)
    return rank, world


# ---------------------------------------------------------------------------------------------
# Local multi-process runs (tests, benchmarks)
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, backend: str, timeout_s: float, threads: int | None,
                  fn: Callable[..., Any], args: tuple, queue: Any) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    os.environ[ENV_TIMEOUT] = str(timeout_s)
    t0 = time.perf_counter()
    try:
        init_process_group(backend, rank=rank, world_size=world_size,
                           init_method=f"tcp://127.0.0.1:{port}", timeout_s=timeout_s)
        with comm_errors():
            result = fn(rank, world_size, *args)
        queue.put((rank, "ok", result, time.perf_counter() - t0))
    except BaseException as e:  # reported to the parent, which raises
        queue.put((rank, "error", f"{type(e).__name__}: {e}", time.perf_counter() - t0,
                   "".join(traceback.format_exception(e))[-4000:]))
    finally:
        try:
            shutdown()
        except Exception:
            pass


def run_local(fn: Callable[..., Any], nprocs: int, args: Sequence[Any] = (), *, backend: str = "gloo",
              timeout_s: float = 60.0, deadline_s: float | None = None, threads: int | None = 1,
              raise_errors: bool = True) -> list[dict[str, Any]]:
    """Run ``fn(rank, world_size, *args)`` in ``nprocs`` spawned processes joined on 127.0.0.1.

    ``fn`` and ``args`` must be picklable (a module-level function). Each process sets
    ``torch.set_num_threads(threads)`` and a process-group timeout of ``timeout_s``. Returns one
    dict per rank: ``{"rank", "ok", "result" | "error", "seconds"}``. A rank that exits without
    reporting (killed, ``os._exit``) is ``ok=False`` with its exit code. Processes still running
    after ``deadline_s`` (default ``3 * timeout_s``) are terminated. With ``raise_errors`` a
    failed rank raises :class:`WeightzipError` naming every failure.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_local_worker, args=(r, nprocs, port, backend, timeout_s, threads, fn,
                                                      tuple(args), queue), daemon=False) for r in range(nprocs)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + (deadline_s if deadline_s is not None else 3 * timeout_s)
    results: dict[int, dict[str, Any]] = {}
    while len(results) < nprocs:
        while not queue.empty():
            item = queue.get()
            rank, status = item[0], item[1]
            results[rank] = ({"rank": rank, "ok": True, "result": item[2], "seconds": item[3]} if status == "ok"
                             else {"rank": rank, "ok": False, "error": item[2], "seconds": item[3],
                                   "traceback": item[4]})
        if len(results) == nprocs:
            break
        alive = [p for p in procs if p.is_alive()]
        for r, p in enumerate(procs):
            if r not in results and not p.is_alive() and p.exitcode is not None:
                time.sleep(0.2)  # its report may still be in the pipe
                if queue.empty():
                    results[r] = {"rank": r, "ok": False, "error": f"process exited with code {p.exitcode} "
                                  "without reporting", "seconds": None}
        if not alive and queue.empty():
            break
        if time.monotonic() > deadline:
            for p in alive:
                p.terminate()
            for r in range(nprocs):
                results.setdefault(r, {"rank": r, "ok": False, "error": f"still running after the deadline "
                                       f"({deadline_s or 3 * timeout_s:g}s): terminated", "seconds": None})
            break
        time.sleep(0.05)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    out = [results.get(r, {"rank": r, "ok": False, "error": "no report", "seconds": None}) for r in range(nprocs)]
    if raise_errors and not all(r["ok"] for r in out):
        bad = "; ".join(f"rank {r['rank']}: {r['error']}" for r in out if not r["ok"])
        tb = next((r.get("traceback") for r in out if r.get("traceback")), "")
        raise WeightzipError(f"{sum(not r['ok'] for r in out)} of {nprocs} worker(s) failed: {bad}"
                             + (f"\n{tb}" if tb else ""))
    return out

