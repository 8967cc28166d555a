"""Design-space exploration: train every design, measure it, keep the Pareto-optimal ones.

``weightzip explore mlp --space recipes/space-structured.yaml --storage sqlite:///study.db``
calls :func:`explore`. The space file (see ``recipes/space-structured.yaml``) names a model
family, a dataset, TOPOLOGIES (constructor arguments: shallow-dense, wide-sparse,
deep-sparse, ...), the axes ``w_bits x a_bits x compression x topology``, the base
``structured_qat`` stage (block size, training budget, ...) and the objectives.

Each design (one Optuna trial):

1. builds the topology (seeded) and runs a one-stage recipe ``structured_qat`` with the
   design's ``w_bits``, ``a_bits``, ``compression`` through :func:`weightzip.compress`;
2. measures error (``eval_split``, and test), the memory model
   (:func:`weightzip.analysis.memory.memory_report`: weight, activation, peak, total);
3. writes the design's ``.wz`` (:func:`weightzip.save`) and, with ``verify_wz``, loads it back
   and evaluates it, so the file's accuracy is recorded next to the in-memory one;
4. stores every metric as the trial user attribute ``metrics`` (a dict; ``design`` too) and
   returns the objectives
   (default: minimize error, minimize ``total_memory_bits``).

Storage: an Optuna RDB study - ``sqlite:///<out_dir>/study.db`` by default, or any database
URL (PostgreSQL for many machines). ``load_if_exists``: running the same command again
resumes the study; several worker processes (or machines) running it at once share the
work. Trials of a killed worker stop sending heartbeats and are failed and retried by the
next worker (``heartbeat_interval`` / ``grace_period``; a starting worker looks first); a design
whose every trial failed is queued again once (never one that another trial completed or runs).
The default sampler ``bruteforce`` visits every design once (Optuna's BruteForceSampler, which skips designs other workers are running; two workers asking at the
same instant, or one asking when every design is done or running, can still train a design
twice: :func:`study_trials` keeps the first); ``nsga2``, ``tpe`` and ``random`` sample larger
spaces (give ``n_trials``).

``n_trials`` counts COMPLETE trials of the whole study (all workers): a worker stops when the
study holds that many (or, with ``bruteforce``, when every design is done).

After optimizing, :func:`write_report` extracts the Pareto fronts (error vs total memory, and
error vs weight memory), and writes ``explore.json``, ``pareto.md``, ``front.png``,
``front_weight.png`` and ``memory_breakdown.png`` to ``out_dir``.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InvalidModelError, RecipeError, WeightzipError

__all__ = ["ExploreSpace", "Topology", "ExploreResult", "explore", "load_space", "design_label",
           "write_report", "study_trials"]

FLOAT_BITS = 32


# ---------------------------------------------------------------------------------------------
# The space file


class Topology(BaseModel):
    """One network shape: constructor arguments, and optionally the compressions it allows."""

    model_config = ConfigDict(extra="forbid")
    model_args: dict[str, Any] = {}
    compression: list[int] | None = Field(None, description="allowed c (None: the space's list); [1] = dense")
    description: str = ""


class Axes(BaseModel):
    """The design axes; 32 bits = float (no quantization)."""

    model_config = ConfigDict(extra="forbid")
    w_bits: list[int] = [2]
    a_bits: list[int] = [2]
    compression: list[int] = [1]
    topology: list[str]


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    direction: Literal["minimize", "maximize"] = "minimize"


class SamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["bruteforce", "nsga2", "tpe", "random"] = "bruteforce"
    seed: int = 0


OBJECTIVE_NAMES = ("error", "test_error", "total_memory_bits", "weight_memory_bits",
                   "activation_memory_bits", "peak_activation_memory_bits", "file_bytes")


class ExploreSpace(BaseModel):
    """A validated space file (YAML). See ``recipes/space-structured.yaml``.

    ``method`` is the base ``structured_qat`` stage (without ``method``); the design sets
    ``w_bits``, ``a_bits`` and ``compression``. ``method.first_last_bits`` is a FLOOR here:
    the first/last layer gets ``max(w_bits, floor)`` bits (so float designs stay float).
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    model: str | None = None
    model_args: dict[str, Any] = {}
    data: str = "mnist"
    data_args: dict[str, Any] = {}
    topologies: dict[str, Topology]
    space: Axes
    method: dict[str, Any] = {}
    objectives: list[Objective] = [Objective(name="error"), Objective(name="total_memory_bits")]
    sampler: SamplerConfig = SamplerConfig()
    memory: dict[str, int] = {"input_bits": 8, "output_bits": 32}
    eval_split: Literal["val", "test"] = "val"
    seed: int = 0
    save_wz: bool = True
    verify_wz: bool = True

    @model_validator(mode="after")
    def _check(self):
        missing = [t for t in self.space.topology if t not in self.topologies]
        if missing:
            raise ValueError(f"space.topology names {missing} not defined under topologies "
                             f"(defined: {sorted(self.topologies)})")
        bad = [o.name for o in self.objectives if o.name not in OBJECTIVE_NAMES]
        if bad:
            raise ValueError(f"unknown objective(s) {bad}; valid: {', '.join(OBJECTIVE_NAMES)}")
        for k in ("w_bits", "a_bits"):
            vals = getattr(self.space, k)
            if not vals or any(not 1 <= v <= FLOAT_BITS for v in vals):
                raise ValueError(f"space.{k} must be a non-empty list of bits in [1, 32], got {vals}")
        if not self.space.compression or any(c < 1 for c in self.space.compression):
            raise ValueError(f"space.compression must be a non-empty list of ints >= 1, got {self.space.compression}")
        reserved = {"method", "w_bits", "a_bits", "compression"} & set(self.method)
        if reserved:
            raise ValueError(f"method must not set {sorted(reserved)}: they are the design axes")
        return self

    def n_designs(self) -> int:
        n = 0
        for t in self.space.topology:
            n += len(self.space.w_bits) * len(self.space.a_bits) * len(self._compressions(t))
        return n

    def _compressions(self, topology: str) -> list[int]:
        allowed = self.topologies[topology].compression
        return list(allowed) if allowed is not None else list(self.space.compression)


def load_space(path: str | Path) -> ExploreSpace:
    """Read and validate a space YAML file; errors name the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"space file {str(p)!r} not found (the shipped one is recipes/space-structured.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML: {e}") from None
    try:
        return ExploreSpace(**(data or {}))
    except ValidationError as e:
        msg = "; ".join(f"field '{'.'.join(str(x) for x in err['loc']) or '(space)'}': {err['msg']}"
                        for err in e.errors())
        raise RecipeError(f"{p}: {msg}") from None


def design_label(d: dict[str, Any]) -> str:
    """``deep-sparse W2A2 c4`` (``W32`` = float weights, ``A32`` = float activations)."""
    return f"{d['topology']} W{d['w_bits']}A{d['a_bits']} c{d['compression']}"


# ---------------------------------------------------------------------------------------------
# One design


def _stage(space: ExploreSpace, design: dict[str, Any]) -> dict[str, Any]:
    stage = {"method": "structured_qat", **space.method, "w_bits": design["w_bits"],
             "a_bits": design["a_bits"], "compression": design["compression"]}
    fl = space.method.get("first_last_bits")
    if fl is not None:
        pair = (fl, fl) if isinstance(fl, int) else tuple(fl)
        stage["first_last_bits"] = [min(FLOAT_BITS, max(design["w_bits"], int(b if b is not None else 0)))
                                    for b in pair]
    if design["w_bits"] == 1 and stage.get("weight_quantizer") == "ternary":
        stage["weight_quantizer"] = "binary"
    return stage


def train_design(space: ExploreSpace, model_name: str, design: dict[str, Any], loaders, *,
                 device: str = "cpu", wz_path: str | Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and measure one design; returns the metrics stored as trial user attributes."""
    import torch

    from .. import api
    from ..analysis.memory import memory_report
    from ..core.recipe import Recipe
    from ..core.registry import create_model
    from ..training.evaluate import evaluate
    t0 = time.perf_counter()
    info = getattr(loaders, "info", None) or {}
    kwargs = {k: info[k] for k in ("num_classes", "in_channels", "image_size") if k in info}
    kwargs.update(space.model_args)
    kwargs.update(space.topologies[design["topology"]].model_args)
    torch.manual_seed(space.seed)
    model = create_model(model_name, **kwargs)
    recipe = Recipe.from_dict({
        "name": f"{space.name}: {design_label(design)}", "model": model_name, "model_args": kwargs,
        "data": space.data, "data_args": space.data_args, "stages": [_stage(space, design)]},
        source=f"design {design_label(design)}")
    api.compress(model, recipe, loaders=loaders, device=device, seed=space.seed, log=lambda *_: None)
    model.eval()
    task = getattr(loaders, "task", "classify")
    split = loaders.val if space.eval_split == "val" and loaders.val is not None else loaders.test
    ev = evaluate(model, split, task, device)
    te = evaluate(model, loaders.test, task, device) if loaders.test is not None else ev
    shape = (info["in_channels"], info["image_size"], info["image_size"]) if "image_size" in info else None
    if shape is None:
        x, _ = next(iter(loaders.train))
        shape = tuple(x.shape[1:])
    mem = memory_report(model.cpu(), shape, **space.memory)
    model.to(device)
    out: dict[str, Any] = {
        "design": design_label(design), **design,
        "params": sum(p.numel() for p in model.parameters()),
        "accuracy": ev["accuracy"], "error": 1.0 - ev["accuracy"], "eval_split": space.eval_split,
        "test_accuracy": te["accuracy"], "test_error": 1.0 - te["accuracy"],
        **{k: mem[k] for k in ("weight_memory_bits", "kept_weight_bits", "block_mask_bits",
                               "float_param_bits", "fp32_weight_memory_bits", "weight_memory_reduction",
                               "activation_memory_bits", "peak_activation_memory_bits",
                               "fp32_activation_memory_bits", "total_memory_bits")},
        "layer_bits": {L["name"]: L["w_bits"] for L in mem["layers"]},
        "model_args": kwargs, "stage": _stage(space, design),
    }
    if space.save_wz and wz_path is not None:
        wz_path = Path(wz_path)
        wz_path.parent.mkdir(parents=True, exist_ok=True)
        rep = api.save(model.cpu(), wz_path, recipe=recipe,
                       metrics={k: out[k] for k in ("accuracy", "test_accuracy", "weight_memory_bits",
                                                   "activation_memory_bits", "total_memory_bits")})
        out.update({"wz_path": str(wz_path), "file_bytes": rep.file_bytes})
        if space.verify_wz:
            loaded = api.load(wz_path)
            out["wz_test_accuracy"] = evaluate(loaded, loaders.test, task, "cpu")["accuracy"]
    out["seconds"] = time.perf_counter() - t0
    log(f"  {out['design']}: {space.eval_split} acc {out['accuracy']:.4f}, test acc {out['test_accuracy']:.4f}, "
        f"W {out['weight_memory_bits'] / 8192:.1f} KiB, A {out['activation_memory_bits'] / 8192:.2f} KiB "
        f"({out['seconds']:.1f}s)")
    return out


# ---------------------------------------------------------------------------------------------
# The study


def _storage(url: str, heartbeat_interval: int | None, grace_period: int | None,
             on_stale: Callable[[Any, Any], None] | None = None):
    """An Optuna RDBStorage for ``url``; with ``heartbeat_interval`` a RUNNING trial whose heartbeat
    is older than ``grace_period`` (default 4 intervals) is failed by the next worker that looks
    (:func:`_fail_stale`) and ``on_stale(study, trial)`` is called for it."""
    import optuna
    from optuna.storages import RDBStorage

    if "://" not in url:
        raise WeightzipError(f"storage {url!r} is not a database URL; use e.g. sqlite:///study.db or "
                             "postgresql://user:pass@host/db")
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kw = {}
    if heartbeat_interval:
        kw = {"heartbeat_interval": int(heartbeat_interval), "grace_period": int(grace_period or 4 * heartbeat_interval),
              "heartbeat_stale_trial_callback": on_stale}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Workers starting together race to create the tables (alembic's version row is unique):
    # serialize creation with a lock file next to a SQLite database, and retry for other URLs.
    lock = None
    if url.startswith("sqlite:///"):
        lock = Path(url[len("sqlite:///"):]).expanduser().with_suffix(".lock")
    for attempt in range(6):
        try:
            with _file_lock(lock):
                return RDBStorage(url, engine_kwargs=engine_kwargs, **kw)
        except Exception as e:  # sqlalchemy IntegrityError / OperationalError during creation
            if attempt == 5 or type(e).__module__.split(".")[0] != "sqlalchemy":
                raise
            time.sleep(0.5 * (attempt + 1))


class _file_lock:
    """``fcntl.flock`` on ``path`` (no-op for None or where fcntl is missing)."""

    def __init__(self, path: Path | None):
        self.path, self.fd = path, None

    def __enter__(self):
        if self.path is not None:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not POSIX
                return self
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        return False


def _sampler(cfg: SamplerConfig):
    import optuna

    s = cfg.name
    if s == "bruteforce":
        return optuna.samplers.BruteForceSampler(seed=cfg.seed)
    if s == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed)
    if s == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed)
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def _suggest(trial, space: ExploreSpace) -> dict[str, Any]:
    topo = trial.suggest_categorical("topology", space.space.topology)
    w = trial.suggest_categorical("w_bits", space.space.w_bits)
    a = trial.suggest_categorical("a_bits", space.space.a_bits)
    allowed = space._compressions(topo)
    if len(allowed) == 1:
        c = allowed[0]
    elif allowed == list(space.space.compression):
        c = trial.suggest_categorical("compression", allowed)
    else:  # a topology-specific list: its own parameter (Optuna needs fixed choices per name)
        c = trial.suggest_categorical(f"compression[{topo}]", allowed)
    return {"topology": topo, "w_bits": int(w), "a_bits": int(a), "compression": int(c)}


def study_trials(study) -> list[dict[str, Any]]:
    """Finished designs of a study: the ``metrics`` attribute + ``trial`` number; one per design
    (the first to complete, when concurrent workers ran one twice)."""
    import optuna

    seen, out = set(), []
    for t in sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: t.number):
        a = dict(t.user_attrs.get("metrics") or {})
        if "design" not in a or a["design"] in seen:
            continue
        seen.add(a["design"])
        a["trial"] = t.number
        out.append(a)
    return out


@dataclass
class ExploreResult:
    """What :func:`explore` returns: the study, every finished design, the Pareto designs."""

    study_name: str
    storage: str
    out_dir: Path
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    pareto_weight: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)


def explore(model_name: str | None, space_path: str | Path, storage: str | None = None,
            n_trials: int | None = None, *, out_dir: str | Path | None = None,
            study_name: str | None = None, data_root: str | Path | None = None, device: str = "cpu",
            timeout: float | None = None, heartbeat_interval: int | None = 30,
            grace_period: int | None = None, retry_failed: bool = True,
            threads: int | None = None, report: bool = True,
            log: Callable[[str], None] = print) -> ExploreResult:
    """Run (or resume, or join) the study of ``space_path`` and write the Pareto report.

    ``model_name``: the model family (overrides the space file's ``model``; None = the file's).
    ``storage``: a database URL (default ``sqlite:///<out_dir>/study.db``). ``n_trials``: stop
    once the study holds this many COMPLETE trials (None: every design with ``bruteforce``).
    ``n_trials=0`` only rewrites the report. ``out_dir`` (default ``runs/explore/<name>``)
    receives the ``.wz`` of every design (``designs/``) and the report.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():
        # BruteForceSampler, heartbeats and the retry callback are flagged "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _explore(model_name, space_path, storage, n_trials, out_dir=out_dir, study_name=study_name,
                        data_root=data_root, device=device, timeout=timeout,
                        heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                        retry_failed=retry_failed, threads=threads, report=report, log=log)


def _explore(model_name, space_path, storage, n_trials, *, out_dir, study_name, data_root, device,
             timeout, heartbeat_interval, grace_period, retry_failed, threads, report, log) -> ExploreResult:
    import optuna
    import torch

    from ..data import get_loaders

    space = load_space(space_path)
    model_name = model_name or space.model
    if not model_name:
        raise RecipeError(f"{space_path}: no model: pass one (weightzip explore <model>) or set `model:` in the file")
    if threads:
        torch.set_num_threads(int(threads))
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / "explore" / space.name
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    study_name = study_name or f"{space.name}:{model_name}"
    if space.sampler.name != "bruteforce" and n_trials is None and timeout is None:
        raise WeightzipError(f"sampler {space.sampler.name!r} needs n_trials (or a timeout); "
                             "only bruteforce knows when the space is exhausted")
    # a trial whose worker died (no heartbeat) is failed; its design is queued again only when no
    # other trial has it (Optuna's RetryFailedTrialCallback would re-run a design that is done)
    rdb = _storage(storage, heartbeat_interval, grace_period,
                   on_stale=(lambda st, _trial: _requeue_failed(st, space)) if retry_failed else None)
    directions = [o.direction for o in space.objectives]
    try:
        study = optuna.create_study(study_name=study_name, storage=rdb, sampler=_sampler(space.sampler),
                                    directions=directions, load_if_exists=True)
    except ValueError as e:
        raise WeightzipError(f"study {study_name!r} in {storage} cannot be opened with these objectives "
                             f"({e}); use another --study-name") from None
    fingerprint = json.loads(space.model_dump_json())
    fingerprint["model"] = model_name
    old = study.user_attrs.get("space")
    if old is None:
        study.set_user_attr("space", fingerprint)
    elif old != fingerprint:
        raise WeightzipError(f"study {study_name!r} in {storage} was created from a different space "
                             f"definition; resume it with the same file, or pass another study name")

    _fail_stale(study)
    done = len(study_trials(study))
    log(f"explore {study_name}: {space.n_designs()} designs, {done} done, storage {storage}")
    if n_trials != 0:
        if retry_failed:
            _requeue_failed(study, space)
        loaders = get_loaders(space.data, root=data_root, **space.data_args)
        worker = f"{socket.gethostname()}:{os.getpid()}"

        def objective(trial):
            design = _suggest(trial, space)
            started = time.time()
            slug = design_label(design).replace(" ", "_")
            m = train_design(space, model_name, design, loaders, device=device, log=log,
                             wz_path=out_dir / "designs" / f"{slug}.wz")
            m.update({"worker": worker, "started": started, "finished": time.time()})
            # one attribute holding every metric (each attribute is one database transaction)
            trial.set_user_attr("design", m["design"])
            trial.set_user_attr("metrics", _jsonable(m))
            return [m[o.name] for o in space.objectives]

        finished = (n_trials is not None and done >= n_trials) or (
            space.sampler.name == "bruteforce" and done >= space.n_designs())
        if not finished:
            callbacks = [optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,))
                         ] if n_trials is not None else []
            study.optimize(objective, n_trials=None, timeout=timeout, callbacks=callbacks,
                           catch=(InvalidModelError,))
    result = ExploreResult(study_name, storage, out_dir, study_trials(study), [], [])
    if report:
        write_report(result, space)
    return result


def _fail_stale(study) -> None:
    """Fail the RUNNING trials of dead workers now (Optuna only looks when a trial starts, so
    without this a dead worker's trial stays RUNNING for ever once nothing is left to run)."""
    import optuna

    optuna.storages.fail_stale_trials(study)   # a no-op without heartbeats


def _requeue_failed(study, space: ExploreSpace, max_retry: int = 1) -> None:
    """Enqueue designs whose every trial failed (e.g. a worker killed mid-trial), at most
    ``max_retry`` times per design (a design that failed ``max_retry + 1`` times stays failed)."""
    import optuna

    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    live = {json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True)
            for t in trials if t.state in (S.COMPLETE, S.RUNNING, S.WAITING)}   # waiting: fixed params
    fails: dict[str, tuple[int, dict]] = {}
    for t in trials:
        if t.state == S.FAIL and t.params:
            key = json.dumps(t.params, sort_keys=True)
            fails[key] = (fails.get(key, (0, None))[0] + 1, t.params)
    for key, (n, params) in fails.items():
        if key not in live and n <= max_retry:
            study.enqueue_trial(params)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------
# Report


def write_report(result: ExploreResult, space: ExploreSpace) -> ExploreResult:
    """Fill ``result.pareto``/``pareto_weight`` and write JSON, Markdown and PNGs to ``out_dir``."""
    from ..analysis.pareto import non_dominated, plot_front, plot_memory_breakdown
    from ..training.checkpoint import atomic_write_json
    trials = result.trials
    err = "error"
    result.pareto = sorted(non_dominated(trials, [err, "total_memory_bits"], ["minimize", "minimize"]),
                           key=lambda d: d["total_memory_bits"])
    result.pareto_weight = sorted(non_dominated(trials, [err, "weight_memory_bits"], ["minimize", "minimize"]),
                                  key=lambda d: d["weight_memory_bits"])
    out = result.out_dir
    files = {"json": str(out / "explore.json"), "markdown": str(out / "pareto.md")}
    atomic_write_json(out / "explore.json", {
        "study": result.study_name, "storage": result.storage, "space": space.model_dump(mode="json"),
        "n_designs": space.n_designs(), "trials": trials,
        "pareto": [d["design"] for d in result.pareto],
        "pareto_weight": [d["design"] for d in result.pareto_weight]})
    _atomic_text(out / "pareto.md", _markdown(result, space))
    if trials:
        kib = 8 * 1024
        files["front"] = str(plot_front(
            trials, "total_memory_bits", err, out / "front.png", front=result.pareto, label="design",
            group="topology", xscale=kib, xlabel="total memory = weights + activations (KiB, memory model)",
            ylabel=f"error ({space.eval_split})", title=f"{space.name}: Pareto front ({len(result.pareto)} designs)"))
        files["front_weight"] = str(plot_front(
            trials, "weight_memory_bits", err, out / "front_weight.png", front=result.pareto_weight,
            label="design", group="topology", xscale=kib, xlabel="weight memory (KiB, memory model)",
            ylabel=f"error ({space.eval_split})", title=f"{space.name}: error vs weight memory"))
        files["memory_breakdown"] = str(plot_memory_breakdown(
            result.pareto, out / "memory_breakdown.png", label="design",
            title="memory of the Pareto designs (error vs total memory)"))
    result.files = files
    return result


def _atomic_text(path: Path, text: str) -> None:
    from ..fileio import atomic_write_text

    atomic_write_text(path, text)


def _markdown(result: ExploreResult, space: ExploreSpace) -> str:
    def kib(b):
        return "-" if b is None else f"{b / 8192:.2f}"

    lines = [f"# {space.name}: Pareto designs", "",
             f"{len(result.trials)} of {space.n_designs()} designs trained; study `{result.study_name}`.",
             "Memory figures are the memory model of `weightzip.analysis.memory` (KiB = 8192 bits), "
             "not file sizes; `file` is the `.wz` on disk.", "",
             f"## Pareto front: {space.eval_split} error vs total memory ({len(result.pareto)} designs)", "",
             "| design | error | test acc | .wz test acc | W mem KiB | A mem KiB | peak A KiB | total KiB | W reduction | file bytes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in result.pareto:
        wz = d.get("wz_test_accuracy")
        lines.append(f"| {d['design']} | {d['error']:.4f} | {d['test_accuracy']:.4f} | "
                     f"{'-' if wz is None else f'{wz:.4f}'} | {kib(d['weight_memory_bits'])} | "
                     f"{kib(d['activation_memory_bits'])} | {kib(d['peak_activation_memory_bits'])} | "
                     f"{kib(d['total_memory_bits'])} | {d['weight_memory_reduction']:.1f}x | "
                     f"{d.get('file_bytes', '-')} |")
    lines += ["", f"## Pareto front: error vs weight memory ({len(result.pareto_weight)} designs)", "",
              ", ".join(d["design"] for d in result.pareto_weight), ""]
    return "\n".join(lines)
