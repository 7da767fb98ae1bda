"""`endmark pull`, `list`, `rm` and `serve -hf`'s flags, against the local stand-in hub."""

from __future__ import annotations

import os
import pty
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from endmark.cli import main
from endmark.hub.cache import list_cached, partial_files
from tests.hf_standin import HubStandin, tiny_standin, use_standin


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandin]:
    yield from tiny_standin(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: HubStandin) -> Path:
    use_standin(monkeypatch, hub, tmp_path)
    return tmp_path


def test_pull_on_a_terminal_draws_a_progress_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main(["pull", "test/tiny-GGUF:q8_0"]) == 0
    drawn = os.read(leader, 1 << 20).decode()
    os.close(leader)
    assert "\rtiny-Q8_0.gguf [" in drawn and "MB/s" in drawn and "ETA" in drawn
    assert "477.2 KB/477.2 KB" in drawn and "verifying sha256 ... ok" in drawn
    assert capsys.readouterr().out.startswith("test/tiny-GGUF:Q8_0\t")


def test_a_pull_cut_off_run_after_run_resumes_on_the_next_pull(
    hub: HubStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.drop_every["tiny-Q4_K_M.gguf"] = 50_000
    assert main(["pull", "test/tiny-GGUF"]) == 1
    err = capsys.readouterr().err
    assert "stopped at 150000 of 477184 bytes" in err and "run it again to resume" in err
    assert "tiny-Q4_K_M.gguf: 48.8 KB of 477.2 KB (10%)" not in err  # log lines, not a bar
    assert list_cached() == [] and len(partial_files("test/tiny-GGUF")) == 1
    del hub.drop_every["tiny-Q4_K_M.gguf"]
    assert main(["pull", "hf.co/test/tiny-GGUF"]) == 0
    out, err = capsys.readouterr()
    assert hub.ranges("tiny-Q4_K_M.gguf")[-1] == "bytes=150000-"
    assert "tiny-Q4_K_M.gguf: verifying sha256" in err and "tiny-Q4_K_M.gguf: done" in err
    assert out.startswith("test/tiny-GGUF:Q4_K_M\t") and partial_files("test/tiny-GGUF") == []
    assert main(["list"]) == 0
    assert capsys.readouterr().out.split()[:3] == ["test/tiny-GGUF:Q4_K_M", "477.2", "KB"]
    assert main(["rm", "test/tiny-GGUF:q4_k_m"]) == 0
    assert main(["rm", "test/tiny-GGUF:q4_k_m"]) == 1
    assert "is not in the cache" in capsys.readouterr().err and list_cached() == []


def test_bad_names_and_flags_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "tiny"]) == 1
    assert "'tiny' is not a Hugging Face model name" in capsys.readouterr().err
    assert main(["pull", "test/tiny-GGUF:Q2_K"]) == 1
    assert "(its tags: Q4_K_M, Q8_0)" in capsys.readouterr().err
    assert main(["serve", "--hf-file", "tiny-Q8_0.gguf"]) == 2
    assert "--hf-file needs --hf-repo" in capsys.readouterr().err
    assert main(["serve", "-hf", "test/tiny-GGUF", "-m", "x.gguf"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["serve", "-hf", "test/tiny-GGUF", "--models-dir", "."]) == 2
    assert "-hf serves one model" in capsys.readouterr().err
    assert main(["serve", "-hf", "test/tiny-GGUF", "--offline"]) == 2
    assert "downloads are off (offline mode)" in capsys.readouterr().err
