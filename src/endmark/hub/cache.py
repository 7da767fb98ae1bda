"""The model cache on disk: the Hugging Face hub's layout, where llama.cpp keeps it too.

`models--user--repo/blobs/<sha256>` holds each verified file, `snapshots/<commit>/<path>` links
to it, `refs/main` names the commit. A download in progress is `blobs/<sha256>.incomplete`: it
resumes the next time, and since no snapshot links to it, it is never taken for a model. The
folder is llama.cpp's choice (`LLAMA_CACHE`, else the HF cache); both are searched, so a model
that llama-server, `hf download` or endmark fetched is found by each of them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from endmark.hub.names import ModelRef, is_model_file, pick_mmproj, shards_of, split_info


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def hf_cache_dir() -> Path:
    """The Hugging Face hub's own cache folder, as `huggingface_hub` finds it."""
    for name, below in (
        ("HF_HUB_CACHE", ""),
        ("HUGGINGFACE_HUB_CACHE", ""),
        ("HF_HOME", "hub"),
        ("XDG_CACHE_HOME", "huggingface/hub"),
    ):
        base = _env_path(name)
        if base is not None:
            return base / below if below else base
    return Path.home() / ".cache" / "huggingface" / "hub"


def cache_dir() -> Path:
    """Where downloads go: `LLAMA_CACHE` if set, else the HF cache (llama.cpp's order)."""
    return _env_path("LLAMA_CACHE") or hf_cache_dir()


def search_dirs() -> list[Path]:
    """The download folder first, then the HF cache when `LLAMA_CACHE` points elsewhere."""
    out = [cache_dir()]
    if hf_cache_dir() != out[0]:
        out.append(hf_cache_dir())
    return out


def repo_folder(root: Path, repo: str) -> Path:
    return root / ("models--" + repo.replace("/", "--"))


def _repo_of(folder: Path) -> str | None:
    name = folder.name
    if not name.startswith("models--") or "--" not in name[len("models--") :]:
        return None
    return name[len("models--") :].replace("--", "/")


def _snapshots(folder: Path) -> list[Path]:
    """The repo's snapshots, the one `refs/main` names first, then the newest."""
    snaps = folder / "snapshots"
    if not snaps.is_dir():
        return []
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: -p.stat().st_mtime)
    main = folder / "refs" / "main"
    if main.is_file():
        commit = main.read_text().strip()
        found.sort(key=lambda p: p.name != commit)
    return found


def cached_files(repo: str) -> dict[str, Path]:
    """Every complete file of a repo in the caches: its path in the repo, and on disk."""
    out: dict[str, Path] = {}
    for root in search_dirs():
        for snap in _snapshots(repo_folder(root, repo)):
            for path in sorted(snap.rglob("*")):
                rel = path.relative_to(snap).as_posix()
                if rel not in out and path.is_file():  # a link to a missing blob is not a file
                    out[rel] = path
    return out


@dataclass(frozen=True)
class CachedModel:
    """One model in the cache: `user/repo:TAG`, its first file, and every file it needs."""

    repo: str
    tag: str
    path: Path
    files: tuple[Path, ...]
    mmproj: Path | None

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}" if self.tag else self.repo

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def models_in(repo: str, files: dict[str, Path]) -> list[CachedModel]:
    """The models a repo's cached files make: one per tag, split models whole only."""
    out = []
    names = list(files)
    for rel in names:
        info = split_info(rel)
        if info is None or not is_model_file(rel) or (info.count > 1 and info.index != 1):
            continue
        shards = shards_of(names, rel)
        if info.count > 1 and len(shards) != info.count:
            continue  # a split model with shards missing is not a model yet
        mmproj = pick_mmproj(names, rel)
        out.append(
            CachedModel(
                repo,
                info.tag,
                files[rel],
                tuple(files[s] for s in shards),
                files[mmproj] if mmproj else None,
            )
        )
    return out


def list_cached() -> list[CachedModel]:
    """Every model in the caches, by name (a name in both caches: the download folder's)."""
    seen: dict[str, CachedModel] = {}
    for root in search_dirs():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            repo = _repo_of(folder)
            if repo is None:
                continue
            for model in models_in(repo, cached_files(repo)):
                seen.setdefault(model.name, model)
    return sorted(seen.values(), key=lambda m: m.name)


def find_cached(ref: ModelRef) -> CachedModel | None:
    """The cached model a name means, by the same rules as a download's choice; None if it is
    not (wholly) cached."""
    from endmark.hub.names import pick_model

    files = cached_files(ref.repo)
    if ref.file:
        primary = ref.file if ref.file in files else None
    else:
        primary = pick_model(list(files), ref.tag)
    if primary is None:
        return None
    for model in models_in(ref.repo, files):
        if model.path == files[primary]:
            return model
    return None


def remove_cached(ref: ModelRef) -> list[Path]:
    """Delete a cached model's files (their blobs too); the repo's folder goes with its last
    model. Returns what was removed: an empty list when the model is not cached."""
    model = find_cached(ref)
    if model is None:
        return []
    others = [m for m in models_in(ref.repo, cached_files(ref.repo)) if m.path != model.path]
    shared = model.mmproj is not None and any(m.mmproj == model.mmproj for m in others)
    removed = []
    for path in (*model.files, *((model.mmproj,) if model.mmproj and not shared else ())):
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path and blob.exists():
            blob.unlink()
        removed.append(path)
    for root in search_dirs():
        folder = repo_folder(root, ref.repo)
        if folder.is_dir() and not models_in(ref.repo, _files_under(folder)):
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def _files_under(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for snap in _snapshots(folder):
        for path in snap.rglob("*"):
            if path.is_file():
                out.setdefault(path.relative_to(snap).as_posix(), path)
    return out


def partial_files(repo: str) -> list[Path]:
    """Downloads of a repo that stopped part-way (they resume; they are never served)."""
    blobs = repo_folder(cache_dir(), repo) / "blobs"
    return sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []
