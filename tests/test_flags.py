"""`endmark serve`'s flags: llama-server's spellings map onto Settings; the rest are named."""

from __future__ import annotations

import pytest

from endmark.cli import _settings, build_parser, main
from endmark.flags import LLAMA_SERVER_FLAGS, normalize_argv, serve_flag_names, unsupported_flag


def settings_of(*argv: str):  # type: ignore[no-untyped-def]
    return _settings(build_parser().parse_args(["serve", *normalize_argv(argv)]))


def test_llama_server_spellings_set_the_settings() -> None:
    s = settings_of(
        "--temp", "0.8", "--seed", "42", "--top-k", "5", "--top-p", "0.5", "--min-p", "0.1",
        "--repeat-penalty", "1.1", "--repeat-last-n", "32", "--presence-penalty", "0.2",
        "--frequency-penalty", "0.3", "-n", "64", "-c", "0", "-np", "-1", "-t", "-1", "-tb", "2",
        "-ub", "128", "-ctk", "q8_0", "-ctv", "q4_0", "-fa", "on", "--swa-full", "-kvu",
        "-nocb", "--no-cache-prompt", "--no-slots", "--metrics", "--no-ui", "--no-jinja",
        "--chat-template", "chatml", "--chat-template-file", "t.jinja", "--alias", "a,b",
        "--tags", "x", "--cors-origins", "http://a,http://b", "--host", "127.0.0.1,::1",
        "--log-verbose", "-nr",
    )  # fmt: skip
    assert (s.temperature, s.seed, s.top_k, s.top_p, s.min_p) == (0.8, 42, 5, 0.5, 0.1)
    assert (s.repeat_penalty, s.repeat_last_n, s.presence_penalty, s.frequency_penalty) == (
        1.1, 32, 0.2, 0.3,
    )  # fmt: skip
    assert (s.n_predict, s.ctx_size, s.parallel, s.threads, s.threads_batch) == (64, 0, 4, None, 2)
    assert (s.ubatch_size, s.cache_type_k, s.cache_type_v, s.flash_attn) == (
        128,
        "q8_0",
        "q4_0",
        "on",
    )
    assert s.swa_full and s.kv_unified and not s.cont_batching and not s.cache_prompt
    assert not s.repack and settings_of("--repack").repack
    assert not s.slots_endpoint and s.metrics and not s.ui and not s.jinja and s.verbose
    assert (s.chat_template, s.chat_template_file) == ("chatml", "t.jinja")
    assert s.aliases() == ["a", "b"] and s.tags == "x" and s.cors == "http://a,http://b"
    assert s.hosts() == ["127.0.0.1", "::1"]
    assert s.sampling_defaults()["temperature"] == 0.8


def test_defaults_leave_each_dialect_its_own_sampling() -> None:
    s = settings_of()
    assert s.sampling_defaults() == {} and s.ctx_size == 0 and s.n_predict == -1
    assert s.slots_endpoint and not s.metrics and s.ui and s.jinja and s.cont_batching
    assert s.repack


def test_underscores_read_as_dashes_as_llama_server_does() -> None:
    assert normalize_argv(["--backend_sampling", "--n_predict=3", "x_y"]) == [
        "--backend-sampling", "--n-predict=3", "x_y",
    ]  # fmt: skip


def test_flags_that_cannot_apply_are_accepted_and_noted() -> None:
    args = build_parser().parse_args(["serve", "-ngl", "99", "--no-warmup", "-bs", "--fit"])
    notes = args.no_effect
    assert len(notes) == 4 and all("no effect on this build" in n for n in notes)
    assert notes[0].startswith("-ngl: ") and "CPU" in notes[0]


def test_embedding_flags_are_honoured() -> None:
    args = build_parser().parse_args(["serve", "--embeddings", "--pooling", "cls"])
    assert args.embedding is True and args.pooling == "cls" and not args.no_effect


def test_rerank_and_infill_flags_are_honoured() -> None:
    for flags in (["--rerank"], ["--reranking"], ["--embedding", "--pooling", "rank"]):
        args = build_parser().parse_args(["serve", *flags, "--spm-infill"])
        assert (args.embedding, args.pooling, args.spm_infill) == (True, "rank", True)
        assert not args.no_effect
    later = build_parser().parse_args(["serve", "--rerank", "--pooling", "cls"])
    assert later.pooling == "cls"  # the last word wins, as in llama-server


def test_speculation_flags_use_llama_servers_names() -> None:
    args = build_parser().parse_args(["serve", "--spec", "none", "--draft-max", "8"])
    assert args.spec == "none" and args.draft_max == 8
    args = build_parser().parse_args(["serve", "--spec-type", "ngram", "--draft-min", "2"])
    assert args.spec == "ngram" and args.draft_min == 2 and not args.no_effect


def test_lora_flags_take_llama_servers_forms_in_command_line_order() -> None:
    args = build_parser().parse_args(
        ["serve", "--lora", "a.gguf", "--lora-scaled", "b.gguf", "0.5", "--lora", "c.gguf,d.gguf",
         "--lora-scaled", "e.gguf:2,f.gguf:-1", "--lora-init-without-apply"]
    )  # fmt: skip
    assert args.lora == "a.gguf:1.0,b.gguf:0.5,c.gguf:1.0,d.gguf:1.0,e.gguf:2.0,f.gguf:-1.0"
    assert args.lora_init_without_apply is True and not args.no_effect
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--lora-scaled", "a.gguf"])  # no scale


def test_llama_server_flags_endmark_lacks_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert unsupported_flag(["--control-vector", "x.gguf"], serve_flag_names()) == (
        "--control-vector"
    )
    assert unsupported_flag(["--temp", "0.5"], serve_flag_names()) is None
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--model-draft", "d.gguf"])
    assert exc.value.code == 2
    assert "--model-draft is a llama-server flag that endmark does not support" in (
        capsys.readouterr().err
    )


def test_an_unknown_flag_is_an_error_that_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--no-such-flag"])
    assert exc.value.code == 2 and "--no-such-flag" in capsys.readouterr().err


def test_every_flag_endmark_defines_is_one_llama_server_has_or_its_own() -> None:
    own = {"--queue-size", "--n-predict-cap", "--max-body-bytes", "--shutdown-grace", "--cors",
           "--spec", "--models-file", "--models-memory", "--default-model",
           "--keep-alive", "--replicas", "--ray-address", "--chat-parse-special",
           "--cache-dir", "--cache-dir-size", "--cache-min-tokens"}  # fmt: skip
    assert serve_flag_names() - LLAMA_SERVER_FLAGS - own <= {"-no-kvu", "--usage"}
