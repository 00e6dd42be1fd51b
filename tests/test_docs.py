"""The README is a front page whose commands CI runs, and the docs point at what exists."""

from __future__ import annotations

import re
from pathlib import Path

from export.cache import cache_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page_with_the_two_commands_ci_runs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for marker in ("<!-- ci:example -->", "<!-- ci:test -->"):
        assert marker in text and marker in (ROOT / ".ci" / "run").read_text()
    first_screen = "\n".join(text.splitlines()[:40])
    assert "pip install . && livesr --input realtime/examples/speech_16k.wav" in first_screen
    assert "python -m pytest" in first_screen
    assert (ROOT / "realtime" / "examples" / "speech_16k.wav").is_file()


def test_relative_links_point_at_files_that_exist():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_no_stale_statements(monkeypatch, tmp_path):
    for doc in DOCS:
        text = doc.read_text()
        assert "Until weights ship" not in text and "level_slope" not in text, doc.name
        assert "realtime/resample.py" not in text and "realtime/band_merge.py" not in text, doc.name
    # LIVESR_CACHE is the parent of the graph cache, as the docs say
    monkeypatch.setenv("LIVESR_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "onnx"
    assert any("$LIVESR_CACHE/onnx" in doc.read_text() for doc in DOCS)
