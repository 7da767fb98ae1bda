"""llama-server's `llamacpp:*` metrics written from the scheduler's totals."""

from __future__ import annotations

from endmark.runtime import Activity
from endmark.scheduler import Stats
from endmark.server.http.llamacpp_metrics import llamacpp_metrics


def test_the_generation_rate_counts_decode_steps_after_the_first_token() -> None:
    st = Stats(generated_tokens=16, generation_steps=15, generation_seconds=0.5,
               prompt_tokens=10, prompt_tokens_cached=30, decodes=20, busy_slots=30)  # fmt: skip
    st.checked(4, 2)
    st.checked(3, 3)
    text = llamacpp_metrics(Activity(st, 1, 2, 4))
    assert "# TYPE llamacpp:n_tokens_max counter\nllamacpp:n_tokens_max 0\n" in text
    assert "llamacpp:predicted_tokens_seconds 30\n" in text  # 15 steps in 0.5 s, not 16
    assert "llamacpp:prompt_tokens_total 10\n" in text
    assert "llamacpp:prompt_tokens_cached_total 30\n" in text
    assert "llamacpp:n_busy_slots_per_decode 1.5\n" in text
    assert "llamacpp:requests_processing 1\n" in text and "llamacpp:requests_deferred 2\n" in text
    assert "llamacpp:spec_decode_num_draft_tokens_total 7\n" in text
    assert "llamacpp:spec_decode_num_accepted_tokens_total 5\n" in text
    assert "llamacpp:spec_decode_num_drafts_total 2\n" in text
    per = "llamacpp:spec_decode_num_accepted_tokens_per_pos_total"
    assert f'{per}{{position="0"}} 2\n{per}{{position="1"}} 2\n{per}{{position="2"}} 1\n' in text
