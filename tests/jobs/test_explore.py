import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from weightzip.analysis.pareto import non_dominated
from weightzip.errors import RecipeError, WeightzipError
from weightzip.jobs.explore import _requeue_failed, explore, load_space

TINY = """
name: tiny
model: mlp
model_args: {batch_norm: true}
data: mnist
data_args: {batch_size: 64, subset: 256, val_size: 128, eval_subset: 128}
topologies:
  shallow-dense: {model_args: {widths: [8]}, compression: [1]}
  deep-sparse: {model_args: {widths: [16, 16]}}
space: {w_bits: [2, 32], a_bits: [2], compression: [1, 4], topology: [shallow-dense, deep-sparse]}
method: {block: 8, first_last_bits: [null, 8], train: {epochs: 1, lr: 0.01, optimizer: adam, max_steps_per_epoch: 2}}
"""


@pytest.fixture
def space_file(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text(TINY)
    return p


def test_space_validation(tmp_path):
    assert load_space(Path(__file__).parents[2] / "recipes" / "space-structured.yaml").n_designs() > 10
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("topology: [shallow-dense, deep-sparse]", "topology: [shallow-dense, wide]"))
    with pytest.raises(RecipeError, match="wide"):
        load_space(bad)
    bad.write_text(TINY.replace("method: {", "method: {w_bits: 2, "))
    with pytest.raises(RecipeError, match="design axes"):
        load_space(bad)


def test_explore_end_to_end_stop_resume_and_report(space_file, tmp_path, data_root):
    out = tmp_path / "out"
    quiet = lambda *_: None  # noqa: E731
    r1 = explore(None, space_file, n_trials=3, out_dir=out, data_root=data_root, threads=1, log=quiet)
    assert len(r1.trials) == 3
    r2 = explore("mlp", space_file, out_dir=out, data_root=data_root, threads=1, log=quiet)   # resume
    assert len(r2.trials) == 6
    assert {t["trial"] for t in r1.trials} <= {t["trial"] for t in r2.trials}   # kept, not redone
    assert {t["design"] for t in r2.trials} == {
        "shallow-dense W2A2 c1", "shallow-dense W32A2 c1", "deep-sparse W2A2 c1", "deep-sparse W2A2 c4",
        "deep-sparse W32A2 c1", "deep-sparse W32A2 c4"}
    expected = non_dominated(r2.trials, ["error", "total_memory_bits"], ["minimize", "minimize"])
    assert sorted(d["design"] for d in r2.pareto) == sorted(d["design"] for d in expected)
    for d in r2.pareto:
        assert Path(d["wz_path"]).is_file() and d["file_bytes"] == Path(d["wz_path"]).stat().st_size
        assert d["wz_test_accuracy"] == d["test_accuracy"]          # the file evaluates as reported
        assert d["total_memory_bits"] == d["weight_memory_bits"] + d["activation_memory_bits"]
    by = {d["design"]: d for d in r2.trials}
    assert by["deep-sparse W2A2 c4"]["weight_memory_bits"] < by["deep-sparse W2A2 c1"]["weight_memory_bits"] \
        < by["deep-sparse W32A2 c1"]["weight_memory_bits"]
    for key in ("front", "front_weight", "memory_breakdown"):
        assert Path(r2.files[key]).read_bytes()[:4] == b"\x89PNG"
    rep = json.loads((out / "explore.json").read_text())
    assert sorted(rep["pareto"]) == sorted(d["design"] for d in r2.pareto)
    assert "Pareto front" in (out / "pareto.md").read_text()
    # report only; a different space on the same study is refused
    assert len(explore(None, space_file, n_trials=0, out_dir=out, log=quiet).trials) == 6
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("a_bits: [2]", "a_bits: [4]"))
    with pytest.raises(WeightzipError, match="different space"):
        explore(None, other, storage=r2.storage, study_name=r2.study_name, out_dir=out, n_trials=0, log=quiet)


def test_failed_designs_are_requeued_once():
    space = load_space_text(TINY)
    study = optuna.create_study(directions=["minimize", "minimize"])
    dist = {"topology": optuna.distributions.CategoricalDistribution(["deep-sparse"])}
    t = study.ask(dist)
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    _requeue_failed(study, space)
    _requeue_failed(study, space)                                    # no duplicate while waiting
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == {"topology": "deep-sparse"}
    t2 = study.ask(dist)                                             # runs the queued design
    assert t2.number == waiting[0].number and t2.params == {"topology": "deep-sparse"}
    study.tell(t2, state=optuna.trial.TrialState.FAIL)               # failed again: stays failed
    _requeue_failed(study, space)
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def load_space_text(text):
    import yaml

    from weightzip.jobs.explore import ExploreSpace
    return ExploreSpace(**yaml.safe_load(text))


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from weightzip.jobs.explore import explore
    space, storage, out, barrier, me = sys.argv[1:6]
    def log(msg):
        if msg.startswith("explore "):            # study opened, about to optimize: wait for the other
            Path(barrier, me).touch()
            t0 = time.time()
            while len(list(Path(barrier).iterdir())) < 2 and time.time() - t0 < 120:
                time.sleep(0.05)
    explore(None, space, storage=storage, out_dir=out, threads=1, report=False, log=log)
""")


@pytest.mark.distributed
def test_two_worker_processes_share_one_sqlite_study(space_file, tmp_path, data_root):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**__import__("os").environ, "WEIGHTZIP_DATA": str(data_root)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(space_file), storage, str(tmp_path / "out"),
                               str(barrier), f"w{i}"], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    r = explore(None, space_file, storage=storage, n_trials=0, out_dir=tmp_path / "out", log=lambda *_: None)
    assert len(r.trials) == 6 and len({t["design"] for t in r.trials}) == 6
    workers = {t["worker"] for t in r.trials}
    assert len(workers) == 2                                          # both processes trained designs
    a = [t for t in r.trials if t["worker"] == sorted(workers)[0]]
    b = [t for t in r.trials if t["worker"] == sorted(workers)[1]]
    assert any(x["started"] < y["finished"] and y["started"] < x["finished"] for x in a for y in b)  # at once
