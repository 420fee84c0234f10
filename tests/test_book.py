"""Static checks of the book (no execution; the build in .ci/build_book executes it):
the table of contents lists every chapter, every chapter has the parts the book promises,
and the paired notebooks used by the Colab/Binder buttons match their chapters."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.py"))

pytestmark = pytest.mark.skipif(not (ROOT / "_toc.yml").exists(), reason="no book in this checkout")


def test_toc_lists_every_chapter_and_page():
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"file:\s*(\S+)", toc) + re.findall(r"root:\s*(\S+)", toc)
    assert len(CHAPTERS) >= 7
    for ch in CHAPTERS:
        assert f"book/{ch.stem}" in files, f"{ch.name} is not in _toc.yml"
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".py")), f"{f} in _toc.yml does not exist"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_structure(chapter):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(chapter)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    # a question first, a parameters cell validated right after, what we saw, exercises
    assert nb.cells[0].cell_type == "markdown" and "question" in nb.cells[0].source.lower()
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    check = code[tagged[0] + 1]
    assert "H.check_parameters(" in check.source, "validate parameters in the next cell"
    assert {"hide-input", "remove-input"} & set(check.metadata.get("tags", [])), \
        "the parameter check is hidden in the book (tag hide-input or remove-input)"
    # the set-up cell: only what cannot live in book/_helpers.py, hidden (its text is
    # checked against book/_sync.py's template by test_paired_notebooks_in_sync)
    setup = code[0]
    assert "google.colab" in setup.source, "first code cell installs the package on Colab"
    assert "import _helpers as H" in setup.source and "H.setup()" in setup.source
    assert {"hide-input", "remove-cell"} & set(setup.metadata.get("tags", [])), \
        "the set-up cell is hidden in the book (tag hide-input or remove-cell)"
    assert "## What we saw" in text and "## Exercises" in text
    # the science goes through the public API
    src = "\n".join(c.source for c in code)
    assert "import svae_lite as sl" in src
    assert not re.search(r"from svae_lite\.(module|priors|models) import", src)
    assert not re.search(r"svae_lite\._[a-z]", src), "chapters use no private svae_lite module"


def _sync():
    pytest.importorskip("jupytext")
    sys.path.insert(0, str(BOOK))
    try:
        import _sync
    finally:
        sys.path.remove(str(BOOK))
    return _sync


def test_setup_cell_names_the_repository_of_config_and_fits_the_page():
    yaml = pytest.importorskip("yaml")
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    cell = _sync().setup_cell()
    assert url in cell and "colab_setup.sh" in cell
    assert all(len(line) <= 95 for line in cell.splitlines())
    # the only other place that may spell the repository's address is the README (for users)
    others = [p for p in BOOK.glob("*.py") if p.name != "_sync.py"]
    stray = [p.name for p in others if url in p.read_text() and "REPO = " not in p.read_text()]
    assert not stray, f"{stray} spell the repository address outside the set-up cell"


def test_colab_install_keeps_colab_torch_and_pins_the_rest():
    script = (BOOK / "colab_setup.sh").read_text()
    assert "grep -v '^torch=='" in script and "requirements.txt" in script
    assert "torch==" in (ROOT / "requirements.txt").read_text()


def test_paired_notebooks_and_setup_cells_in_sync():
    assert _sync().problems() == [], "run: python book/_sync.py"


def test_config_executes_and_fails_on_errors():
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    ex = cfg["execute"]
    # "cache": the build renders what book/_execute.py executed (and executes what it lacks)
    assert ex["execute_notebooks"] == "cache" and ex["raise_on_error"] is True
    assert ex["timeout"] >= 600
    assert "book/*.ipynb" in cfg["exclude_patterns"]
    assert cfg["sphinx"]["config"]["nb_custom_formats"][".py"][0] == "jupytext.reads"
