from __future__ import annotations

from pathlib import Path

import pytest

from endmark.multimodel.catalog import (
    CatalogError,
    ModelEntry,
    check_catalog,
    from_paths,
    parse_bytes,
    parse_duration,
    read_models_file,
    scan_folder,
)


def gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * 16)
    return path


def test_a_folder_gives_files_by_stem_and_subfolders_by_name(tmp_path: Path) -> None:
    gguf(tmp_path / "chat.gguf")
    gguf(tmp_path / "vision" / "model-q4.gguf")
    gguf(tmp_path / "vision" / "mmproj-model-f16.gguf")
    gguf(tmp_path / "big" / "big-00002-of-00002.gguf")
    gguf(tmp_path / "big" / "big-00001-of-00002.gguf")
    found = {e.id: e.path.name for e in scan_folder(tmp_path)}
    assert found == {"chat": "chat.gguf", "vision": "model-q4.gguf",
                     "big": "big-00001-of-00002.gguf"}  # fmt: skip


def test_repeated_models_take_their_aliases_in_order(tmp_path: Path) -> None:
    a, b = gguf(tmp_path / "a.gguf"), gguf(tmp_path / "b.gguf")
    out = from_paths([str(a), str(b)], ["first,one"])
    assert [(e.id, e.aliases) for e in out] == [("first", ("one",)), ("b", ())]


def test_models_file_adds_models_settings_and_aliases(tmp_path: Path) -> None:
    known = scan_folder(tmp_path) if gguf(tmp_path / "chat.gguf") else []
    gguf(tmp_path / "elsewhere" / "coder.gguf")
    file = tmp_path / "models.toml"
    file.write_text(
        '[models.chat]\nctx-size = 4096\nparallel = 2\naliases = ["c"]\n'
        '[models.coder]\npath = "elsewhere/coder.gguf"\nchat_template = "chatml"\n'
    )
    out = {e.id: e for e in read_models_file(file, known)}
    assert out["chat"].settings == {"ctx_size": 4096, "parallel": 2}
    assert out["chat"].aliases == ("c",)
    assert out["coder"].path == tmp_path / "elsewhere" / "coder.gguf"
    assert out["coder"].settings == {"chat_template": "chatml"}
    check_catalog(list(out.values()))


@pytest.mark.parametrize(
    "text, message",
    [
        ("[models.x]\nctx-size = 1\n", "needs a path"),
        ('[models.x]\npath = "a.gguf"\nport = 1\n', "unknown keys \\['port'\\]"),
        ("[models.x\n", "models.toml"),
    ],
)
def test_models_file_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "models.toml"
    file.write_text(text)
    with pytest.raises(CatalogError, match=message):
        read_models_file(file, [])


def test_check_catalog_refuses_clashes_and_non_gguf(tmp_path: Path) -> None:
    a, b = gguf(tmp_path / "a.gguf"), gguf(tmp_path / "b.gguf")
    with pytest.raises(CatalogError, match="two models are named 'a'"):
        check_catalog(from_paths([str(a), str(b)], ["a", "b,a"]))
    (tmp_path / "c.gguf").write_text("not a model")
    with pytest.raises(ValueError, match="not a GGUF"):
        check_catalog(from_paths([str(tmp_path / "c.gguf")], []))
    with pytest.raises(CatalogError, match="no models"):
        check_catalog([])


def test_sizes_and_durations() -> None:
    assert parse_bytes("8G") == 8 * 2**30
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1000") == 1000
    assert parse_duration("5m") == 300
    assert parse_duration("1h30m") == 5400
    assert parse_duration(10) == 10
    assert parse_duration("0") == 0
    assert parse_duration(-1) is None and parse_duration("-1m") is None
    for bad in ("soon", "5 minutes"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_readme_models_file_reads(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    file = tmp_path / "models.toml"
    file.write_text(text)
    out = {e.id: e for e in read_models_file(file, [ModelEntry("gemma", tmp_path / "g.gguf")])}
    assert out["gemma"].settings == {"ctx_size": 4096, "parallel": 2}
    assert out["coder"].settings == {"threads": 4, "chat_template": "chatml"}
