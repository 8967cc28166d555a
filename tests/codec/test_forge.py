"""The forger: files taken apart and put back with every checksum valid; seeded random mutations."""
import random

import torch

from weightzip.codec import container, decode, encode, forge


def _file(tmp_path):
    path = tmp_path / "m.wz"
    container.write(path, {"model": {"name": "x"}}, {"w": encode(torch.arange(12.0).reshape(3, 4)),
                                                     "n": encode(torch.tensor([5]))})
    return path


def test_load_dump_round_trip_and_set_stream(tmp_path):
    path = _file(tmp_path)
    raw = forge.load(path)
    assert set(raw.doc["tensors"]) == {"w", "n"} and raw.doc["model"] == {"name": "x"}
    out = tmp_path / "o.wz"
    out.write_bytes(forge.dump(raw.copy(), compress=False))
    _, fm = container.read(out)
    assert torch.equal(decode(fm["w"]), torch.arange(12.0).reshape(3, 4))
    r = raw.copy()
    forge.set_stream(r, "n", "data", (7).to_bytes(8, "little"))
    out.write_bytes(forge.dump(r))                    # CRC of the moved stream recomputed
    _, fm = container.read(out)
    assert decode(fm["n"]).tolist() == [7]
    assert len(raw.area) < len(r.area)                # the copy was changed, not the original


def test_random_mutations_are_seeded(tmp_path):
    raw = forge.load(_file(tmp_path))
    a = [forge.random_mutation(raw, random.Random(3))[1] for _ in range(5)]
    b = [forge.random_mutation(raw, random.Random(3))[1] for _ in range(5)]
    assert a == b and all(d.split(" ", 1)[0] in forge.MUTATIONS for d in a)
