"""llama-server's `llamacpp:*` metrics, with its names, types and meanings, written as it
writes them (Prometheus text; `llamacpp:n_tokens_max` is a counter without `_total`, which
prometheus_client would add)."""

from __future__ import annotations

from endmark.runtime import Activity


def _line(kind: str, name: str, text: str, value: float) -> str:
    number = int(value) if float(value).is_integer() else value
    head = f"# HELP llamacpp:{name} {text}\n# TYPE llamacpp:{name} {kind}\n"
    return f"{head}llamacpp:{name} {number}\n"


def llamacpp_metrics(now: Activity) -> str:
    """Prompt tokens count only those decoded (cached ones apart); the generation rate is
    decode steps after each request's first token (which came with the prompt) per second of
    generation; the speculative counters count checked guesses (prompt lookup, and the
    tokens a grammar forces)."""
    st = now.stats
    counters = [
        ("prompt_tokens_total", "Number of prompt tokens processed, excluding cached tokens",
         st.prompt_tokens),
        ("prompt_tokens_cached_total", "Number of prompt tokens reused from the cache",
         st.prompt_tokens_cached),
        ("prompt_seconds_total", "Total time spent processing prompts", st.prompt_seconds),
        ("tokens_predicted_total", "Number of generation tokens processed", st.generated_tokens),
        ("tokens_predicted_seconds_total", "Total time spent generating tokens",
         st.generation_seconds),
        ("n_decode_total", "Total number of llama_decode() calls", st.decodes),
        ("n_tokens_max", "Largest observed sequence length (prompt + generation)",
         st.n_tokens_max),
        ("spec_decode_num_draft_tokens_total", "Speculative: Total draft tokens generated",
         st.draft_tokens),
        ("spec_decode_num_accepted_tokens_total",
         "Speculative: Total draft tokens accepted by the target model", st.draft_accepted),
        ("spec_decode_num_drafts_total",
         "Speculative: Total speculative decoding verification steps", st.draft_checks),
    ]  # fmt: skip
    gauges = [
        ("prompt_tokens_seconds", "Average prompt throughput in tokens/s",
         st.prompt_tokens / st.prompt_seconds if st.prompt_seconds else 0.0),
        ("predicted_tokens_seconds", "Average generation throughput in tokens/s",
         st.generation_steps / st.generation_seconds if st.generation_seconds else 0.0),
        ("requests_processing", "Number of requests processing", now.running),
        ("requests_deferred", "Number of requests deferred", now.queued),
        ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call",
         st.busy_slots / max(st.decodes, 1)),
    ]  # fmt: skip
    out = [_line("counter", *c) for c in counters] + [_line("gauge", *g) for g in gauges]
    if st.accepted_per_position:
        name = "llamacpp:spec_decode_num_accepted_tokens_per_pos_total"
        out.append(f"# HELP {name} Accepted tokens per draft position\n# TYPE {name} counter\n")
        out += [f'{name}{{position="{i}"}} {n}\n' for i, n in enumerate(st.accepted_per_position)]
    return "".join(out)
