"""Keep the paired notebooks ``book/NN_*.ipynb`` in step with the chapters ``book/NN_*.py``.

The chapters are written as jupytext ``py:percent`` files, which the book build executes
directly. The ``.ipynb`` twins exist only so that the Colab and Binder buttons (which open
``.ipynb`` files from the repository) work; they are committed without outputs and are
excluded from the build.

    python book/_sync.py            # (re)write every .ipynb from its .py, outputs stripped
    python book/_sync.py --check    # exit 1 if any .ipynb is missing, stale or has outputs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

BOOK = Path(__file__).resolve().parent


def chapters() -> list[Path]:
    """The chapter sources: ``book/NN_*.py``."""
    return sorted(p for p in BOOK.glob("[0-9][0-9]_*.py"))


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def problems() -> list[str]:
    """Every way the paired notebooks differ from the chapters (empty when in sync)."""
    out = []
    for py in chapters():
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists():
            out.append(f"{ipynb.name} is missing")
            continue
        a, b = jupytext.read(py), jupytext.read(ipynb)
        if _cells(a) != _cells(b):
            out.append(f"{ipynb.name} differs from {py.name}")
        if any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")) for c in b.cells):
            out.append(f"{ipynb.name} contains outputs")
        if b.metadata.get("kernelspec", {}).get("name") != "python3":
            out.append(f"{ipynb.name} lacks the python3 kernelspec")
    stray = {p.stem for p in BOOK.glob("*.ipynb")} - {p.stem for p in chapters()}
    out += [f"{s}.ipynb has no chapter {s}.py" for s in sorted(stray)]
    return out


def write() -> None:
    """Write every chapter's ``.ipynb`` twin, without outputs."""
    for py in chapters():
        nb = jupytext.read(py)
        for i, c in enumerate(nb.cells):
            c.id = f"{py.stem[:2]}-{i:03d}"  # stable ids: regenerating gives identical files
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        jupytext.write(nb, py.with_suffix(".ipynb"), fmt="ipynb")
        print(f"wrote {py.with_suffix('.ipynb').relative_to(BOOK.parent)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when out of sync")
    args = ap.parse_args(argv)
    if args.check:
        found = problems()
        for p in found:
            print(f"paired notebook problem: {p}", file=sys.stderr)
        if found:
            print("Fix: python book/_sync.py   (regenerates book/*.ipynb from book/*.py)", file=sys.stderr)
            return 1
        print(f"{len(chapters())} paired notebooks in sync")
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
