"""Where dataset files live, how they are checked, and how missing ones are fetched.

Every dataset is described by a :class:`DatasetFiles`: a subfolder (``mnist/``,
``fashion-mnist/``, ``cifar10/cifar-10-batches-py/``, ``ptb/``) and the files expected in it,
each with the md5 of its published (canonical) form.

Root resolution (:func:`find_dataset_dir`), first match wins:

1. the ``root`` argument (``--data-dir``): ``root/<subfolder>``, or ``root`` itself when it
   already holds the files;
2. ``$WEIGHTZIP_DATA/<subfolder>``;
3. ``~/.cache/weightzip/<subfolder>``.

If no candidate holds every file and downloads are allowed (not ``download=False``, not
``WEIGHTZIP_NO_DOWNLOAD=1``) and the network answers a quick ``HEAD``, the files are downloaded
from the canonical sources into ``~/.cache/weightzip/<subfolder>`` and their md5 checked.
Otherwise :class:`~weightzip.errors.DataNotFoundError` is raised with one message naming every
directory searched and the files expected.

md5: :func:`read_verified` returns a file's canonical bytes (a ``NAME.gz`` variant is
decompressed first, so ``gzip -9 -n`` copies pass) and compares their md5 with the published
value, once per file per process. ``check_md5=False`` or ``WEIGHTZIP_NO_MD5=1`` skips it.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataNotFoundError, WeightzipError
from ..fileio import atomic_write

__all__ = [
    "FileSpec",
    "ArchiveSpec",
    "DatasetFiles",
    "cache_dir",
    "candidate_roots",
    "find_dataset_dir",
    "locate_file",
    "read_verified",
    "md5_hex",
    "set_downloader",
    "download_dataset",
    "network_reachable",
]

_TRUTHY = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class FileSpec:
    """One expected file.

    ``name``: canonical file name; ``md5``: md5 of the canonical file (as published);
    ``gz_ok``: a gzip-compressed copy ``name + ".gz"`` is accepted too (its *decompressed*
    bytes must have ``md5``); ``url``: where to download the canonical file (``None`` when it
    comes from an :class:`ArchiveSpec`).
    """

    name: str
    md5: str
    gz_ok: bool = False
    url: str | None = None


@dataclass(frozen=True)
class ArchiveSpec:
    """A tarball holding the files: ``url``, its ``md5`` and the folder ``member_dir`` inside it."""

    url: str
    md5: str
    member_dir: str


@dataclass(frozen=True)
class DatasetFiles:
    """Files of one dataset: ``subdir`` below a data root and the expected :class:`FileSpec` s."""

    key: str
    subdir: str
    files: tuple[FileSpec, ...]
    archive: ArchiveSpec | None = None

    def probe_url(self) -> str | None:
        if self.archive is not None:
            return self.archive.url
        return next((f.url for f in self.files if f.url), None)


# --------------------------------------------------------------------------- roots


def cache_dir() -> Path:
    """``~/.cache/weightzip``: the last place searched and where downloads go."""
    return Path(os.path.expanduser("~")) / ".cache" / "weightzip"


def candidate_roots(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Data roots in search order, each with where it came from: ``root`` argument,
    ``$WEIGHTZIP_DATA``, ``~/.cache/weightzip``."""
    out: list[tuple[str, Path]] = []
    if root is not None:
        out.append(("root argument", Path(root).expanduser()))
    env = os.environ.get("WEIGHTZIP_DATA")
    if env:
        out.append(("$WEIGHTZIP_DATA", Path(env).expanduser()))
    out.append(("default cache", cache_dir()))
    return out


def locate_file(directory: Path, spec: FileSpec) -> Path | None:
    """The path of ``spec`` in ``directory`` (plain name first, then ``.gz`` if allowed)."""
    p = directory / spec.name
    if p.is_file():
        return p
    if spec.gz_ok:
        q = directory / (spec.name + ".gz")
        if q.is_file():
            return q
    return None


def _missing(directory: Path, ds: DatasetFiles) -> list[str]:
    return [f.name for f in ds.files if locate_file(directory, f) is None]


def _candidate_dirs(ds: DatasetFiles, root) -> list[tuple[str, Path]]:
    dirs: list[tuple[str, Path]] = []
    for origin, r in candidate_roots(root):
        dirs.append((origin, r / ds.subdir))
        if origin == "root argument":
            dirs.append((origin, r))  # root may point at the dataset folder itself
    seen, uniq = set(), []
    for origin, d in dirs:
        if d not in seen:
            seen.add(d)
            uniq.append((origin, d))
    return uniq


# --------------------------------------------------------------------------- downloads

Downloader = Callable[[DatasetFiles, Path], None]
_downloader: Downloader | None = None  # None -> the built-in urllib downloader


def set_downloader(fn: Downloader | None) -> Downloader | None:
    """Replace the download function ``fn(dataset_files, dest_dir)`` (``None`` restores the
    built-in one). Returns the previous one. Tests use it to make sure nothing is fetched."""
    global _downloader
    prev, _downloader = _downloader, fn
    return prev


def downloads_allowed(download: bool | None = None) -> tuple[bool, str]:
    """Whether a download may be tried, and why not. ``download=True`` overrides the
    environment, ``None`` (default) allows it unless ``WEIGHTZIP_NO_DOWNLOAD=1``."""
    if download is True:
        return True, ""
    if download is False:
        return False, "downloads disabled (download=False)"
    if os.environ.get("WEIGHTZIP_NO_DOWNLOAD", "").strip().lower() in _TRUTHY:
        return False, "downloads disabled by WEIGHTZIP_NO_DOWNLOAD=1"
    return True, ""


def network_reachable(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """A quick ``HEAD url`` with a short timeout: ``(reachable, reason)``. Any HTTP answer,
    even an error status, counts as reachable."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "weightzip"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""
    except Exception as e:  # URLError, timeout, DNS failure, ...
        return False, f"network unreachable (HEAD {url} failed: {e})"


def _fetch(url: str, dest: Path, md5: str | None) -> None:
    def download(out) -> None:
        h = hashlib.md5()
        req = urllib.request.Request(url, headers={"User-Agent": "weightzip"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if md5 is not None and h.hexdigest() != md5:
            raise WeightzipError(
                f"downloaded {url} has md5 {h.hexdigest()}, expected {md5}; the mirror served "
                "a different file. Download it by hand and put it in " + str(dest.parent)
            )

    atomic_write(dest, download, suffix=".part")  # a failed or bad download leaves no file


def _default_downloader(ds: DatasetFiles, dest: Path) -> None:
    """Download ``ds`` into ``dest`` from the canonical sources, checking every md5."""
    dest.mkdir(parents=True, exist_ok=True)
    if ds.archive is not None:
        with tempfile.TemporaryDirectory(dir=dest.parent) as td:
            tar_path = Path(td) / "archive.tar.gz"
            _fetch(ds.archive.url, tar_path, ds.archive.md5)
            with tarfile.open(tar_path, "r:gz") as tar:
                prefix = ds.archive.member_dir.rstrip("/") + "/"
                for f in ds.files:
                    member = tar.getmember(prefix + f.name)
                    src = tar.extractfile(member)
                    if src is None:
                        raise WeightzipError(f"{ds.archive.url}: {member.name} is not a file")
                    part = dest / ("." + f.name + ".part")
                    with src, open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    os.replace(part, dest / f.name)
    else:
        for f in ds.files:
            if locate_file(dest, f) is None:
                if f.url is None:
                    raise WeightzipError(f"no download URL known for {f.name}")
                _fetch(f.url, dest / f.name, f.md5)
    for f in ds.files:  # verify what landed on disk
        read_verified(dest, f, check_md5=True)


def download_dataset(ds: DatasetFiles, dest: Path) -> None:
    """Run the configured downloader (see :func:`set_downloader`)."""
    (_downloader or _default_downloader)(ds, dest)


# --------------------------------------------------------------------------- resolution


def find_dataset_dir(
    ds: DatasetFiles,
    root: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    display_name: str | None = None,
) -> Path:
    """The directory holding every file of ``ds`` (see the module docstring for the order).

    Raises :class:`DataNotFoundError` naming each directory searched, what was missing there,
    the files expected, and why nothing was downloaded.
    """
    searched = _candidate_dirs(ds, root)
    report = []
    for origin, d in searched:
        if d.is_dir():
            missing = _missing(d, ds)
            if not missing:
                return d
            report.append(f"  {d}  [{origin}]: missing {', '.join(missing)}")
        else:
            report.append(f"  {d}  [{origin}]: no such directory")

    name = display_name or ds.key
    dest = cache_dir() / ds.subdir
    ok, why_not = downloads_allowed(download)
    if ok and _downloader is None:
        url = ds.probe_url()
        ok, why_not = network_reachable(url) if url else (False, "no download source known")
    if ok:
        try:
            download_dataset(ds, dest)
        except Exception as e:
            why_not = f"download into {dest} failed: {type(e).__name__}: {e}"
        else:
            if not _missing(dest, ds):
                return dest
            why_not = f"download into {dest} left files missing: {', '.join(_missing(dest, ds))}"

    gz = any(f.gz_ok for f in ds.files)
    raise DataNotFoundError(
        f"dataset {name!r} not found. Directories searched, in order:\n"
        + "\n".join(report)
        + f"\nExpected files in one directory: {', '.join(f.name for f in ds.files)}"
        + (" (each may also be gzip-compressed as NAME.gz)" if gz else "")
        + f".\nNot downloaded: {why_not}."
        + f"\nFix: copy the files into one of these directories (for example set "
        f"WEIGHTZIP_DATA=/path/to/data with the files in /path/to/data/{ds.subdir}/), or pass "
        "root=/path/to/data (--data-dir)."
    )


# --------------------------------------------------------------------------- md5

_VERIFIED: set[tuple[str, int, int]] = set()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _md5_disabled() -> bool:
    return os.environ.get("WEIGHTZIP_NO_MD5", "").strip().lower() in _TRUTHY


def read_verified(directory: Path, spec: FileSpec, *, check_md5: bool = True) -> bytes:
    """The canonical bytes of ``spec`` in ``directory``; a ``.gz`` variant is decompressed.

    If ``check_md5`` (and not ``WEIGHTZIP_NO_MD5=1``) the md5 of the returned bytes must equal
    ``spec.md5``; a file passes once per process (keyed by path, size and mtime).
    """
    path = locate_file(Path(directory), spec)
    if path is None:
        raise DataNotFoundError(
            f"{spec.name} not found in {directory} (also looked for {spec.name}.gz)"
            if spec.gz_ok
            else f"{spec.name} not found in {directory}"
        )
    raw = path.read_bytes()
    compressed_copy = path.name != spec.name
    if compressed_copy:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise WeightzipError(
                f"{path} is not a valid gzip file ({e}); replace it with the original {spec.name} "
                "or a gzip copy of it"
            ) from e
    if check_md5 and not _md5_disabled():
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            got = md5_hex(raw)
            if got != spec.md5:
                what = "decompressed contents of " if compressed_copy else ""
                raise WeightzipError(
                    f"md5 mismatch for {path}: the {what}file has md5 {got}, the published "
                    f"{spec.name} has {spec.md5}. The file is corrupt or a different version: "
                    "replace it with the original (delete it to let weightzip download it when "
                    "the network is reachable), or skip the check with check_md5=False or "
                    "WEIGHTZIP_NO_MD5=1."
                )
            _VERIFIED.add(key)
    return raw
