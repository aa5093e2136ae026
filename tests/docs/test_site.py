"""The docs site builds strictly (as CI builds it) and reads as a manual: the API reference under qualified
headings with no raw Sphinx roles, no script published, the pages a newcomer needs, no maintainer's paths."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCS = ROOT / "docs"
RAW_ROLE = re.compile(r":(class|func|data|meth|mod|attr|obj|exc):`?")
LAB_NOTEBOOK = re.compile(r"\.\./shared|\bnot kept\b|no kept result|a target of|paused training|one-off check",
                          re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return out


def text_of(page: Path) -> str:
    """A built page's visible text: the article only, tags dropped, entities decoded."""
    source = page.read_text()
    article = re.search(r"<article.*?</article>", source, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", article.group(0) if article else source))


@pytest.mark.slow  # builds the site once (about 10 s on 2 cores)
def test_no_script_is_published(site):
    scripts = sorted(str(p.relative_to(site)) for p in site.rglob("*.py"))
    assert not scripts, f"scripts in the built site: {scripts}"


@pytest.mark.slow  # builds the site once (about 10 s on 2 cores)
def test_no_raw_sphinx_role_on_any_page(site):
    found = [f"{page.relative_to(site)}: ...{m.string[max(0, m.start() - 60):m.end() + 40]}..."
             for page in sorted(site.rglob("*.html")) for m in RAW_ROLE.finditer(text_of(page))]
    assert not found, "raw Sphinx roles render as text:\n" + "\n".join(found)


@pytest.mark.slow  # builds the site once (about 10 s on 2 cores)
def test_the_api_page_has_the_public_names_under_qualified_headings(site):
    page = (site / "api" / "index.html").read_text()
    ids = set(re.findall(r'<h[2-4][^>]*\bid="([^"]+)"', page))
    for name in ("load", "from_pretrained", "build_model", "train", "evaluate", "quantize", "export",
                 "list_weights", "Segmenter", "TrainConfig", "colorize", "overlay"):
        assert f"aticnet.{name}" in ids, f"no heading aticnet.{name} on the API page"
    text = text_of(site / "api" / "index.html")
    assert "crop_size" in text and "--crop-size" in text, "TrainConfig's fields are not listed"
    assert "Parameters:" in text and "Returns:" in text


@pytest.mark.slow  # builds the site once (about 10 s on 2 cores)
def test_the_cli_page_has_a_table_per_subcommand(site):
    text = text_of(site / "cli" / "index.html")
    for flag in ("--weights", "--infer-scale", "--http-port", "--crop-size", "--overflow-fix", "--max-frames"):
        assert flag in text, f"{flag} missing from the built CLI page"


@pytest.mark.slow  # builds the site once (about 10 s on 2 cores)
def test_the_pages_a_newcomer_needs(site):
    home = (DOCS / "index.md").read_text()
    assert re.search(r"^## Install$", home, re.MULTILINE) and re.search(r"^## Quick start$", home, re.MULTILINE)
    assert re.search(r"!\[[^\]]+\]\(images/[^)]+\.png\)", home), "no picture on the home page"
    questions = re.findall(r"^### .+$", (DOCS / "faq.md").read_text(), re.MULTILINE)
    assert len(questions) >= 8, f"the FAQ answers {len(questions)} questions"
    for page in ("tutorial", "predict", "cli", "faq"):
        assert (site / page / "index.html").is_file()


def test_no_lab_notebook_phrases_in_the_docs():
    found = [f"{page.relative_to(ROOT)}:{n}: {line.strip()}"
             for page in sorted(DOCS.rglob("*.md"))
             for n, line in enumerate(page.read_text().splitlines(), 1) if LAB_NOTEBOOK.search(line)]
    assert not found, "\n".join(found)
