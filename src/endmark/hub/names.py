"""Which files of a Hugging Face repo a `user/repo[:tag]` name means, by llama.cpp's rules.

llama-server's `-hf user/repo:tag` picks the GGUF whose name holds the tag (its quantization,
case-insensitive), or by default `Q4_K_M`, then `Q8_0`, then the first GGUF; a split model is
all of its shards; a multimodal projector (`mmproj`) beside the model comes too. The same rules
apply here to a repo's listing and to the files already in the cache (common/download.cpp).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TAGS = ("Q4_K_M", "Q8_0")
# Files that are GGUFs but not a model of their own (llama.cpp's list).
NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
HUB_HOSTS = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")
_SHARD = re.compile(r"^(.+)-(\d{5})-of-(\d{5})$", re.IGNORECASE)
_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BadName(ValueError):
    """A model name that is not `user/repo[:tag]`."""


@dataclass(frozen=True)
class ModelRef:
    """A model on the hub: the repo, and the tag or the exact file that picks it."""

    repo: str
    tag: str = ""
    file: str = ""

    def name(self) -> str:
        """`user/repo:TAG` as llama-server's router names a cached model."""
        return f"{self.repo}:{self.tag.upper()}" if self.tag else self.repo


def parse_ref(text: str, file: str = "") -> ModelRef:
    """`user/repo`, `user/repo:tag`, with or without Ollama's `hf.co/` host in front."""
    name = text.strip()
    for host in HUB_HOSTS:
        if name.lower().startswith(host):
            name = name[len(host) :]
            break
    repo, _, tag = name.partition(":")
    if not _REPO.match(repo) or ":" in tag:
        raise BadName(f"'{text}' is not a Hugging Face model name: use user/repo or user/repo:tag")
    if tag.lower() == "latest":  # Ollama's default tag means llama-server's default choice
        tag = ""
    return ModelRef(repo, tag, file)


@dataclass(frozen=True)
class SplitInfo:
    prefix: str  # the name without `.gguf` and without the shard suffix; the tag included
    tag: str  # upper case; "" when the name has none
    index: int
    count: int


def split_info(path: str) -> SplitInfo | None:
    """A GGUF path's shard number, shard count and quantization tag; None if not a GGUF."""
    if not path.lower().endswith(".gguf"):
        return None
    prefix, index, count = path[: -len(".gguf")], 1, 1
    shard = _SHARD.match(prefix)
    if shard:
        prefix, index, count = shard.group(1), int(shard.group(2)), int(shard.group(3))
    tag = _TAG.search(prefix)
    return SplitInfo(prefix, tag.group(1).upper() if tag else "", index, count)


def is_model_file(path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    return base.lower().endswith(".gguf") and not any(word in base for word in NOT_MODELS)


def _is_first(path: str) -> bool:
    info = split_info(path)
    return info is not None and (info.count <= 1 or info.index == 1)


def pick_model(files: list[str], tag: str) -> str | None:
    """The model file a tag names (its first shard), or the default choice without a tag."""
    for wanted in [tag] if tag else list(DEFAULT_TAGS):
        pattern = re.compile(re.escape(wanted) + r"[.-]", re.IGNORECASE)
        for path in files:
            if is_model_file(path) and pattern.search(path) and _is_first(path):
                return path
    if not tag:
        return next((p for p in files if is_model_file(p) and _is_first(p)), None)
    return None


def shards_of(files: list[str], primary: str) -> list[str]:
    """Every shard of a split model, in order; the file alone otherwise."""
    info = split_info(primary)
    if info is None or info.count <= 1:
        return [primary]
    key = (info.prefix, info.count)
    same = [p for p in files if (s := split_info(p)) and (s.prefix, s.count) == key]
    return sorted(same, key=lambda p: split_info(p).index)  # type: ignore[union-attr]


def _bits(path: str) -> int:
    info = split_info(path)
    digits = re.search(r"\d+", info.tag) if info else None
    return int(digits.group()) if digits else 0


def pick_mmproj(files: list[str], model: str) -> str | None:
    """The multimodal projector for a model: in its folder or above, the deepest, then the
    closest in bits to the model's quantization (llama.cpp's `find_best_sibling`)."""
    folder = model.rsplit("/", 1)[0] if "/" in model else ""
    best: tuple[int, int] | None = None
    choice = None
    for path in files:
        base_folder = path.rsplit("/", 1)[0] if "/" in path else ""
        if not path.lower().endswith(".gguf") or "mmproj" not in path.rsplit("/", 1)[-1]:
            continue
        if base_folder and not (folder == base_folder or folder.startswith(base_folder + "/")):
            continue
        rank = (-base_folder.count("/") - bool(base_folder), abs(_bits(path) - _bits(model)))
        if best is None or rank < best:
            best, choice = rank, path
    return choice


def tags_of(files: list[str]) -> list[str]:
    """The tags a repo offers: each model's quantization, as `-hf user/repo:TAG` takes it."""
    tags = {
        info.tag
        for p in files
        if is_model_file(p) and _is_first(p)
        if (info := split_info(p)) and info.tag
    }
    return sorted(tags)
