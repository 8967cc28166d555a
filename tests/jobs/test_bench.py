"""The bench job's inputs: token models get int64 ids in range, shaped as the recorded graph says."""
import torch
from torch import nn

import weightzip as wz
from weightzip.analysis.speed import bench_text
from weightzip.jobs.bench import bench, input_spec_of, recorded_examples, token_bound


class TokenClassifier(nn.Module):
    """A Hugging Face-like classifier: int64 ids [B, T] -> logits [B, 3]."""

    def __init__(self, vocab: int = 1000):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.emb(x).mean(1))  # [B, T, 8] -> [B, 8] -> [B, 3]


def _saved(tmp_path, vocab):
    torch.manual_seed(0)
    path = tmp_path / f"tok{vocab}.wz"
    wz.save(TokenClassifier(vocab), path, example_inputs=(torch.randint(0, vocab, (2, 5)),))
    return path


def test_token_model_gets_int64_ids_below_the_embedding_rows(tmp_path):
    small = wz.load(_saved(tmp_path, 30))
    assert token_bound(small) == 30
    spec = input_spec_of(small)
    assert spec.shape == (5,) and spec.dtype == torch.int64 and spec.batch_axis == 0 and spec.high == 30
    big = wz.load(_saved(tmp_path, 1000))
    assert input_spec_of(big).high == 100  # conservative: 0..min(100, rows)
    (ex,) = recorded_examples(big)
    assert ex.shape == (2, 5) and ex.dtype == torch.int64 and int(ex.max()) < 100


def test_token_bound_from_state_dict_names_when_no_embedding_module():
    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Parameter(torch.zeros(40, 4))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(nn.functional.embedding(x, self.wte))

    assert token_bound(F()) == 40
    assert token_bound(nn.Linear(4, 7)) == 7  # no embedding at all: below every matrix's rows


def test_bench_runs_a_token_model(tmp_path):
    out = bench(_saved(tmp_path, 1000), batch_sizes=(1, 4), repeat=1, number=2, modes=("sparse",),
                baselines=False)
    assert out["input_shape"] == [5] and out["input_dtype"] == "int64"
    rows = [r for r in out["rows"] if r["mode"] == "torch eager dense"]
    assert [r["batch"] for r in rows] == [1, 4] and all(r["us"] > 0 for r in rows)
    assert "random int64 ids in [0, 100)" in bench_text(out)
