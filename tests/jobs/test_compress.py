"""``weightzip compress`` killed with SIGKILL (mid-stage, mid-write) and resumed: no partial ``.wz``
is ever left, and ``--resume`` writes the same bytes as an uninterrupted run.

Runs the real CLI in subprocesses on ``lenet300_100_tiny`` and a 600-image fake MNIST written in
the real IDX format (no real data needed). The child is started through a tiny driver that
patches two functions, so the product code carries no test hook:

* ``stage``: a callback added to every ``StageContext.fit`` pauses at training step 2 - inside the
  ``finetune`` stage (stage 1) of the recipe below, after stage 0's checkpoint was written;
* ``write``: ``os.fsync`` pauses when called on the ``.wz`` temp file, i.e. inside
  ``codec.container.write`` after the bytes went to ``.m.wz.<random>.tmp`` and before the rename.

At the pause the child prints ``WZ-PAUSED <point>`` and sleeps; the test then SIGKILLs it.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typer.testing import CliRunner

from weightzip.cli import app
from weightzip.jobs.compress import remove_stale_temp_files

from ..data.fakes import make_mnist_dir

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir() or os.name != "posix",
                                reason="needs POSIX signals and /proc/self/fd (Linux)")

SRC = Path(__file__).resolve().parents[2] / "src"

RECIPE = """
name: tiny-resume
stages:
  - method: prune_magnitude
    sparsity: 0.8
  - method: finetune
    train: {epochs: 2, lr: 0.001, optimizer: adam, max_steps_per_epoch: 5}
  - method: kmeans_share
    bits: 3
"""

# The child: patch (only when WZ_PAUSE is set), then run the ordinary CLI.
DRIVER = r"""
import os, sys, time
point = os.environ.get("WZ_PAUSE")

def pause(name):
    if name == point:
        print("WZ-PAUSED " + name, flush=True)
        time.sleep(600)

if point == "stage":
    from weightzip.methods.base import StageContext
    _fit = StageContext.fit

    class _Pause:
        def on_step(self, trainer, step):
            if step == 2:
                pause("stage")

    def fit(self, model, train, callbacks=(), *a, **kw):
        return _fit(self, model, train, [*callbacks, _Pause()], *a, **kw)

    StageContext.fit = fit
elif point == "write":
    _fsync = os.fsync
    target = os.environ["WZ_PAUSE_NAME"]

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith("." + target + ".") and name.endswith(".tmp"):
            pause("write")
        return _fsync(fd)

    os.fsync = fsync

from weightzip.cli import app
sys.argv = ["weightzip", *sys.argv[1:]]
app()
"""


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    make_mnist_dir(d / "data")
    (d / "r.yaml").write_text(RECIPE)
    (d / "driver.py").write_text(DRIVER)
    e = {**os.environ, "WEIGHTZIP_DATA": str(d / "data"), "WEIGHTZIP_NO_MD5": "1", "WEIGHTZIP_NO_DOWNLOAD": "1",
         "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(d),
         "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    e.pop("WZ_PAUSE", None)
    with pytest.MonkeyPatch.context() as mp:  # the base checkpoint is trained in-process (saves a start-up)
        for k in ("WEIGHTZIP_NO_MD5", "WEIGHTZIP_NO_DOWNLOAD"):
            mp.setenv(k, "1")
        res = CliRunner().invoke(app, ["train", "lenet300_100_tiny", "--data", "mnist", "--val-size", "100",
                                       "--epochs", "1", "--max-steps", "4", "--no-progress", "--device", "cpu",
                                       "--data-dir", str(d / "data"), "-o", str(d / "base.pt")])
    assert res.exit_code == 0, res.output
    return d, e


def _args(d: Path, out: Path, workdir: Path, *extra: str) -> list[str]:
    return ["compress", str(d / "base.pt"), "-r", str(d / "r.yaml"), "-o", str(out), "--workdir", str(workdir),
            *extra]


def _cli(d: Path, e: dict, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(d / "driver.py"), *args], env=e, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _kill_at(d: Path, e: dict, point: str, args: list[str]) -> None:
    """Start the CLI, wait for ``WZ-PAUSED point``, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, str(d / "driver.py"), *args],
                            env={**e, "WZ_PAUSE": point, "WZ_PAUSE_NAME": Path(args[args.index("-o") + 1]).name},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == f"WZ-PAUSED {point}":
                break
            assert time.monotonic() < deadline, "child never reached the pause point"
        else:
            pytest.fail(f"child ended (rc={proc.wait()}) before pausing at {point!r}:\n" + "".join(lines))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(env):
    d, e = env
    out = d / "ref" / "m.wz"
    _cli(d, e, *_args(d, out, d / "ref-work"))
    return _sha(out)


def test_killed_mid_stage_leaves_no_file_and_resume_is_bit_identical(env, reference):
    d, e = env
    out, work = d / "stage" / "m.wz", d / "stage-work"
    out.parent.mkdir()
    _kill_at(d, e, "stage", _args(d, out, work))
    assert list(out.parent.iterdir()) == []  # no .wz, no temp file: the write had not begun
    assert sorted(p.name for p in work.iterdir()) == ["stage-0-prune_magnitude.pt"]  # stage 1 was running
    res = _cli(d, e, *_args(d, out, work, "--resume"))
    assert "resumed after stage 0" in res.stdout + res.stderr
    assert _sha(out) == reference
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.wz"]


def test_killed_mid_write_leaves_no_partial_file_and_resume_is_bit_identical(env, reference):
    d, e = env
    out, work = d / "write" / "m.wz", d / "write-work"
    _kill_at(d, e, "write", _args(d, out, work))
    left = sorted(p.name for p in out.parent.iterdir())
    # never a partial m.wz: only the hidden, complete-but-unrenamed temp file of container.write
    assert len(left) == 1 and left[0].startswith(".m.wz.") and left[0].endswith(".tmp"), left
    assert len(list(work.glob("stage-*.pt"))) == 3  # every stage was done and checkpointed
    res = _cli(d, e, *_args(d, out, work, "--resume"))
    log = res.stdout + res.stderr
    assert "resumed after stage 2" in log and f"removed {out.parent / left[0]}" in log
    assert _sha(out) == reference
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.wz"]  # the stale temp file is gone


def test_remove_stale_temp_files_touches_only_temp_files_of_that_output(tmp_path):
    keep = [tmp_path / n for n in ("m.wz", ".other.wz.abc.tmp", "m.wz.tmp", ".m.wzx.abc.tmp")]
    stale = [tmp_path / n for n in (".m.wz.k2j3_x.tmp", ".m.wz.a.tmp")]
    for p in keep + stale:
        p.write_bytes(b"x")
    logs = []
    assert remove_stale_temp_files(tmp_path / "m.wz", logs.append) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale) and len(logs) == 2
    assert remove_stale_temp_files(tmp_path / "missing-dir" / "m.wz") == []
