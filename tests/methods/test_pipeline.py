"""Pipeline without data: post-training stages run, evaluation is skipped, training stages refuse."""
import pytest
import torch

import weightzip as wz
from weightzip.core.recipe import Recipe
from weightzip.errors import MissingDataError
from weightzip.methods.base import NO_VALIDATION, StageContext
from weightzip.methods.pipeline import Pipeline

from .dc_toy import toy_loaders, toy_model

POST_TRAINING = {"name": "ptq", "stages": [
    {"method": "prune_magnitude", "sparsity": 0.5},
    {"method": "kmeans_share", "bits": 3, "select": {"names": ["0"]}},
    {"method": "pq_share", "d": 4, "k": 4, "select": {"names": ["2"]}},
]}


def _quiet(**kw):
    return dict(log=lambda *_: None, **kw)


def test_post_training_recipe_runs_without_data_and_skips_evaluation():
    model = toy_model()
    result = wz.compress(model, Recipe.from_dict(POST_TRAINING), **_quiet())
    assert result.baseline == {"val": NO_VALIDATION}
    assert [s.method for s in result.stages] == ["prune_magnitude", "kmeans_share", "pq_share"]
    assert all(s.metrics["val"] == NO_VALIDATION for s in result.stages)
    assert len(torch.unique(model[0].weight)) <= 2 ** 3 + 1  # shared: <= 8 centroids (+ pruned 0)
    assert model(torch.randn(2, 16)).shape == (2, 3)


def test_uniform_quantization_runs_without_data():
    model = toy_model()
    recipe = Recipe.from_dict({"name": "u", "stages": [{"method": "quantize_uniform", "bits": 4}]})
    result = wz.compress(model, recipe, **_quiet())
    assert result.stages[0].metrics["val"] == NO_VALIDATION


@pytest.mark.parametrize("stage, block", [
    ({"method": "kmeans_share", "bits": 3, "finetune": {"epochs": 1}}, "finetune"),
    ({"method": "finetune", "train": {"epochs": 1}}, "train"),
    ({"method": "variational_dropout"}, "train"),
])
def test_a_training_stage_without_data_names_the_stage_and_the_fix(stage, block):
    recipe = Recipe.from_dict({"name": "t", "stages": [{"method": "prune_magnitude", "sparsity": 0.5}, stage]})
    model = toy_model()
    before = model[0].weight.detach().clone()
    with pytest.raises(MissingDataError) as e:
        wz.compress(model, recipe, **_quiet())
    msg = str(e.value)
    assert f"stage 1 ({stage['method']})" in msg and "training data" in msg
    assert f"its `{block}` block trains the model" in msg
    assert "train_loader" in msg and "--data" in msg and "remove the training / fine-tune block" in msg
    assert torch.equal(model[0].weight, before)  # refused before any stage ran


def test_sensitivity_scan_without_data_is_refused_up_front():
    recipe = Recipe.from_dict({"name": "s", "stages": [
        {"method": "prune_magnitude", "sensitivity": {"grid": [0.5, 1.0]}}]})
    with pytest.raises(MissingDataError, match=r"stage 0 \(prune_magnitude\) needs validation data"):
        wz.compress(toy_model(), recipe, **_quiet())


def test_train_loader_only_trains_and_skips_evaluation():
    ld = toy_loaders()
    recipe = Recipe.from_dict({"name": "f", "stages": [
        {"method": "kmeans_share", "bits": 3, "finetune": {"epochs": 1, "progress": False}}]})
    result = wz.compress(toy_model(), recipe, train_loader=ld.train, **_quiet())
    assert result.baseline["val"] == NO_VALIDATION
    assert result.stages[0].metrics["val"] == NO_VALIDATION and result.stages[0].metrics["train_history"]


def test_with_data_the_metrics_are_numbers():
    ld = toy_loaders()
    result = wz.compress(toy_model(), Recipe.from_dict(POST_TRAINING), ld.train, ld.val, **_quiet())
    assert set(result.baseline["val"]) == {"loss", "accuracy"}


def test_ctx_fit_without_a_train_loader_names_the_stage():
    ctx = StageContext(loaders=None, log=lambda *_: None, stage="stage 3 (finetune)")
    with pytest.raises(MissingDataError, match=r"stage 3 \(finetune\) needs training data"):
        ctx.fit(toy_model(), {"epochs": 1})
    assert ctx.evaluate(toy_model()) == NO_VALIDATION


def test_check_data_only_checks_the_stages_left():
    recipe = Recipe.from_dict({"name": "t", "stages": [
        {"method": "finetune", "train": {"epochs": 1}}, {"method": "kmeans_share", "bits": 3}]})
    pipe = Pipeline(recipe, StageContext(loaders=None, log=lambda *_: None))
    with pytest.raises(MissingDataError, match="stage 0"):
        pipe.check_data()
    pipe.check_data(1)  # a resumed run past the fine-tune needs no data


def test_every_committed_recipe_stage_says_what_data_it_needs():
    """needs_data() runs on every stage of every committed recipe (it read fields a method's
    config does not have once) and returns {split: why}."""
    from pathlib import Path

    from weightzip.core.recipe import Recipe
    from weightzip.core.registry import get_method

    import yaml

    recipes = [p for p in sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
               if "space" not in (yaml.safe_load(p.read_text()) or {})]  # explore spaces are not recipes
    assert recipes
    for path in recipes:
        for st in Recipe.from_yaml(path).stages:
            needs = get_method(st.method)(st).needs_data()
            assert isinstance(needs, dict) and all(isinstance(v, str) for v in needs.values()), (path, st.method)
