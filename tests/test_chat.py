from __future__ import annotations

import pytest

from endmark.chat import (
    BUILTIN_TEMPLATES,
    ChatTemplate,
    TemplateChoice,
    TemplateRefused,
    TemplateRenderError,
    end_of_turn_markers,
    end_of_turn_text,
    load_template,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]

EXPECTED_AFTER_ASSISTANT = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "gemma": "<end_of_turn>",
    "mistral": "</s>",
    "phi3": "<|end|>",
}


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtins_render_a_conversation_and_end_turns_with_their_marker(name: str) -> None:
    t = load_template(name, None, "<s>", "</s>")
    assert t is not None
    text = t.render(CONVERSATION)
    assert "Be brief." in text and "Bye" in text
    assert "Hello!" + EXPECTED_AFTER_ASSISTANT[name] in text


def test_override_beats_the_model_template_and_files_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert load_template(None, None) is None
    assert load_template(None, "{{ 'model' }}").render([]) == "model"  # type: ignore[union-attr]
    assert load_template("chatml", "{{ 'model' }}").name == "chatml"  # type: ignore[union-attr]
    f = tmp_path / "t.jinja"
    f.write_text("{% for m in messages %}[{{ m.role }}]{% endfor %}")
    assert load_template(str(f), None).render(CONVERSATION[:1]) == "[system]"  # type: ignore[union-attr]
    # neither a name nor a file: Jinja source, as llama-server's --chat-template takes it
    assert load_template("plain {{ 'text' }}", None).render([]) == "plain text"  # type: ignore[union-attr]
    choice = TemplateChoice(file=str(f))
    assert load_template(choice, "{{ 'model' }}").render(CONVERSATION[:1]) == "[system]"  # type: ignore[union-attr]
    with pytest.raises(TemplateRefused, match="no such file"):
        load_template(TemplateChoice(file=str(tmp_path / "missing.jinja")), None)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ messages['__class__'] }}",
        "{% set x = namespace() %}{{ x._Namespace__attrs }}",
    ],
)
def test_templates_that_reach_for_python_internals_are_refused_before_running(source: str) -> None:
    with pytest.raises(TemplateRefused, match="Python internals"):
        ChatTemplate(source, "evil")


def test_dynamic_reaches_are_stopped_at_render_time() -> None:
    t = ChatTemplate("{{ ''|attr('__class__') }}", "sneaky")
    with pytest.raises(TemplateRenderError, match="refused"):
        t.render([])


def test_huggingface_helpers_are_there() -> None:
    t = ChatTemplate(
        "{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}"
        "{{ messages[0]|tojson }}{{ strftime_now('%Y') | length }}",
        "hf",
    )
    assert t.render([{"role": "user", "content": "é"}]) == '{"role": "user", "content": "é"}4'
    with pytest.raises(TemplateRenderError, match="one message only"):
        t.render(CONVERSATION)
    with pytest.raises(TemplateRefused, match="does not compile"):
        ChatTemplate("{% for %}", "broken")


def test_markers_are_the_leading_control_tokens_after_the_content() -> None:
    vocab = {"<|end_turn|>": 7, "<|sep|>": 8, "\n": 9}

    def tokenize(text: str, add_special: bool, parse_special: bool) -> list[int]:
        out, i = [], 0
        while i < len(text):
            for piece, tid in vocab.items():
                if text.startswith(piece, i):
                    out.append(tid)
                    i += len(piece)
                    break
            else:
                out.append(100)
                i += 1
        return out

    t = ChatTemplate(
        "{% for m in messages %}{{ m.content }}<|end_turn|><|sep|>\n{% endfor %}", "custom"
    )
    assert end_of_turn_markers(t, tokenize, {7, 8}) == [7, 8]
    assert end_of_turn_markers(t, tokenize, {8}) == []


def test_an_end_tag_the_model_has_no_token_for_is_its_end_as_text() -> None:
    """Phi-3.5's template on SmolLM2 (issue 24): `<|end|>` is no token of this model, so the
    model writes it as text, and it must end the turn all the same."""
    t = ChatTemplate("{% for m in messages %}{{ m.content }}<|end|>\n{% endfor %}", "phi")
    texts = {"<|end|>": 7}

    def tokenize(text: str, add_bos: bool, special: bool) -> list[int]:
        return [texts[text]] if text in texts else [100] * len(text)

    assert end_of_turn_text(t, tokenize, {7}) == ""  # a control token: an end token
    assert end_of_turn_text(t, tokenize, set()) == "<|end|>"
    apriel = ChatTemplate("{% for m in messages %}{{ m.content }}\n<|end|>\n{% endfor %}", "a")
    assert end_of_turn_text(apriel, tokenize, set()) == "<|end|>"  # after a newline
    plain = ChatTemplate("{% for m in messages %}{{ m.content }}\n\n{% endfor %}", "plain")
    assert end_of_turn_text(plain, tokenize, set()) == ""  # no tag: nothing to stop on


def test_smollm2_template_marks_im_end(engine) -> None:  # type: ignore[no-untyped-def]
    t = load_template(None, engine.chat_template(), "<|im_start|>", "<|im_end|>")
    assert t is not None
    assert end_of_turn_markers(t, engine.tokenize, engine.vocab.control) == [2]
