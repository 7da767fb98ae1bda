"""The chat page's files: small, shipped in the package, and asking nothing of other hosts."""

from __future__ import annotations

import gzip
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from endmark.server.app import WEB

ROOT = Path(__file__).resolve().parents[1]
SERVED = [p for p in WEB.rglob("*") if p.is_file() and p.suffix in (".html", ".css", ".js")]


def test_the_page_is_under_300_kb_gzipped() -> None:
    total = sum(len(gzip.compress(p.read_bytes(), 9)) for p in SERVED)
    assert total < 300 * 1024, f"{total} bytes gzipped"


def test_the_page_loads_nothing_from_another_host() -> None:
    ours = [p for p in SERVED if "vendor" not in p.parts]
    for path in ours:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
        assert not re.search(r"""(fetch|import)\s*\(?\s*["'](https?:)?//""", text), path
        assert not re.search(r"""from\s+["'](https?:)?//""", text), path


def test_every_file_of_the_page_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["endmark"]
    package = ROOT / "src" / "endmark"
    for path in WEB.rglob("*"):
        if path.is_file():
            relative = path.relative_to(package).as_posix()
            assert any(fnmatch(relative, g) and relative.count("/") == g.count("/")
                       for g in globs), relative  # fmt: skip


def test_each_vendored_library_has_its_licence() -> None:
    vendor = WEB / "vendor"
    for licence in ("LICENSE.marked", "LICENSE.highlightjs", "LICENSE.dompurify"):
        assert (vendor / licence).stat().st_size > 500
