"""The downloader against a local stand-in of the hub: the real `huggingface_hub` client and
endmark's resolver, never the internet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from endmark.hub.cache import cache_dir, list_cached, partial_files, remove_cached
from endmark.hub.download import HubError, Progress, fetch
from endmark.hub.names import parse_ref
from tests.gguf_factory import FAMILIES, build_gguf
from tests.hf_standin import HubStandin, use_standin

TOKEN = "hf_standin_secret"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandin]:
    folder = tmp_path_factory.mktemp("models")
    model = build_gguf(folder / "tiny.gguf", FAMILIES["llama3"]).read_bytes()
    standin = HubStandin()
    standin.add("test/tiny-GGUF", {"tiny-Q4_K_M.gguf": model, "tiny-Q8_0.gguf": model + b"8",
                                   "mmproj-tiny-F16.gguf": b"GGUF-projector",
                                   "README.md": b"# tiny"})  # fmt: skip
    standin.add("test/split-GGUF", {"big-Q4_0-00001-of-00002.gguf": model[:1000],
                                    "big-Q4_0-00002-of-00002.gguf": model[1000:]})  # fmt: skip
    standin.add("test/safetensors", {"model.safetensors": b"st", "README.md": b"no gguf"})
    standin.add("test/gated-GGUF", {"gated-Q4_0.gguf": model + b"g"}, token=TOKEN)
    yield standin.start()
    standin.stop()


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: HubStandin) -> Path:
    use_standin(monkeypatch, hub, tmp_path)
    hub.drop_once.clear()
    hub.corrupt.clear()
    return tmp_path


def test_default_tag_downloads_verifies_and_is_reused_without_network(
    hub: HubStandin, caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Progress] = []
    model = fetch(parse_ref("test/tiny-GGUF"), on_progress=seen.append)
    assert model.name == "test/tiny-GGUF:Q4_K_M" and model.path.name == "tiny-Q4_K_M.gguf"
    assert model.path.is_relative_to(caches / "llama")  # LLAMA_CACHE is where it goes
    assert model.path.resolve().name == hub.sha_of("tiny-Q4_K_M.gguf")  # blob named by sha256
    assert model.mmproj is not None and model.mmproj.read_bytes() == b"GGUF-projector"
    done = [p.done for p in seen if p.file == "tiny-Q4_K_M.gguf" and p.status == "downloading"]
    assert done == sorted(done) and done[-1] == model.path.stat().st_size
    assert [p.status for p in seen if p.file == "tiny-Q4_K_M.gguf"][-2:] == ["verifying", "done"]
    repo, downloads = hub.repos["test/tiny-GGUF"], len(hub.ranges("tiny-Q4_K_M.gguf"))
    monkeypatch.setattr(repo, "commit", "f" * 40)  # a new commit, the same bytes: no download
    newer = fetch(parse_ref("test/tiny-GGUF"))
    assert newer.path.parent.name == "f" * 40 and newer.path.resolve() == model.path.resolve()
    assert len(hub.ranges("tiny-Q4_K_M.gguf")) == downloads
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert fetch(parse_ref("hf.co/test/tiny-GGUF:q4_k_m")).path.resolve() == model.path.resolve()
    assert fetch(parse_ref("test/tiny-GGUF")).path == newer.path  # no hub: the cache's choice
    assert [m.name for m in list_cached()] == ["test/tiny-GGUF:Q4_K_M"]


def test_a_dropped_connection_resumes_and_so_does_a_partial_file_left_by_a_killed_pull(
    hub: HubStandin,
) -> None:
    hub.drop_once["tiny-Q4_K_M.gguf"] = 100_000
    fetch(parse_ref("test/tiny-GGUF"))
    assert "bytes=100000-" in hub.ranges("tiny-Q4_K_M.gguf")
    # What a pull killed mid-file leaves: the first bytes, under the blob's name.
    data = hub.repos["test/tiny-GGUF"].files["tiny-Q8_0.gguf"]
    blobs = cache_dir() / "models--test--tiny-GGUF" / "blobs"
    (blobs / (hub.sha_of("tiny-Q8_0.gguf") + ".incomplete")).write_bytes(data[:5000])
    assert list_cached()[-1].name == "test/tiny-GGUF:Q4_K_M"  # the partial file is no model
    model = fetch(parse_ref("test/tiny-GGUF:Q8_0"))
    assert hub.ranges("tiny-Q8_0.gguf")[-1] == "bytes=5000-"
    assert model.path.read_bytes() == data and partial_files("test/tiny-GGUF") == []


def test_a_checksum_mismatch_deletes_the_file_and_says_so(hub: HubStandin) -> None:
    hub.corrupt.add("tiny-Q8_0.gguf")
    with pytest.raises(HubError, match="checksum mismatch for tiny-Q8_0.gguf.*deleted"):
        fetch(parse_ref("test/tiny-GGUF:q8_0"))
    assert list_cached() == [] and partial_files("test/tiny-GGUF") == []


def test_a_split_model_downloads_every_shard() -> None:
    model = fetch(parse_ref("test/split-GGUF:Q4_0"))
    assert [p.name for p in model.files] == ["big-Q4_0-00001-of-00002.gguf",
                                             "big-Q4_0-00002-of-00002.gguf"]  # fmt: skip
    assert list_cached()[0].name == "test/split-GGUF:Q4_0"


def test_bad_names_get_errors_that_name_the_repo_and_its_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = {
        "test/missing": "no model repo 'test/missing'",
        "test/tiny-GGUF:IQ1_S": r"test/tiny-GGUF has no file for the tag 'IQ1_S' \(its tags: "
        r"Q4_K_M, Q8_0\)",
        "test/safetensors": "test/safetensors has no GGUF file",
        "test/gated-GGUF": r"test/gated-GGUF is a gated model.*HF_TOKEN.*its tags: Q4_0",
    }
    for name, message in cases.items():
        with pytest.raises(HubError, match=message):
            fetch(parse_ref(name))
    with pytest.raises(HubError, match="has no file 'nope.gguf'.*tiny-Q4_K_M.gguf"):
        fetch(parse_ref("test/tiny-GGUF", file="nope.gguf"))
    assert fetch(parse_ref("test/gated-GGUF"), token=TOKEN).name == "test/gated-GGUF:Q4_0"
    with pytest.raises(HubError, match="downloads are off"):
        fetch(parse_ref("test/tiny-GGUF"), offline=True)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(HubError, match="cannot reach http://127.0.0.1:9 for test/tiny-GGUF"):
        fetch(parse_ref("test/tiny-GGUF"))
    assert time.monotonic() - started < 10  # an offline error within seconds, not a hang


def test_the_hf_cache_is_searched_and_rm_removes_a_model(
    caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMA_CACHE")  # download into the HF cache, as `hf download` would
    fetch(parse_ref("test/tiny-GGUF:Q8_0"))
    monkeypatch.setenv("LLAMA_CACHE", str(caches / "llama"))
    model = fetch(parse_ref("test/tiny-GGUF:Q8_0"), offline=True)
    assert model.path.is_relative_to(caches / "hf" / "hub")
    fetch(parse_ref("test/tiny-GGUF"))
    assert [m.name for m in list_cached()] == ["test/tiny-GGUF:Q4_K_M", "test/tiny-GGUF:Q8_0"]
    assert remove_cached(parse_ref("test/tiny-GGUF:Q4_K_M"))
    assert [m.name for m in list_cached()] == ["test/tiny-GGUF:Q8_0"]
    assert remove_cached(parse_ref("test/tiny-GGUF:Q4_K_M")) == []


def test_no_room_on_disk_or_a_cancel_leaves_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import threading

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(HubError, match="not enough disk space.*477184 bytes needed, 1000 free"):
        fetch(parse_ref("test/tiny-GGUF"))
    monkeypatch.setattr(shutil, "disk_usage", real)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(HubError, match="cancelled"):
        fetch(parse_ref("test/tiny-GGUF"), cancel=cancel)
    assert list_cached() == [] and len(partial_files("test/tiny-GGUF")) == 1  # it resumes
