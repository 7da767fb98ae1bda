from __future__ import annotations

from endmark.endings import (
    EndPolicy,
    EogSet,
    Finish,
    StepFacts,
    StopMatcher,
    check_stop,
    end_token,
    printable,
)
from endmark.engine import Vocab


def make_vocab() -> Vocab:
    texts = [b"<|endoftext|>", b"<|im_start|>", b"<|im_end|>", b"<|turn_done|>", b"a", b"b"]
    return Vocab(
        n_vocab=len(texts),
        bos=1,
        eos=2,
        eot=None,
        eom=None,
        add_bos=False,
        eog_flagged=frozenset({0, 2}),
        control=frozenset({0, 1, 2, 3}),
        pieces=[b"", b"", b"", b"", b"a", b"b"],
        special_pieces=texts,
        eos_token_ids=(0,),
    )


def test_eog_set_gathers_every_source_and_names_the_first() -> None:
    eog = EogSet.from_vocab(make_vocab(), template_markers=[3, 2])
    assert eog.ids() == [0, 2, 3]
    assert eog.tokens[2].sources == ("vocab", "eos", "template")
    assert eog.tokens[2].source == "vocab"
    assert eog.tokens[0].sources == ("vocab", "eos_token_ids")
    assert eog.tokens[3].source == "template" and eog.tokens[3].text == "<|turn_done|>"
    assert 3 in eog and 4 not in eog


def test_stop_tokens_extend_the_set_for_one_request_only() -> None:
    vocab = make_vocab()
    eog = EogSet.from_vocab(vocab)
    extended = eog.with_stop_tokens(vocab, [1, 2])
    assert extended.tokens[1].source == "stop"
    assert extended.tokens[2].source == "vocab"
    assert 1 not in eog


def test_stop_matcher_holds_back_a_possible_start_and_cuts_at_the_stop() -> None:
    m = StopMatcher(["</answer>"])
    assert m.push("The answer is 4") == ("The answer is 4", None)
    assert m.push(" </ans") == (" ", None)
    assert m.push("wer> and more") == ("", "</answer>")


def test_stop_matcher_releases_text_that_was_not_a_stop() -> None:
    m = StopMatcher(["Paris!!"])
    assert m.push("in Par") == ("in ", None)
    assert m.push("is!") == ("", None)
    assert m.push(" Yes") == ("Paris! Yes", None)
    assert m.push("Pa") == ("", None)
    assert m.flush() == "Pa"


def test_stop_matcher_picks_the_earliest_of_several_stops() -> None:
    m = StopMatcher(["world", "lo w"])
    assert m.push("hello world") == ("hel", "lo w")


def test_stop_matcher_without_stops_releases_everything() -> None:
    m = StopMatcher([])
    assert m.push("abc") == ("abc", None)
    assert m.flush() == ""


def test_finish_describes_itself_and_maps_to_openai() -> None:
    eog = EogSet.from_vocab(make_vocab())
    f = Finish("eos", token=eog.tokens[2])
    assert f.describe() == "eos <|im_end|> (id 2, source vocab)"
    assert f.finish_reason == "stop"
    assert Finish("word", word="\n\n").describe() == "word '\\n\\n'"
    assert printable("ok\x1b[31m<|x|>\nfake log line") == "ok\\x1b[31m<|x|>\\nfake log line"
    limit = Finish("limit", detail="n_predict 4")
    assert limit.finish_reason == "length" and limit.describe() == "limit (n_predict 4)"


def test_end_token_ends_on_any_eog_token_unless_ignore_eos() -> None:
    eog = EogSet.from_vocab(make_vocab(), template_markers=[3])
    policy = EndPolicy(eog)
    assert end_token(policy, 4) is None
    finish = end_token(policy, 3, grammar_accepting=True)
    assert finish is not None and finish.stop_type == "eos" and finish.grammar_complete
    assert finish.token is not None and finish.token.text == "<|turn_done|>"
    assert end_token(EndPolicy(eog, ignore_eos=True), 3) is None


def test_check_stop_decides_in_order_word_grammar_limit_context_time() -> None:
    eog = EogSet.from_vocab(make_vocab())
    policy = EndPolicy(eog, n_predict=10, time_limit_ms=500)

    def facts(**kw: object) -> StepFacts:
        return StepFacts(**{"n_generated": 3, "n_prompt": 5, "n_ctx": 100, **kw})  # type: ignore[arg-type]

    assert check_stop(policy, facts()) is None
    assert check_stop(policy, facts(word="END", n_generated=10)) == Finish("word", word="END")
    grammar = check_stop(policy, facts(grammar_complete=True, n_generated=10))
    assert grammar is not None and grammar.stop_type == "eos" and grammar.grammar_complete
    limit = check_stop(policy, facts(n_generated=10))
    assert limit is not None and limit.stop_type == "limit" and not limit.truncated
    full = check_stop(policy, facts(n_prompt=97))
    assert full is not None and full.truncated
    late = check_stop(policy, facts(elapsed_ms=501))
    assert late is not None and "t_max_predict_ms" in late.detail
    assert check_stop(EndPolicy(eog), facts(n_generated=10_000, n_ctx=20_000)) is None
