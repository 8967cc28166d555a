"""A throw-away PostgreSQL server for tests: unix socket only (no TCP port), stopped at the end.

Tried in order:

1. PyPI ``pgserver`` (in the ``dev`` extra): bundled PostgreSQL binaries; it
   listens on no IP address (``-h ""``), only on a socket in a private folder. As root it runs
   the server as a system user ``pgserver`` (it creates one: PostgreSQL refuses to run as root).
2. The system's PostgreSQL (Debian ``postgresql``: ``initdb`` / ``pg_ctl`` on ``PATH`` or under
   ``/usr/lib/postgresql/<v>/bin``), as the ``postgres`` user when running as root.

:func:`start` returns a :class:`Server` (``.url``: a ``postgresql://`` URL for SQLAlchemy
with psycopg (3); ``.stop()``) or raises :class:`Unavailable` saying why neither could start.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class Unavailable(RuntimeError):
    """No PostgreSQL server can start here (the message says why, for ``pytest.skip``)."""


@dataclass
class Server:
    url: str
    how: str
    stop: Callable[[], None]


def _driver() -> None:
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2 maps postgresql:// to psycopg 3)
    except ImportError as e:
        raise Unavailable(f"no PostgreSQL driver ({e}); pip install 'weightzip[postgres]'") from None


def _pgserver(root: Path) -> Server:
    import warnings

    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set, falling back to /tmp/..."
        warnings.simplefilter("ignore")
        import pgserver

        srv = pgserver.get_server(root / "pgserver", cleanup_mode="stop")
    return Server(srv.get_uri(), f"pgserver {getattr(pgserver, '__version__', '')}".strip(), srv.cleanup)


def _system_bin() -> Path:
    for d in [os.path.dirname(shutil.which("initdb") or "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                                     reverse=True):
        if d and Path(d, "initdb").is_file() and Path(d, "pg_ctl").is_file():
            return Path(d)
    raise Unavailable("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")


def _system(root: Path | None = None) -> Server:
    bindir = _system_bin()
    prefix: list[str] = []
    # data and socket in a fresh short folder under the temp dir (``root`` may sit below folders
    # the ``postgres`` user cannot enter, and a unix socket path must fit in ~107 bytes)
    top = Path(tempfile.mkdtemp(prefix="wzpg-"))
    data, sock = top / "data", top / "sock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(top)
            raise Unavailable("running as root and there is no 'postgres' user to run the server as") from None
        runuser = shutil.which("runuser")
        if not runuser:
            shutil.rmtree(top)
            raise Unavailable("running as root and no runuser to start the server as 'postgres'")
        prefix = [runuser, "-u", "postgres", "--"]
        for p in (top, data, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)

    def run(*args: str) -> None:
        r = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise Unavailable(f"{Path(args[0]).name} failed: {(r.stderr or r.stdout).strip()[-500:]}")

    def stop() -> None:
        try:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop")
        finally:
            shutil.rmtree(top, ignore_errors=True)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "30", "-l", str(data / "log"),
            "-o", f"-h '' -k {sock}", "start")
    except BaseException:
        if (data / "postmaster.pid").exists():
            stop()
        shutil.rmtree(top, ignore_errors=True)
        raise
    return Server(f"postgresql://postgres@/postgres?host={sock}", f"system PostgreSQL ({bindir})", stop)


def start(root: Path) -> Server:
    """Start a server (pgserver's files under ``root``, the system server's in a fresh temp folder
    removed by ``stop``); :class:`Unavailable` if none can start."""
    _driver()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    why = []
    try:
        return _pgserver(root)
    except ImportError as e:
        why.append(f"pgserver not installed ({e})")
    except Exception as e:  # noqa: BLE001 - any failure: try the next way, report all
        why.append(f"pgserver failed: {type(e).__name__}: {e}")
    try:
        return _system(root)
    except Unavailable as e:
        why.append(str(e))
    except Exception as e:  # noqa: BLE001
        why.append(f"system PostgreSQL failed: {type(e).__name__}: {e}")
    raise Unavailable("no PostgreSQL server could start: " + "; ".join(why))
