"""The ``weightzip`` command line. Commands are thin: they parse options and call the library.

    weightzip train lenet5 --data mnist -o runs/lenet5/base.pt
    weightzip eval runs/lenet5/base.pt --split test
    weightzip list models 'resnet*'

Errors the user can fix (a :class:`~weightzip.errors.WeightzipError`, a bad option or value)
are printed as ONE line on stderr, ``error: ...``, and the exit status is 2. Anything else is
a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .errors import WeightzipError

__all__ = ["app", "main"]

EXIT_USAGE = 2


def _one_line(msg: str) -> str:
    return re.sub(r"\s+", " ", str(msg)).strip()


def _validation_message(e: Exception) -> str:
    """A pydantic ``ValidationError`` as one line: ``option 'lr': Input should be > 0 (got -1)``."""
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    parts = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        parts.append(f"option {loc!r}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts)


def _fail(msg: str) -> None:
    typer.echo(f"error: {_one_line(msg)}", err=True)
    sys.exit(EXIT_USAGE)


_ARGS: list[str] = []  # the command line being run


class _OneLineErrors(TyperGroup):
    """Runs the command group and turns user errors into one line on stderr + exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        from pydantic import ValidationError

        args = list(sys.argv[1:] if args is None else args) or ["--help"]  # bare `weightzip`: help
        _ARGS[:] = args  # `train --nproc-per-node N` re-runs these under torchrun
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except typer.TyperException as e:  # usage errors: unknown option, bad value, missing argument
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            msg = e.format_message() if hasattr(e, "format_message") else str(e)
            _fail(f"{msg}{hint}")
            typer.echo("aborted", err=True)
            sys.exit(1)
        except ValidationError as e:
            _fail(_validation_message(e))
        except (WeightzipError, ValueError) as e:  # ValueError: a bad value refused at its cause
            _fail(str(e) or type(e).__name__)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="weightzip",
    cls=_OneLineErrors,
    help="Compress trained PyTorch networks by pruning and quantization into real .wz files, "
         "run inference from them, and show the accuracy-size trade-off.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: "[default: ...]" in help texts stays literal
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _setup_logging(verbose: bool = True) -> None:
    root = logging.getLogger("weightzip")
    if not any(getattr(h, "_wz_cli", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        h._wz_cli = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
class Optimizer(str, Enum):
    sgd = "sgd"
    adam = "adam"


class Schedule(str, Enum):
    constant = "constant"
    step = "step"
    multistep = "multistep"
    cosine = "cosine"
    plateau = "plateau"


class GradQuant(str, Enum):
    fp32 = "fp32"
    mbit = "mbit"
    sign = "sign"
    ternary = "ternary"
    torch_pertensor = "torch-pertensor"
    powersgd = "powersgd"


class Split(str, Enum):
    test = "test"
    val = "val"


def _parse_milestones(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(m) for m in text.replace(" ", "").split(",") if m]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of epochs, e.g. 15,25",
                                 param_hint="--milestones") from None


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo model name (see 'weightzip list models'), e.g. lenet5.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Dataset name (see 'weightzip list datasets'), e.g. mnist.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.pt); the run record goes "
                                         "beside it as .json.")],
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs [default: the recipe's].")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Base learning rate [default: the recipe's].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Training batch size [default: the recipe's].")] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option(help="Optimizer [default: the recipe's].")] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule [default: the recipe's].")] = None,
    milestones: Annotated[Optional[str], typer.Option(help="Epochs where the multistep schedule decays, e.g. 15,25.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of weights init, data order and dropout.")] = 0,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda', 'cuda:1' or 'auto' (cuda if available).")] = "auto",
    val_size: Annotated[Optional[int], typer.Option(min=0, help="Training examples held out for validation "
                                                    "[default: the dataset's, e.g. 5000; 0 = none].")] = None,
    subset: Annotated[Optional[int], typer.Option(min=1, help="Train on the first N training examples only "
                                                  "(tokens for language modelling).")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Random crop + flip "
                                                    "(cifar10) [default: the recipe's].")] = None,
    model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", "-m", help="Model constructor argument "
                                                           "key=value (repeatable), e.g. -m width=0.5.")] = None,
    train_arg: Annotated[Optional[list[str]], typer.Option("--train-arg", "-t", help="Any other training option "
                                                           "key=value (repeatable), e.g. -t weight_decay=1e-4 "
                                                           "-t grad_clip=5.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop each epoch after N steps "
                                                     "(quick trials).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder holding the datasets [default: "
                                                     "$WEIGHTZIP_DATA, then ~/.cache/weightzip].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUTPUT.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars (terminal only).")] = True,
    nproc_per_node: Annotated[Optional[int], typer.Option("--nproc-per-node", min=1, rich_help_panel="Distributed",
                                                          help="Train data-parallel on N processes of this machine "
                                                          "(re-runs the command under torchrun).")] = None,
    nnodes: Annotated[Optional[str], typer.Option(rich_help_panel="Distributed", help="Machines taking part "
                                                  "(torchrun --nnodes, e.g. 2); needs --rdzv-endpoint.")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option(rich_help_panel="Distributed", help="HOST:PORT every "
                                                         "machine reaches for the rendezvous.")] = None,
    grad_quant: Annotated[Optional[GradQuant], typer.Option(rich_help_panel="Distributed", help="Gradient "
                                                            "communication [default: mbit if --grad-bits, else "
                                                            "fp32 or $WEIGHTZIP_GRAD_QUANT].")] = None,
    grad_bits: Annotated[Optional[int], typer.Option(min=2, max=8, rich_help_panel="Distributed",
                                                     help="Bits per gradient element (mbit).")] = None,
    grad_clip_sigma: Annotated[Optional[float], typer.Option(min=0.0, rich_help_panel="Distributed",
                                                             help="Clip gradients to +-C standard deviations "
                                                             "before quantizing (0 = off; paper: 3).")] = None,
    error_feedback: Annotated[Optional[bool], typer.Option("--error-feedback/--no-error-feedback",
                                                           rich_help_panel="Distributed", help="Carry the "
                                                           "quantization error to the next step.")] = None,
) -> None:
    """Train a zoo MODEL on a dataset and save the checkpoint (+ a JSON run record).

    Settings not given come from the recipe for this model and dataset (weightzip.jobs.runs.RECIPES);
    the model's input size and number of classes come from the dataset.

    \b
    Example: weightzip train lenet5 --data mnist --epochs 12 -o runs/lenet5/base.pt

    \b
    Data-parallel, 2-bit gradients clipped at 3 sigma (see docs/distributed.md):
    weightzip train lenet5 -d mnist -o runs/l5.pt --nproc-per-node 2 --grad-bits 2 --grad-clip-sigma 3
    """
    from .training.distributed import launch
    from .jobs.runs import parse_key_values, train_model

    _setup_logging()
    if nproc_per_node is not None or nnodes is not None or rdzv_endpoint is not None:
        raise typer.Exit(launch.relaunch(_ARGS, nproc_per_node or 1, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint))
    rank, _ = launch.cli_setup(grad_quant=grad_quant.value if grad_quant else None, bits=grad_bits,
                               clip_sigma=grad_clip_sigma, error_feedback=error_feedback, device=device)
    overrides: dict[str, Any] = parse_key_values(train_arg, "--train-arg")
    for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size),
                       ("optimizer", optimizer.value if optimizer else None),
                       ("schedule", schedule.value if schedule else None),
                       ("milestones", _parse_milestones(milestones)), ("max_steps_per_epoch", max_steps),
                       ("device", device)):
        if value is not None:
            overrides[key] = value
    overrides["seed"] = seed
    overrides["progress"] = progress
    data_args = {"val_size": val_size, "subset": subset, "augment": augment,
                 "root": str(data_dir) if data_dir else None}
    with launch.comm_errors():
        out = train_model(model, data, output, train=overrides, model_args=parse_key_values(model_arg),
                          data_args={k: v for k, v in data_args.items() if v is not None}, resume=resume)
    if rank != 0:  # data-parallel: rank 0 reports
        return
    final = out.get("test") or out.get("final") or {}
    shown = "  ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float))
    typer.echo(f"{model} on {data}: {out['epochs']} epoch(s) in {out['wall_time_s']:.1f}s; "
               f"test {shown}")
    if out.get("distributed"):
        d, c = out["distributed"], out["distributed"]["comm"]
        typer.echo(f"{d['world_size']} processes ({d['backend']}), gradients {d['grad_quant_label']}: "
                   f"{c['payload_bytes_per_step']:,.0f} bytes/step per worker, {c['payload_ratio']:.1f}x "
                   f"fewer than fp32")
    typer.echo(f"checkpoint: {out['checkpoint']}\nrecord:     {out['record']}")


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    path: Annotated[Path, typer.Argument(help="A run checkpoint (.pt) or a compressed model (.wz).")],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Dataset [default: the one the run was "
                                                "trained on; required for .wz].")] = None,
    split: Annotated[Split, typer.Option(help="Which split to evaluate on.")] = Split.test,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'auto'.")] = "cpu",
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Evaluation batch size.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder holding the datasets.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Evaluate the first N batches only.")] = None,
) -> None:
    """Evaluate a trained run (.pt) or a compressed file (.wz): loss and accuracy (or perplexity).

    \b
    Example: weightzip eval runs/lenet5/base.pt --split test
    """
    from .jobs.runs import evaluate_checkpoint

    metrics = evaluate_checkpoint(path, data, split=split.value, device=device, batch_size=batch_size,
                                  root=data_dir, max_steps=max_steps)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    typer.echo(f"{metrics['model'] or path} on {metrics['data']} {metrics['split']}: {shown}")


# ---------------------------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------------------------
class Listable(str, Enum):
    models = "models"
    datasets = "datasets"
    methods = "methods"


@app.command("list")
def list_cmd(
    what: Annotated[Listable, typer.Argument(help="What to list: models, datasets or methods.")],
    pattern: Annotated[str, typer.Argument(help="Glob pattern on the names, e.g. 'resnet*'.")] = "*",
) -> None:
    """List registered models, datasets or compression methods (one name per line)."""
    from .core import registry

    fn = {"models": registry.list_models, "datasets": registry.list_datasets,
          "methods": registry.list_methods}[what.value]
    names = fn(pattern)
    if not names:
        raise WeightzipError(f"no {what.value} match {pattern!r}; all {what.value}: {', '.join(fn('*'))}")
    for name in names:
        typer.echo(name)


# ---------------------------------------------------------------------------------------------
# compress / inspect / bench / export
# ---------------------------------------------------------------------------------------------
def _print_size_table(path: Path) -> None:
    from .report.tables import size_table

    typer.echo(size_table(path))


@app.command()
def compress(
    source: Annotated[str, typer.Argument(help="A trained run checkpoint (.pt), a .wz file (any model saved with its graph), "
                                          "a safetensors checkpoint (a file, or an HF folder with its shard index: "
                                          "compressed tensor by tensor, post-training recipes only) "
                                          "or a zoo model name; a zoo name "
                                          "gets a cached baseline (trained once under runs/baselines).")],
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="Recipe YAML, e.g. recipes/deep-compression.yaml.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .wz file to write (atomically).")],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Dataset [default: the checkpoint's, "
                                                "then the recipe's; a .wz / .pt with none runs a "
                                                "post-training recipe without data, evaluation "
                                                "skipped].")] = None,
    workdir: Annotated[Optional[Path], typer.Option(help="Folder for stage checkpoints and plots "
                                                    "(enables --resume).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip stages already checkpointed in --workdir.")] = False,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'auto'.")] = "cpu",
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG: weight histograms, per-layer density "
                                                 "and bits.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the compression stages.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (there is none when the "
                                        "output is not a terminal either).")] = False,
) -> None:
    """Compress a model with a recipe, write the .wz, and re-measure accuracy from the file.

    Example: weightzip compress lenet300_100 --data mnist -r recipes/deep-compression.yaml -o lenet.wz
    """
    from .jobs.compress import compress_run
    from .jobs.stream import compress_safetensors, is_safetensors_source

    _setup_logging()
    if is_safetensors_source(source):
        if data is not None or workdir is not None or plot is not None:
            raise WeightzipError("a safetensors checkpoint is compressed tensor by tensor without data: "
                                 "--data, --workdir and --plot do not apply (load the model for those)")
        out = compress_safetensors(source, recipe, output, progress=False if quiet else None,
                                   log=logging.getLogger("weightzip").info)
        if as_json:
            typer.echo(json.dumps(out, indent=2, default=str))
            return
        _print_size_table(output)
        typer.echo(f"wrote {out['out']}: {out['file_bytes']:,} bytes, file ratio {out['file_ratio']:.1f}x "
                   f"in {out['seconds']:.0f}s ({out['selected']} of {out['tensors']} tensors compressed by "
                   f"the recipe); load it with weightzip.load(path, model=YourModel(...))")
        return
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = compress_run(source, recipe, output, data=data, workdir=workdir, device=device, resume=resume,
                       plot=plot, seed=seed, log=logging.getLogger("weightzip").info)
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    _print_size_table(output)
    if "skipped" in out["from_file_test"]:  # no dataset: post-training only, nothing measured
        typer.echo(f"evaluation skipped ({out['from_file_test']['skipped']}): pass --data DATASET to "
                   "measure the baseline, the compressed model and the file")
    else:
        acc = lambda m: m.get("accuracy", m.get("perplexity"))  # noqa: E731
        typer.echo(f"baseline test {acc(out['baseline_test']):.4f} -> compressed "
                   f"{acc(out['compressed_test']):.4f} -> from the file {acc(out['from_file_test']):.4f}")
    typer.echo(f"wrote {out['out']}: {out['file_bytes']:,} bytes, file ratio {out['file_ratio']:.1f}x "
               f"in {out['seconds']:.0f}s" + (f"; plot {out['plot']}" if out.get("plot") else ""))


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A .wz file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the size report as JSON.")] = False,
    streams: Annotated[bool, typer.Option("--streams", help="Also list every stream: coding, achieved "
                                          "bits per symbol and its order-0 bound.")] = False,
) -> None:
    """Explain every byte of a .wz: per-tensor format, nnz, bits, index bits, bytes, ratio, entropy bound."""
    from .analysis.size import size_report

    if not path.is_file():
        raise WeightzipError(f"file {str(path)!r} not found")
    if as_json:
        typer.echo(json.dumps(size_report(path).to_dict(), indent=2, default=str))
        return
    _print_size_table(path)
    from .analysis.speed import plan_text

    typer.echo(plan_text(path))
    if streams:
        from .report.tables import stream_table

        typer.echo(stream_table(path))


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="A .wz file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    max_decoded_bytes: Annotated[Optional[str], typer.Option(
        "--max-decoded-bytes", help="Refuse files whose tensors declare more decoded bytes, e.g. 512M or 8G "
        "[default: 2G, or $WEIGHTZIP_MAX_DECODED_BYTES].")] = None,
) -> None:
    """Check a .wz completely without building a model: exit 0 if every check and every tensor
    decode passes, 1 if not (the reasons on stderr, or in the --json report)."""
    from .api import verify as verify_file

    res = verify_file(path, max_decoded_bytes=max_decoded_bytes)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    elif res["ok"]:
        typer.echo(f"{path}: ok ({res['n_tensors']} tensors, {res['file_bytes']:,} bytes, "
                   f"{res['decoded_bytes']:,} decoded bytes, {res['seconds']:.2f}s)")
    else:
        for err in res["errors"]:
            typer.echo(f"error: {_one_line(err)}", err=True)
    if not res["ok"]:
        sys.exit(1)


@app.callback()
def _options(
    max_decoded_bytes: Annotated[Optional[str], typer.Option(
        "--max-decoded-bytes", help="For every command that reads a .wz: refuse files whose tensors declare "
        "more decoded bytes, e.g. 512M or 8G [default: 2G, or $WEIGHTZIP_MAX_DECODED_BYTES].")] = None,
) -> None:
    """Compress trained PyTorch networks by pruning and quantization into real .wz files, run
    inference from them, and show the accuracy-size trade-off."""
    if max_decoded_bytes is not None:
        from .api import set_max_decoded_bytes

        set_max_decoded_bytes(max_decoded_bytes)


@app.command()
def bench(
    path: Annotated[Path, typer.Argument(help="A .wz file.")],
    batch: Annotated[Optional[list[int]], typer.Option("--batch", "-b", help="Batch sizes (repeatable) "
                                                       "[default: 1 and 64].")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Timed repeats (the median is reported).")] = 7,
    number: Annotated[int, typer.Option(min=1, help="Calls per timed repeat.")] = 50,
    threads: Annotated[int, typer.Option(min=1, help="Threads of every runtime (torch, onnxruntime, numba).")] = 1,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Time on this dataset's test inputs "
                                                "(e.g. mnist) instead of standard-normal ones.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Latency of every runtime (torch eager, onnxruntime fp32/int8, torch.ao int8, each weightzip mode)
    interleaved in one process, with speed-ups, the load average and the hardware limit estimate."""
    from .jobs.bench import bench as run_bench

    if not path.is_file():
        raise WeightzipError(f"file {str(path)!r} not found")
    out = run_bench(path, batch_sizes=tuple(batch or (1, 64)), repeat=repeat, number=number, threads=threads,
                    data=data)
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    from .analysis.speed import bench_text

    typer.echo(bench_text(out))


class ExportFormat(str, Enum):
    safetensors = "safetensors"
    onnx = "onnx"


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="A .wz file.")],
    to: Annotated[ExportFormat, typer.Option("--to", help="Output format.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    dense: Annotated[bool, typer.Option("--dense", help="Write the decoded fp32 model instead of the compressed one.")] = False,
) -> None:
    """Write a .wz as ONNX (low-bit initializers + decoding ops, runs in onnxruntime) or safetensors
    (codes, codebooks, scales, indices as named tensors); --dense: the decoded fp32 model."""
    from .jobs.export import export as run_export

    if not path.is_file():
        raise WeightzipError(f"file {str(path)!r} not found")
    out = run_export(path, to.value, output, dense=dense)
    typer.echo(f"wrote {out} ({out.stat().st_size:,} bytes, {'dense fp32' if dense else 'compressed'})")


@app.command()
def report(
    root: Annotated[Path, typer.Argument(help="Folder searched (recursively) for .wz files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for report.md and the plots.")],
) -> None:
    """Markdown + PNG over every .wz under a folder: sizes, ratios, accuracy vs ratio."""
    from .report.markdown import write_report

    if not root.is_dir():
        raise WeightzipError(f"folder {str(root)!r} not found")
    typer.echo(f"wrote {write_report(root, output)}")


@app.command()
def explore(
    model: Annotated[Optional[str], typer.Argument(help="Model family (overrides the space file's `model`), "
                                                   "e.g. mlp.")] = None,
    space: Annotated[Path, typer.Option("--space", "-s", help="Design-space YAML, e.g. "
                                        "recipes/space-structured.yaml.")] = Path("recipes/space-structured.yaml"),
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL [default: sqlite:///OUT/study.db]; "
                                                   "share one URL (e.g. postgresql://...) between workers.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", "-n", min=0, help="Stop once the study holds N "
                                                  "complete trials [default: every design].")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the designs' .wz files "
                                                   "and the Pareto report.")] = None,
    study_name: Annotated[Optional[str], typer.Option(help="Study name [default: from the space file].")] = None,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'auto'.")] = "cpu",
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder holding the datasets.")] = None,
    heartbeat: Annotated[int, typer.Option(min=1, help="Seconds between a running trial's heartbeats; a trial "
                                           "silent for 4 of them (its worker died) is failed and its design "
                                           "run again by the next worker.")] = 30,
) -> None:
    """Train every design of a space (bits x activation bits x structure x topology), keep the Pareto set.

    Running the same command again resumes the study; several processes or machines running it
    with one --storage URL share the work.
    """
    from .jobs.explore import explore as run_explore

    _setup_logging()
    if not space.is_file():
        raise WeightzipError(f"space file {str(space)!r} not found (see recipes/space-structured.yaml)")
    res = run_explore(model, space, storage, trials, out_dir=output, study_name=study_name, device=device,
                      data_root=data_dir, heartbeat_interval=heartbeat, log=logging.getLogger("weightzip").info)
    typer.echo(f"{len(res.trials)} designs, {len(res.pareto)} on the Pareto front (error vs total memory); "
               f"report in {res.out_dir}")


@app.command()
def analyze(
    path: Annotated[Path, typer.Argument(help="A .wz file or a .pt checkpoint of a sparse model.")],
    powerlaw: Annotated[bool, typer.Option("--powerlaw/--no-powerlaw", help="Fit power laws to the neuron "
                                           "degree distributions.")] = True,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the log-log plots.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Connectivity of a sparse model: degree distributions, power-law fits vs exponential / log-normal."""
    if not path.is_file():
        raise WeightzipError(f"file {str(path)!r} not found")
    try:
        from .analysis.powerlaw import analyze_file, format_report
    except ImportError as e:  # pragma: no cover - the analysis module is optional at this layer
        raise WeightzipError(f"power-law analysis is not available: {e}") from None
    res = analyze_file(path, out_dir=output)
    typer.echo(json.dumps(res, indent=2, default=str) if as_json else format_report(res))


def main() -> None:
    """Console entry point (``weightzip`` and ``python -m weightzip``)."""
    app(prog_name="weightzip")


if __name__ == "__main__":  # pragma: no cover
    main()
