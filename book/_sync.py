"""Keep the paired notebooks ``book/NN_*.ipynb`` in step with the chapters ``book/NN_*.py``,
and every chapter's first code cell (the set-up cell) equal to :data:`SETUP_TEMPLATE`.

The chapters are written as jupytext ``py:percent`` files, which the book build executes
directly. The ``.ipynb`` twins exist only so that the Colab and Binder buttons (which open
``.ipynb`` files from the repository) work; they are committed without outputs and are
excluded from the build.

The set-up cell clones the repository on Colab, so it must name it; the address is written
in one place, ``repository`` in ``_config.yml``, and this script writes it into the
set-up cell of every chapter (and the solutions page).

    python book/_sync.py            # rewrite set-up cells and every .ipynb, outputs stripped
    python book/_sync.py --check    # exit 1 if a set-up cell or .ipynb is missing or stale
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jupytext
import yaml

BOOK = Path(__file__).resolve().parent

#: The first code cell of every page that runs code. On Colab it clones the repository and
#: installs it at the tested versions (book/colab_setup.sh); everywhere it puts the book's
#: folder on the import path and loads book/_helpers.py as ``H``.
SETUP_TEMPLATE = """\
# Set-up (the same in every chapter). Colab: run `%env SVAE_LITE_FULL=1` first for full scale.
import os, subprocess, sys
REPO = "{url}"  # written from _config.yml by book/_sync.py
if "google.colab" in sys.modules and not os.path.isdir("/content/svae_lite"):
    subprocess.run(f"git clone -q --depth 1 -b {branch} {{REPO}} /content/svae_lite && bash "
                   "/content/svae_lite/book/colab_setup.sh", shell=True, check=True)
sys.path[:0] = [os.environ.get("SVAE_LITE_BOOK", "book"), "/content/svae_lite/book"]
import _helpers as H; H.setup()"""
SETUP_TAGS = ["hide-input"]


def setup_cell() -> str:
    """:data:`SETUP_TEMPLATE` with the repository of ``_config.yml``."""
    repo = yaml.safe_load((BOOK.parent / "_config.yml").read_text())["repository"]
    return SETUP_TEMPLATE.format(url=repo["url"], branch=repo.get("branch", "main"))


def pages() -> list[Path]:
    """Every executed page: the chapters and the solutions page."""
    return chapters() + [p for p in [BOOK / "solutions.py"] if p.exists()]


def chapters() -> list[Path]:
    """The chapter sources: ``book/NN_*.py``."""
    return sorted(p for p in BOOK.glob("[0-9][0-9]_*.py"))


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def _first_code(nb):
    """The first code cell with any code (jupytext reads extra blank lines as empty cells)."""
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.strip())


def problems() -> list[str]:
    """Every way the set-up cells or paired notebooks differ from what they should be."""
    out = []
    for page in pages():
        cell = _first_code(jupytext.read(page))
        if cell.source.strip() != setup_cell() or cell.metadata.get("tags") != SETUP_TAGS:
            out.append(f"{page.name}: its first code cell is not the set-up cell")
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


def write_setup_cells() -> None:
    """Make the first code cell of every page the set-up cell, editing only that cell's text
    (the rest of the file is left byte for byte)."""
    header = f'# %% tags={json.dumps(SETUP_TAGS)}'
    for page in pages():
        lines = page.read_text(encoding="utf8").split("\n")
        starts = [i for i, line in enumerate(lines) if line.startswith("# %%")]
        code = [i for i in starts if not lines[i].startswith("# %% [")]
        if not code:
            continue
        first = code[0]
        end = next((i for i in starts if i > first), len(lines))
        while end > first + 1 and not lines[end - 1].strip():
            end -= 1  # keep the blank lines between cells
        new = [header] + setup_cell().split("\n")
        if lines[first:end] != new:
            page.write_text("\n".join(lines[:first] + new + lines[end:]), encoding="utf8")
            print(f"wrote the set-up cell of {page.relative_to(BOOK.parent)}")


def write() -> None:
    """Write every chapter's ``.ipynb`` twin, without outputs."""
    write_setup_cells()
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
