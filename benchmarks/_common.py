"""Helpers shared by the benchmark scripts.

Every script runs as ``python benchmarks/<name>.py``, which puts this folder first on
``sys.path``, so the scripts ``import _common``. What is here was repeated script to script:

* command line: :func:`parser` (description = the first line of the script's docstring),
  :func:`add_arg` / :func:`add_args` (the flags most scripts share - ``--device``,
  ``--threads``, ``--seed``, ``--out``, ``--runs``, ``--data-dir``, ``--force`` - with the
  script's own default or help where it differs), :func:`setup` (torch threads, output folders);
* results: :func:`write_text` / :func:`write_json` (atomic: a temporary file in the same folder,
  then ``os.replace``, so an interrupted run never leaves half a file), :func:`write_results`
  (the JSON + Markdown pair of a benchmark), :func:`read_json` (an earlier results file to merge
  into, ``{}`` when there is none), :func:`cached` (a finished run's record, unless ``--force``),
  :func:`complete_from_cache` (runs finished by earlier invocations complete a table);
* run facts: :func:`say`, :func:`now`, :func:`load_average`, :func:`median_time`, :func:`machine_line`;
* baselines and ``.wz`` files: :func:`data_options`, :func:`save_and_reload`;
* tables and records: :func:`fmt`, :func:`md_row`, :func:`md_header`, :func:`without_keys`;
* plots: :func:`pyplot` (the Agg backend), :func:`save_figure`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# ---------------------------------------------------------------------------------------------
# Command line

#: the flags several scripts share: name -> (option strings, argparse keywords)
COMMON_ARGS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "device": (("--device",), {"default": "cpu"}),
    "threads": (("--threads",), {"type": int, "default": 1}),
    "seed": (("--seed",), {"type": int, "default": 0}),
    "out": (("--out",), {"type": Path, "default": RESULTS}),
    "runs": (("--runs",), {"type": Path}),
    "data_dir": (("--data-dir",), {"default": None}),
    "force": (("--force",), {"action": "store_true"}),
}


def parser(doc: str | None, *, paragraph: bool = False, **kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` described by the first line (``paragraph``: the first paragraph) of ``doc``."""
    text = doc or ""
    description = text.split("\n\n")[0] if paragraph else text.split("\n")[0]
    return argparse.ArgumentParser(description=description, **kwargs)


def add_arg(ap: argparse.ArgumentParser, name: str, **overrides: Any) -> None:
    """Add the shared flag ``name`` (a key of :data:`COMMON_ARGS`); ``overrides`` replace its keywords."""
    flags, kw = COMMON_ARGS[name]
    ap.add_argument(*flags, **{**kw, **overrides})


def add_args(ap: argparse.ArgumentParser, *names: str) -> None:
    """Add several shared flags with their common defaults, in this order."""
    for name in names:
        add_arg(ap, name)


def setup(args: argparse.Namespace, *folders: str, threads: bool = True) -> None:
    """``torch.set_num_threads(args.threads)`` and create the folders named by ``folders``
    (attributes of ``args``, e.g. ``"out"``, ``"runs"``)."""
    if threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in folders:
        Path(getattr(args, name)).mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------------------
# Results files


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path`` (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """Atomically write ``obj`` as JSON.

    Without ``dumps`` keywords: :func:`weightzip.training.checkpoint.atomic_write_json` (indent 2,
    tensors / numpy scalars / paths converted, trailing newline); with them: exactly
    ``json.dumps(obj, **dumps)`` (for the scripts whose files were always written that way).
    """
    if not dumps:
        from weightzip.training.checkpoint import atomic_write_json

        return atomic_write_json(path, obj)
    return write_text(path, json.dumps(obj, **dumps))


def repo_relative(obj: Any) -> Any:
    """``obj`` with every string path inside the repository made relative to its root (recursively
    through dicts, lists, tuples; Path objects too), so results read the same on any machine."""
    prefix = str(ROOT) + os.sep
    if isinstance(obj, Path):
        obj = str(obj)
    if isinstance(obj, str):
        return obj.replace(prefix, "")
    if isinstance(obj, dict):
        return {k: repo_relative(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(repo_relative(v) for v in obj)
    return obj


def write_results(json_path: str | Path, obj: Any, md_path: str | Path, markdown: str) -> None:
    """The JSON of a benchmark (:func:`write_json`) and then its Markdown page, both atomically,
    with paths inside the repository written relative to it (:func:`repo_relative`)."""
    write_json(json_path, repo_relative(obj))
    write_text(md_path, repo_relative(markdown))


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` (a new ``{}`` when not given) if there is no such file."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    return {} if default is None else default


def cached(path: str | Path, force: bool = False) -> dict[str, Any] | None:
    """The record a finished run wrote to ``path``, or None (no file, or ``force``: redo it)."""
    path = Path(path)
    if path.is_file() and not force:
        return json.loads(path.read_text())
    return None


def complete_from_cache(rows: dict, keys: Iterable, path_of: Callable[[Any], Path]) -> dict:
    """Add to ``rows`` the record of every key not run now whose ``path_of(key)`` file exists
    (runs finished by earlier invocations with the same settings complete the table)."""
    for key in keys:
        p = path_of(key)
        if key not in rows and p.is_file():
            rows[key] = json.loads(p.read_text())
    return rows


# ---------------------------------------------------------------------------------------------
# Run facts


def say(msg: str) -> None:
    """Print a progress line now (``flush``: visible at once when the output is a log file)."""
    print(msg, flush=True)


def now() -> str:
    """Local date and time, ``YYYY-MM-DDTHH:MM:SS``."""
    return dt.datetime.now().isoformat(timespec="seconds")


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): timings on a shared
    machine are only comparable with it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median wall time (seconds) of ``repeat`` calls of ``fn`` (no warm-up call)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_line(machine: Mapping[str, Any]) -> str:
    """``Machine: <processor>, torch <v>, <n> thread(s), device <d>.`` from ``machine_info()``."""
    return (f"Machine: {machine.get('processor')}, torch {machine.get('torch')}, "
            f"{machine.get('torch_threads')} thread(s), device {machine.get('device')}.")


def without_keys(obj: Any, keys: Iterable[str]) -> Any:
    """``obj`` (nested dicts / lists) with every dict entry named in ``keys`` left out, at any
    depth (per-epoch histories and the like, kept out of the results JSON)."""
    keys = tuple(keys)
    if isinstance(obj, dict):
        return {k: without_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without_keys(v, keys) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Baselines and .wz round trip


def data_options(info: Mapping[str, Any], recipe: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Data options of a cached baseline: per key, what its checkpoint recorded (``info["data_args"]``
    of ``weightzip.jobs.runs.load_model``), else the zoo recipe's (``recipe_for(...)["data"]``), so a
    benchmark evaluates on the baseline's own validation split."""
    saved = dict(info.get("data_args") or {})
    return {k: saved.get(k, recipe["data"].get(k)) for k in keys}


def save_and_reload(model, path: str | Path, **save_kwargs: Any):
    """``weightzip.save(model, path, **save_kwargs)`` then ``weightzip.load(path)``: the save report
    and the model rebuilt FROM THE FILE (what the from-file figures are measured on)."""
    import weightzip

    report = weightzip.save(model, path, **save_kwargs)
    return report, weightzip.load(path)


# ---------------------------------------------------------------------------------------------
# Tables


def fmt(v: Any, spec: str = ".4f", none: str = "-") -> str:
    """A table cell: ``none`` for None, yes / NO for booleans, floats with ``spec``, else ``str``."""
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def md_row(cells: Iterable[Any]) -> str:
    """One Markdown table row ``| a | b |`` (cells as ``str``)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_header(columns: Iterable[str]) -> list[str]:
    """The two header lines of a Markdown table: ``| a | b |`` and ``|---|---|``."""
    cols = list(columns)
    return [md_row(cols), "|" + "---|" * len(cols)]


# ---------------------------------------------------------------------------------------------
# Plots


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """``tight_layout``, write ``path`` and close the figure (so loops of plots do not pile up)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
