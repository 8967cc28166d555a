"""weightzip verify / codec.verify: a complete check of a file without building a model."""
import json

import pytest
import torch
from typer.testing import CliRunner

from weightzip import api
from weightzip.cli import app
from weightzip.codec import container, encode, forge
from weightzip.codec.verify import verify
from weightzip.errors import WeightzipFormatError


@pytest.fixture
def wz(tmp_path):
    path = tmp_path / "m.wz"
    g = torch.Generator().manual_seed(0)
    container.write(path, {"model": {"name": "user model"}},
                    {"a": encode(torch.randn(30, 20, generator=g)), "b": encode(torch.tensor([1, 2, 3]))})
    return path


def test_verify_ok_and_report(wz):
    import weightzip

    top = weightzip.verify(wz)
    assert top["ok"] and top["n_tensors"] == 2                          # the package API is the same check
    r = verify(wz)
    assert r["ok"] and r["n_tensors"] == 2 and r["decoded_bytes"] == 30 * 20 * 4 + 3 * 8 and not r["errors"]
    assert [t["name"] for t in r["tensors"]] == ["a", "b"]


def test_verify_bad_files(wz, tmp_path):
    raw = forge.load(wz)
    s = raw.doc["tensors"]["a"]["streams"]["values"]
    raw.area[s["offset"]:s["offset"] + 4] = b"\x00\x00\xc0\x7f"                    # a NaN
    bad = tmp_path / "bad.wz"
    bad.write_bytes(forge.dump(raw))
    r = verify(bad)
    assert not r["ok"] and "NaN" in r["errors"][0] and r["tensors"][0]["error"]
    assert not verify(wz, max_decoded_bytes=1000)["ok"]
    with pytest.raises(WeightzipFormatError, match="not found"):
        verify(tmp_path / "missing.wz")


def test_cli_verify_exit_codes_and_json(wz, tmp_path, monkeypatch):
    monkeypatch.setenv(container.MAX_DECODED_ENV, "2G")   # restored afterwards: the group option sets it
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(wz)])
    assert ok.exit_code == 0 and "ok (2 tensors" in ok.output
    js = runner.invoke(app, ["verify", "--json", str(wz)])
    assert js.exit_code == 0 and json.loads(js.output)["ok"] is True
    small = runner.invoke(app, ["verify", "--max-decoded-bytes", "1K", str(wz)])
    assert small.exit_code == 1 and "max_decoded_bytes=1024" in small.output
    glob = runner.invoke(app, ["--max-decoded-bytes", "1K", "verify", "--json", str(wz)])
    assert glob.exit_code == 1 and not json.loads(glob.stdout)["ok"]
    trunc = tmp_path / "t.wz"
    trunc.write_bytes(wz.read_bytes()[:-3])
    assert runner.invoke(app, ["verify", str(trunc)]).exit_code == 1


def test_load_takes_max_decoded_bytes(wz):
    with pytest.raises(WeightzipFormatError, match="more than max_decoded_bytes=100"):
        api.load(wz, model=torch.nn.Module(), max_decoded_bytes=100)
    assert container.parse_size("8G") == 8 << 30 and container.parse_size("512m") == 512 << 20
    with pytest.raises(ValueError, match="byte count"):
        container.parse_size("lots")
