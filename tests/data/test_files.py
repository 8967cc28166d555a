"""Root resolution, the missing-data message, md5 checks and the injectable downloader."""
from __future__ import annotations

import gzip

import pytest

from weightzip.data import files, get_loaders, resolve_root
from weightzip.data.files import FileSpec, read_verified
from weightzip.data.mnist import MNIST_FILES
from weightzip.errors import DataNotFoundError, WeightzipError

from .fakes import make_ptb_dir, md5


def test_missing_data_names_every_directory_and_file(tmp_path, fake_home, monkeypatch):
    env_root = tmp_path / "env"
    monkeypatch.setenv("WEIGHTZIP_DATA", str(env_root))
    arg_root = tmp_path / "arg"
    (arg_root / "mnist").mkdir(parents=True)
    (arg_root / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataNotFoundError) as exc:
        get_loaders("mnist", root=arg_root)
    msg = str(exc.value)
    for d in (arg_root / "mnist", arg_root, env_root / "mnist", fake_home / ".cache" / "weightzip" / "mnist"):
        assert str(d) in msg
    for f in MNIST_FILES.files:
        assert f.name in msg
    assert "missing train-images-idx3-ubyte.gz, t10k-images" in msg  # the partial folder says what lacks
    assert "no such directory" in msg
    assert "WEIGHTZIP_NO_DOWNLOAD" in msg
    assert "WEIGHTZIP_DATA" in msg  # the fix


def test_missing_data_is_a_filenotfounderror(tmp_path, fake_home, monkeypatch):
    monkeypatch.delenv("WEIGHTZIP_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        resolve_root("cifar10", root=tmp_path)


def test_download_false_overrides_and_mentions_it(tmp_path, fake_home, monkeypatch):
    monkeypatch.delenv("WEIGHTZIP_NO_DOWNLOAD")
    monkeypatch.delenv("WEIGHTZIP_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match=r"download=False"):
        resolve_root("ptb", root=tmp_path, download=False)


def test_injected_downloader_fills_the_cache(tmp_path, fake_home, monkeypatch):
    monkeypatch.delenv("WEIGHTZIP_DATA", raising=False)
    calls = []

    def fake_download(ds, dest):
        calls.append((ds.key, dest))
        make_ptb_dir(dest, " a b\n b c\n", " a\n", " c\n")

    files.set_downloader(fake_download)  # the autouse fixture restores the previous one
    d = resolve_root("ptb", root=tmp_path / "nothing", download=True)
    assert d == fake_home / ".cache" / "weightzip" / "ptb"
    assert calls == [("ptb", d)]
    loaders = get_loaders("ptb", batch_size=2, eval_batch_size=1, bptt=2, check_md5=False)  # now found in the cache
    assert loaders.info["vocab_size"] == 4  # a b <eos> c
    assert len(calls) == 1


def test_failed_download_is_reported(tmp_path, fake_home, monkeypatch):
    monkeypatch.delenv("WEIGHTZIP_DATA", raising=False)

    def broken(ds, dest):
        raise OSError("disk full")

    files.set_downloader(broken)
    with pytest.raises(DataNotFoundError, match="download into .* failed: OSError: disk full"):
        resolve_root("ptb", root=tmp_path, download=True)


def test_root_may_be_the_dataset_folder_itself(tmp_path, fake_home):
    d = make_ptb_dir(tmp_path / "myptb", " x y\n", " x\n", " y\n")
    assert resolve_root("ptb", root=d) == d


def test_root_argument_wins_over_environment(tmp_path, fake_home, monkeypatch):
    a = make_ptb_dir(tmp_path / "a" / "ptb", " a\n", " a\n", " a\n")
    b = make_ptb_dir(tmp_path / "b" / "ptb", " b\n", " b\n", " b\n")
    monkeypatch.setenv("WEIGHTZIP_DATA", str(tmp_path / "b"))
    assert resolve_root("ptb") == b
    assert resolve_root("ptb", root=tmp_path / "a") == a


def test_gz_variant_is_found_and_checked_on_its_contents(tmp_path):
    content = b"hello world\n" * 100
    spec = FileSpec("hello.txt", md5(content), gz_ok=True)
    (tmp_path / "hello.txt.gz").write_bytes(gzip.compress(content, mtime=0))
    assert files.locate_file(tmp_path, spec) == tmp_path / "hello.txt.gz"
    assert read_verified(tmp_path, spec) == content
    # a .gz copy is not accepted for a file that is not marked gz_ok
    assert files.locate_file(tmp_path, FileSpec("hello.txt", "0" * 32)) is None


def test_md5_mismatch_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    (tmp_path / "f.bin").write_bytes(b"tampered")
    spec = FileSpec("f.bin", md5(b"original"))
    with pytest.raises(WeightzipError, match=r"md5 mismatch for .*f\.bin.*check_md5=False"):
        read_verified(tmp_path, spec)
    assert read_verified(tmp_path, spec, check_md5=False) == b"tampered"
    monkeypatch.setenv("WEIGHTZIP_NO_MD5", "1")
    assert read_verified(tmp_path, spec) == b"tampered"


def test_md5_is_checked_once_per_file(tmp_path, monkeypatch):
    data = b"abc" * 1000
    (tmp_path / "f.bin").write_bytes(data)
    spec = FileSpec("f.bin", md5(data))
    n = []
    real = files.md5_hex
    monkeypatch.setattr(files, "md5_hex", lambda b: n.append(1) or real(b))
    for _ in range(3):
        read_verified(tmp_path, spec)
    assert len(n) == 1
    (tmp_path / "f.bin").write_bytes(b"changed!")  # a changed file is checked again
    with pytest.raises(WeightzipError, match="md5 mismatch"):
        read_verified(tmp_path, spec)


def test_corrupt_gzip_copy_is_reported(tmp_path):
    (tmp_path / "x.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(WeightzipError, match=r"x\.txt\.gz is not a valid gzip file"):
        read_verified(tmp_path, FileSpec("x.txt", "0" * 32, gz_ok=True))


def test_network_probe_reports_an_unreachable_host():
    ok, why = files.network_reachable("http://127.0.0.1:9/", timeout=1.0)  # discard port: refused
    assert not ok and "network unreachable" in why


def test_candidate_roots_order(tmp_path, fake_home, monkeypatch):
    monkeypatch.setenv("WEIGHTZIP_DATA", str(tmp_path / "env"))
    roots = files.candidate_roots(tmp_path / "arg")
    assert [r for _, r in roots] == [tmp_path / "arg", tmp_path / "env", fake_home / ".cache" / "weightzip"]
