"""Text tables for the CLI (rich, rendered to a string so the CLI just prints it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _render(table: Table) -> str:
    console = Console(width=160, record=True, force_terminal=False)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def size_table(path: str | Path) -> str:
    """The ``inspect`` table of a ``.wz`` file: one row per tensor, then totals and ratios."""
    from ..analysis.size import size_report

    rep = size_report(path)
    t = Table(title=f"{path}: {rep.file_bytes:,} bytes on disk, file ratio {rep.file_ratio:.2f}x "
                    f"(payload {rep.payload_ratio:.2f}x, Deep Compression accounting "
                    f"{rep.paper.get('deep_compression', float('nan')):.2f}x)")
    for col in ("tensor", "format", "layout", "coding", "shape", "nnz", "density", "val bits", "idx bits",
                "bits/w", "bytes", "ratio", "bound", "gap"):
        t.add_column(col, justify="left" if col in ("tensor", "format", "layout", "coding", "shape") else "right")
    for r in rep.rows:
        t.add_row(r["name"], r["format"], _fmt(r["sparse"]), _fmt(r["coding"]), "x".join(map(str, r["shape"])),
                  f"{r['nnz']:,}", f"{r['density']:.3f}", _fmt(r["value_bits"]), _fmt(r["index_bits"]),
                  f"{r['bits_per_weight']:.2f}", f"{r['bytes']:,}", f"{r['ratio']:.1f}x",
                  f"{r['bound_bytes']:,.0f}", "-" if r["gap_to_bound"] is None else f"{100 * r['gap_to_bound']:+.1f}%")
    t.add_section()
    t.add_row("streams", "", "", "", "", f"{sum(r['nnz'] for r in rep.rows):,}", "", "", "", "",
              f"{rep.payload_bytes:,}", "", f"{sum(r['bound_bytes'] for r in rep.rows):,.0f}", "")
    t.add_row("manifest+header", "", "", "", "", "", "", "", "", "", f"{rep.manifest_bytes:,}", "", "", "")
    t.add_row("file", "", "", "", "", "", "", "", "", "", f"{rep.file_bytes:,}",
              f"{rep.file_ratio:.1f}x", "", "")
    return _render(t)


def stream_table(path: str | Path) -> str:
    """Per stream of every tensor: coding, symbols, bytes, achieved bits per symbol and the
    order-0 entropy bound (bytes and bits per symbol); context-coded streams can beat the bound."""
    from ..analysis.size import size_report

    rep = size_report(path)
    t = Table(title=f"{path}: streams (order-0 bound = n H(p) of the stream's symbols)")
    for col in ("tensor", "stream", "coding", "symbols", "bytes", "bits/sym", "order-0 bytes", "order-0 bits/sym", "vs order-0"):
        t.add_column(col, justify="left" if col in ("tensor", "stream", "coding") else "right")
    for r in rep.rows:
        for name, nb in r["streams"].items():
            n = r["stream_counts"].get(name) or 0
            b = r["stream_bounds"].get(name)
            t.add_row(r["name"], name, _fmt(r["stream_codings"].get(name)), f"{n:,}", f"{nb:,}",
                      f"{8 * nb / n:.3f}" if n else "-", "-" if b is None else f"{b:,.0f}",
                      f"{8 * b / n:.3f}" if n and b is not None else "-",
                      f"{100 * (nb / b - 1):+.1f}%" if b else "-")
    return _render(t)


def bench_table(out: dict[str, Any]) -> str:
    t = Table(title=f"{out['path']}: latency, {out['threads']} thread(s), input {out['input_shape']} "
                    "(median of repeats)")
    for col in ("batch", "runtime", "ms / call", "speed-up vs dense", "layers", "max |diff|"):
        t.add_column(col, justify="right" if col not in ("runtime", "layers") else "left")
    for r in out["rows"]:
        t.add_row(str(r["batch"]), r["mode"], f"{r['ms']:.4f}", f"{r['speedup']:.2f}x",
                  ", ".join(r.get("layers", [])), _fmt(r.get("max_abs_diff"), ".2e"))
    return _render(t)
