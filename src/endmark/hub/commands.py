"""`endmark pull`, `endmark list`, `endmark rm`, and the model `serve -hf` names."""

from __future__ import annotations

import argparse
import json
import sys

from endmark.hub.cache import cache_dir, list_cached, remove_cached
from endmark.hub.download import HubError, fetch
from endmark.hub.names import BadName, parse_ref
from endmark.hub.progress import human_bytes, progress_for
from endmark.settings import Settings


def add_hub_flags(p: argparse.ArgumentParser) -> None:
    """llama-server's Hugging Face flags, with its meanings."""
    p.add_argument(
        "-hf", "-hfr", "--hf-repo", metavar="USER/MODEL[:QUANT]",
        help="a model from Hugging Face, downloaded into the cache (LLAMA_CACHE, else the HF "
        "cache) unless it is there; QUANT (case-insensitive) picks the file, default Q4_K_M",
    )  # fmt: skip
    p.add_argument("-hff", "--hf-file", help="this file of --hf-repo, instead of its QUANT")
    p.add_argument("-hft", "--hf-token", help="Hugging Face token (default: HF_TOKEN)")
    p.add_argument(
        "--offline", action="store_true", default=None,
        help="use the cache only: never reach Hugging Face",
    )  # fmt: skip


def add_hub_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pull = sub.add_parser("pull", help="download a model from Hugging Face into the cache")
    pull.add_argument("model", help="user/repo[:quant], or hf.co/user/repo[:quant]")
    pull.add_argument("-hff", "--hf-file", help="this file of the repo, instead of its quant")
    pull.add_argument("-hft", "--hf-token", help="Hugging Face token (default: HF_TOKEN)")
    listing = sub.add_parser("list", help="the models in the cache")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    rm = sub.add_parser("rm", help="remove models from the cache")
    rm.add_argument("models", nargs="+", help="user/repo[:quant]")


def hub_model(args: argparse.Namespace, settings: Settings) -> bool:
    """`-hf`: the model's file, fetched if need be, becomes the settings' model (named
    `user/repo:QUANT` unless --alias names it). False, with the reason on stderr, if it
    cannot be had."""
    if not getattr(args, "hf_repo", None):
        if getattr(args, "hf_file", None):
            print("endmark: --hf-file needs --hf-repo (-hf USER/MODEL)", file=sys.stderr)
            return False
        return True
    try:
        if settings.model:
            raise HubError("give the model as -m PATH or as -hf USER/MODEL[:QUANT], not both")
        ref = parse_ref(args.hf_repo, file=args.hf_file or "")
        model = fetch(ref, args.hf_token, args.offline or None, progress_for(sys.stderr))
    except (HubError, BadName) as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return False
    settings.model = str(model.path)
    settings.alias = settings.alias or model.name
    return True


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "pull":
            ref = parse_ref(args.model, file=args.hf_file or "")
            model = fetch(ref, args.hf_token, None, progress_for(sys.stderr))
            print(f"{model.name}\t{model.path}")
            return 0
        if args.command == "list":
            return show_list(args.json)
        return remove(args.models)
    except (HubError, BadName) as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("endmark: stopped; the partial file resumes on the next pull", file=sys.stderr)
        return 130


def show_list(as_json: bool) -> int:
    models = list_cached()
    if as_json:
        rows = [{"name": m.name, "path": str(m.path), "size": m.size,
                 "files": [str(p) for p in m.files],
                 "mmproj": str(m.mmproj) if m.mmproj else None} for m in models]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    if not models:
        print(f"no models in the cache ({cache_dir()}): endmark pull USER/MODEL[:QUANT]")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        print(f"{m.name:<{width}}  {human_bytes(m.size):>9}  {m.path}")
    return 0


def remove(names: list[str]) -> int:
    status = 0
    for name in names:
        ref = parse_ref(name)
        removed = remove_cached(ref)
        if not removed:
            print(f"endmark: {name} is not in the cache (endmark list shows it)", file=sys.stderr)
            status = 1
            continue
        print(f"removed {ref.name() if ref.tag else name} ({len(removed)} file(s))")
    return status
