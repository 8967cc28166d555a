"""Dataset table, registry dispatch and the Loaders bundle."""
from __future__ import annotations

import dataclasses

import pytest

from weightzip.core import registry
from weightzip.data import DATASETS, Loaders, get_dataset, get_loaders, resolve_root
from weightzip.errors import UnknownNameError

NAMES = ["cifar10", "fashion_mnist", "mnist", "ptb", "ptb_char"]


def test_every_dataset_is_registered_and_described():
    assert sorted(DATASETS) == NAMES
    assert set(NAMES) <= set(registry.list_datasets())
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.task in ("classify", "lm")
        assert spec.files.files and all(len(f.md5) == 32 for f in spec.files.files)
        assert (spec.default_val_size is None) == (spec.task == "lm")


def test_unknown_name_lists_the_valid_ones():
    for call in (lambda: get_loaders("imagenet"), lambda: resolve_root("imagenet"),
                 lambda: get_dataset("imagenet")):
        with pytest.raises(UnknownNameError) as exc:
            call()
        assert "imagenet" in str(exc.value) and all(n in str(exc.value) for n in NAMES)


def test_loaders_fields():
    fields = [f.name for f in dataclasses.fields(Loaders)]
    assert fields[:5] == ["train", "val", "test", "task", "info"]


def test_dataset_subfolders_match_the_shared_layout():
    sub = {n: s.files.subdir for n, s in DATASETS.items()}
    assert sub == {"mnist": "mnist", "fashion_mnist": "fashion-mnist",
                   "cifar10": "cifar10/cifar-10-batches-py", "ptb": "ptb", "ptb_char": "ptb"}


@pytest.mark.slow
def test_shared_data_resolves_from_the_environment(data_root, fake_home, monkeypatch):
    monkeypatch.setenv("WEIGHTZIP_DATA", str(data_root))
    for name in NAMES:
        assert resolve_root(name) == data_root / DATASETS[name].files.subdir
