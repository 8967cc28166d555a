"""Penn Treebank: tokenization, vocabulary, loaders; tiny synthetic files and the real ones."""
from __future__ import annotations

import pytest
import torch

from weightzip.data import get_dataset, get_loaders, load_raw
from weightzip.data.ptb import tokenize_chars, tokenize_words
from weightzip.errors import WeightzipError

from .fakes import make_ptb_dir

TRAIN = " the cat sat\n the dog <unk> sat\n\n"
VALID = " the dog sat\n"
TEST = " a cat\n"  # 'a' is not in train: mapped to <unk> at word level


def test_tokenizers_follow_the_word_language_model_example():
    assert tokenize_words(TRAIN) == "the cat sat <eos> the dog <unk> sat <eos> <eos>".split()
    assert tokenize_chars(" ab c\n") == ["a", "b", "_", "c", "<eos>"]


def test_synthetic_ptb_word_and_char(tmp_path, fake_home):
    d = make_ptb_dir(tmp_path / "ptb", TRAIN, VALID, TEST)
    raw = load_raw("ptb", tmp_path, check_md5=False)
    assert raw.vocab.itos == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert raw.vocab.decode(raw.test) == ["<unk>", "cat", "<eos>"]
    assert get_dataset("ptb", "valid", root=d, check_md5=False).tolist() == [0, 4, 2, 3]
    L = get_loaders("ptb", batch_size=2, eval_batch_size=1, bptt=3, root=tmp_path, check_md5=False)
    assert L.task == "lm" and L.info["vocab_size"] == 6 and L.info["eos_id"] == 3
    x, y = next(iter(L.train))
    assert x.dtype == y.dtype == torch.int64 and x.shape == (3, 2) and y.shape == (3, 2)
    assert raw.vocab.decode(x[:, 0]) == ["the", "cat", "sat"] and raw.vocab.decode(y[:, 0]) == ["cat", "sat", "<eos>"]
    c = load_raw("ptb_char", tmp_path, check_md5=False)
    assert c.vocab.itos[:4] == ["t", "h", "e", "_"] and "<eos>" in c.vocab and " " not in c.vocab
    assert c.vocab.decode(c.valid) == list("the_dog_sat") + ["<eos>"]
    # a character missing from train cannot be mapped at character level (no <unk> there)
    z = make_ptb_dir(tmp_path / "z" / "ptb", TRAIN, VALID, " zebra\n")
    assert load_raw("ptb", z, check_md5=False).vocab.decode(load_raw("ptb", z, check_md5=False).test)[0] == "<unk>"
    with pytest.raises(WeightzipError, match=r"ptb\.test\.txt contains token 'z' that is not in the training"):
        load_raw("ptb_char", z, check_md5=False)


def test_lm_arguments(tmp_path, fake_home):
    make_ptb_dir(tmp_path / "ptb", TRAIN * 3, VALID, TEST)
    kw = dict(root=tmp_path, check_md5=False, batch_size=2, eval_batch_size=1, bptt=2)
    assert get_loaders("ptb", val_size=0, **kw).val is None
    with pytest.raises(ValueError, match="own validation split"):
        get_loaders("ptb", val_size=10, **kw)
    with pytest.raises(ValueError, match="only defined for image datasets"):
        get_loaders("ptb", augment=True, **kw)
    sub = get_loaders("ptb", subset=8, eval_subset=3, **kw)
    assert sub.info["num_train_tokens"] == 8 and sub.train.data.shape == (4, 2)
    assert sub.info["num_test_tokens"] == 3


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_ptb_word(data_root):
    raw = load_raw("ptb", data_root)
    assert len(raw.vocab) == 10000 and "<eos>" in raw.vocab and "<unk>" in raw.vocab
    assert (raw.train.numel(), raw.valid.numel(), raw.test.numel()) == (929589, 73760, 82430)
    first_line = (data_root / "ptb" / "ptb.train.txt").read_text().split("\n", 1)[0].split()
    assert raw.vocab.decode(raw.train[: len(first_line) + 1]) == first_line + ["<eos>"]
    assert raw.vocab.itos[: len(first_line)] == first_line  # ids in order of first appearance
    eos = raw.vocab.stoi["<eos>"]
    assert int((raw.train == eos).sum()) == 42068 and int((raw.valid == eos).sum()) == 3370
    assert int((raw.test == eos).sum()) == 3761
    assert int((raw.valid == raw.vocab.stoi["<unk>"]).sum()) > 0
    L = get_loaders("ptb", batch_size=20, bptt=35, root=data_root)
    assert L.info["vocab_size"] == 10000 and L.train.batch_size == 20
    assert len(L.train) == -(-(929589 // 20 - 1) // 35)
    x, y = next(iter(L.train))
    assert x.shape == y.shape == (35, 20) and torch.equal(x[1:], y[:-1])


@pytest.mark.slow
def test_real_ptb_char(data_root):
    raw = load_raw("ptb_char", data_root)
    text = (data_root / "ptb" / "ptb.train.txt").read_text()
    assert raw.train.numel() == sum(len("_".join(line.split())) + 1 for line in text.split("\n")[:-1])
    assert len(raw.vocab) == len(set("".join(text.split()))) + 2  # characters + '_' + <eos>
    L = get_loaders("ptb_char", batch_size=32, bptt=100, root=data_root)
    assert L.info["level"] == "char" and next(iter(L.val))[0].shape == (100, 32)
