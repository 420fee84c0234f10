"""Check the rendered book: every figure a chapter draws has a caption and alt text.

Run after ``jupyter-book build`` (``.ci/build_book`` does): looks at every image in the
outputs of code cells of the rendered pages under ``_build/html/book/`` and exits 1,
naming page and image, when one is not inside a ``<figure>`` with a ``<figcaption>``
(myst-nb's ``mystnb.figure.caption`` cell metadata) or has no alt text of its own (myst-nb
otherwise uses the image's file name).

    python book/_check_html.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from bs4 import BeautifulSoup

HTML = Path(__file__).resolve().parent.parent / "_build" / "html" / "book"


def problems(html_dir: Path = HTML) -> list[str]:
    """Every output image without a caption or alt text, as 'page: image: what'."""
    out = []
    for page in sorted(html_dir.glob("*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf8"), "html.parser")
        for img in soup.select("div.cell_output img"):
            src = img.get("src", "?")
            figure = img.find_parent("figure")
            if figure is None or figure.find("figcaption") is None:
                out.append(f"{page.name}: {src}: no caption")
            alt = (img.get("alt") or "").strip()
            if not alt or Path(src).stem in alt or alt.endswith(".png"):
                out.append(f"{page.name}: {src}: no alt text")
    return out


def main() -> int:
    if not HTML.exists():
        print(f"no rendered book under {HTML}: build it first", file=sys.stderr)
        return 1
    found = problems()
    for p in found:
        print(f"figure problem: {p}", file=sys.stderr)
    n_pages = len(list(HTML.glob("*.html")))
    print(f"{n_pages} rendered pages checked: {len(found)} figure(s) without caption or alt text")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
