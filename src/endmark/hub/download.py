"""Fetch a model from the Hugging Face hub into the cache: resolve, download, verify, link.

`huggingface_hub` answers what the hub has (the repo's files, each with its LFS sha256, and the
file's HEAD: commit, etag, size, redirect) and raises the hub's errors by kind. The bytes are
fetched here rather than by `hf_hub_download`, because that deletes a partial file when a
download fails (2.x) and reports progress only through tqdm: endmark keeps the partial file as
`blobs/<sha256>.incomplete`, resumes it with a Range request, hashes it before it becomes a blob,
and reports progress to the CLI's bar, Ollama's pull stream and the router's events alike.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from filelock import FileLock

from endmark.hub.cache import CachedModel, cache_dir, find_cached, repo_folder
from endmark.hub.names import ModelRef, pick_mmproj, pick_model, shards_of, tags_of

RETRIES = 2  # a dropped connection resumes this many times in one run, then the next run does
RETRY_PAUSE = 0.2  # seconds before the first retry; the second waits twice as long
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class HubError(RuntimeError):
    """A model that cannot be fetched, and why, in words for the user."""


class Unreachable(HubError):
    """The hub did not answer (no network, or the wrong HF_ENDPOINT)."""


class Cancelled(HubError):
    """The download was stopped; its partial file stays to resume."""


@dataclass
class Progress:
    """One file's download: `status` is downloading, verifying, cached or done."""

    model: str
    file: str
    url: str
    done: int
    total: int
    status: str = "downloading"
    sha256: str = ""


OnProgress = Callable[[Progress], None]


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None
    blob_id: str | None = None


@dataclass
class Plan:
    """What a name means on the hub: the files to fetch, at one commit."""

    ref: ModelRef
    commit: str
    files: list[RemoteFile] = field(default_factory=list)
    model: str = ""
    mmproj: str | None = None
    tags: list[str] = field(default_factory=list)


def endpoint() -> str:
    """`HF_ENDPOINT`, read at each call (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def token_of(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("LLAMA_ARG_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def _tag_text(tags: list[str]) -> str:
    return ", ".join(tags) if tags else "none"


def plan(ref: ModelRef, token: str | None) -> Plan:
    """Ask the hub which files the name means; every failure is a HubError naming the repo."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = endpoint()
    try:
        info = HfApi(endpoint=where, token=token or False).model_info(
            ref.repo, files_metadata=True, timeout=10
        )
    except GatedRepoError:
        raise HubError(_gated(ref, token, [])) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise HubError(
            f"no model repo '{ref.repo}' on {where} (a private repo needs a token: "
            "--hf-token or HF_TOKEN)"
        ) from None
    except HfHubHTTPError as exc:
        raise HubError(f"{where} answered {ref.repo} with an error: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (the client's transport errors have no common base)
        raise Unreachable(_unreachable(ref, where, exc)) from None
    siblings = info.siblings or []
    files = {s.rfilename: s for s in siblings}
    names = list(files)
    tags = tags_of(names)
    out = Plan(ref, info.sha or "main", tags=tags)
    if ref.file:
        if ref.file not in files:
            ggufs = ", ".join(n for n in names if n.endswith(".gguf")) or "none"
            raise HubError(f"{ref.repo} has no file '{ref.file}' (its GGUF files: {ggufs})")
        primary: str | None = ref.file
    else:
        primary = pick_model(names, ref.tag)
    if primary is None:
        if not tags and not any(n.lower().endswith(".gguf") for n in names):
            raise HubError(f"{ref.repo} has no GGUF file: endmark serves GGUF models only")
        raise HubError(
            f"{ref.repo} has no file for the tag '{ref.tag}' (its tags: {_tag_text(tags)})"
        )
    out.model = primary
    out.mmproj = pick_mmproj(names, primary)
    for name in shards_of(names, primary) + ([out.mmproj] if out.mmproj else []):
        s = files[name]
        out.files.append(RemoteFile(name, s.size, s.lfs.sha256 if s.lfs else None, s.blob_id))
    return out


def _gated(ref: ModelRef, token: str | None, tags: list[str]) -> str:
    how = (
        "the token given has no access to it"
        if token
        else "pass a token that has access (--hf-token or HF_TOKEN)"
    )
    tail = f" (its tags: {_tag_text(tags)})" if tags else ""
    return f"{ref.repo} is a gated model: accept its terms on the hub, and {how}{tail}"


def _unreachable(ref: ModelRef, where: str, exc: Exception) -> str:
    return (
        f"cannot reach {where} for {ref.repo} ({type(exc).__name__}: {exc}), and "
        f"{ref.name()} is not in the cache ({cache_dir()})"
    )


def fetch(
    ref: ModelRef,
    token: str | None = None,
    offline: bool | None = None,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> CachedModel:
    """The model a name means: from the cache, with no network, when a tag or a file names
    it; else the hub's choice (the cache's when the hub cannot be reached), downloaded and
    verified into the cache unless it is there."""
    cached = find_cached(ref)
    if cached is not None and (ref.tag or ref.file or offline):
        return _report_cached(cached, on_progress)
    if offline_mode() if offline is None else offline:
        if cached is not None:
            return _report_cached(cached, on_progress)
        raise HubError(
            f"{ref.name()} is not in the cache ({cache_dir()}), and downloads are "
            "off (offline mode)"
        )
    token = token_of(token)
    try:
        found = plan(ref, token)
    except Unreachable:
        if cached is None:
            raise
        return _report_cached(cached, on_progress)
    for remote in found.files:
        download_file(found, remote, token, on_progress, cancel)
    model = find_cached(ModelRef(ref.repo, ref.tag, found.model))
    if model is None:  # the files are in, so this is a cache we cannot read back
        raise HubError(f"{ref.name()} was downloaded but is not found in {cache_dir()}")
    return model


def _report_cached(model: CachedModel, on_progress: OnProgress | None) -> CachedModel:
    if on_progress is not None:
        for path in model.files:
            size, blob = path.stat().st_size, path.resolve().name
            sha = blob if _is_sha256(blob) else ""
            on_progress(Progress(model.name, path.name, str(path), size, size, "cached", sha))
    return model


def download_file(
    found: Plan,
    remote: RemoteFile,
    token: str | None,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """One file into the cache: resumed from its partial file, verified, then linked."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    ref, where = found.ref, endpoint()
    folder = repo_folder(cache_dir(), ref.repo)
    link = folder / "snapshots" / found.commit / remote.path
    url = hf_hub_url(ref.repo, remote.path, revision=found.commit, endpoint=where)
    report = on_progress or (lambda _p: None)
    known = folder / "blobs" / remote.sha256 if remote.sha256 else None
    if known is not None and known.is_file() and not link.is_file():
        _link(folder, found.commit, link, known)  # the same bytes at a newer commit
    if link.is_file():
        size = link.stat().st_size
        report(Progress(ref.name(), remote.path, url, size, size, "cached", remote.sha256 or ""))
        return link
    try:
        meta = get_hf_file_metadata(url, token=token or False, endpoint=where, timeout=10)
    except GatedRepoError:
        raise HubError(_gated(ref, token, found.tags)) from None
    except HfHubHTTPError as exc:
        raise HubError(f"{where} refused {ref.repo}/{remote.path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise HubError(_unreachable(ref, where, exc)) from None
    sha = remote.sha256 or (meta.etag if _is_sha256(meta.etag) else None)
    total = meta.size if meta.size is not None else remote.size or 0
    blob = folder / "blobs" / (sha or meta.etag or remote.blob_id or remote.path.replace("/", "_"))
    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + ".incomplete")
    # The token goes to the hub only; a redirect to a CDN carries its own signed URL.
    same_host = httpx.URL(meta.location).host == httpx.URL(where).host
    headers = {"Authorization": f"Bearer {token}"} if token and same_host else {}
    locks = cache_dir() / ".locks" / folder.name  # where huggingface_hub keeps its locks
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{blob.name}.lock")):
        if not blob.is_file():
            _check_space(partial, total)
            _transfer(
                meta.location,
                partial,
                total,
                headers,
                cancel,
                lambda done: report(
                    Progress(ref.name(), remote.path, url, done, total, "downloading", sha or "")
                ),
            )
            report(Progress(ref.name(), remote.path, url, total, total, "verifying", sha or ""))
            _verify(partial, remote, sha)
            os.replace(partial, blob)
        _link(folder, found.commit, link, blob)
    report(Progress(ref.name(), remote.path, url, total, total, "done", sha or ""))
    return link


def _link(folder: Path, commit: str, link: Path, blob: Path) -> None:
    """The snapshot's name for a verified blob, and `refs/main` at that commit."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def _is_sha256(text: str | None) -> bool:
    return bool(text) and len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower())  # type: ignore[union-attr]


def _check_space(partial: Path, total: int) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    free = shutil.disk_usage(partial.parent).free
    if total - have > free:
        raise HubError(
            f"not enough disk space for {partial.parent.parent.name}: "
            f"{total - have} bytes needed, {free} free in {partial.parent}"
        )


def _transfer(
    url: str,
    partial: Path,
    total: int,
    headers: dict[str, str],
    cancel: threading.Event | None,
    report: Callable[[int], None],
) -> None:
    """GET the file into `partial`, from where it stopped; a dropped connection resumes."""
    for attempt in range(RETRIES + 1):
        start = partial.stat().st_size if partial.exists() else 0
        if total and start > total:
            partial.unlink()
            start = 0
        if total and start == total:
            return
        ask = {**headers, "Range": f"bytes={start}-"} if start else dict(headers)
        done = start
        try:
            with httpx.stream("GET", url, headers=ask, follow_redirects=True, timeout=TIMEOUT) as r:
                if r.status_code >= 400:
                    raise HubError(f"{url} answered {r.status_code} to the download")
                mode = "ab" if r.status_code == 206 else "wb"  # 200: the server sent it all
                done = start if mode == "ab" else 0
                report(done)
                with partial.open(mode) as out:
                    for chunk in r.iter_bytes():
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(f"download of {url} cancelled at {done} bytes")
                        out.write(chunk)
                        done += len(chunk)
                        report(done)
            if not total or done >= total:
                return
        except httpx.TransportError as exc:
            if attempt == RETRIES:
                raise HubError(
                    f"the download of {url} stopped at {done} of {total} bytes "
                    f"({exc}); run it again to resume"
                ) from None
            time.sleep(RETRY_PAUSE * (attempt + 1))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise HubError(
                    f"the disk is full: {partial} stopped at {done} of {total} "
                    "bytes (it is never served; free space and run it again to "
                    "resume)"
                ) from None
            raise
    raise HubError(f"the download of {url} ended short of {total} bytes; run it again")


def _verify(partial: Path, remote: RemoteFile, sha: str | None) -> None:
    """The hub's LFS sha256 (or, for a small file in git, its blob id) against the bytes."""
    if sha:
        digest = hashlib.sha256()
        expected = sha.lower()
    elif remote.blob_id:
        digest = hashlib.sha1(f"blob {partial.stat().st_size}\0".encode())
        expected = remote.blob_id.lower()
    else:
        return
    with partial.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    got = digest.hexdigest()
    if got != expected:
        partial.unlink(missing_ok=True)
        raise HubError(
            f"checksum mismatch for {remote.path}: the hub says {expected}, the file "
            f"downloaded is {got}; it was deleted (run it again)"
        )
