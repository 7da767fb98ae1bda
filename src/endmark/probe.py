"""`endmark probe URL`: how cleanly does any llama.cpp-style or OpenAI-compatible server end?

It runs a battery of small requests on every endpoint the server has, plain and streamed,
and names what went wrong in each cell. It only reads answers: it never needs the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from endmark.clean import KNOWN_MARKERS, TURN_STARTS, cut_next_turn

CLEAN = "clean"
LEAKED = "leaked end-token text"
PARTIAL_STOP = "partial stop-string leak"
LIMIT = "ran to the limit"
NEXT_TURN = "wrote the next turn"
BAD_JSON = "unparseable JSON"
UNSUPPORTED = "unsupported"
ERROR = "error"
FAILURES = {LEAKED, PARTIAL_STOP, LIMIT, NEXT_TURN, BAD_JSON, ERROR}

QUESTION = "What is the capital of France? Answer in one short sentence."
STORY_PROMPT = "Write three sentences about a lighthouse by the sea."
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}


@dataclass
class Cell:
    check: str
    endpoint: str
    stream: bool
    verdict: str
    detail: str = ""


@dataclass
class Answer:
    text: str
    hit_limit: bool


# The server closed the connection before answering: a transport hiccup, not a server error.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class Prober:
    def __init__(self, url: str, api_key: str | None = None, model: str = "default") -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No kept-alive connections: a server may close an idle one just as a request goes
        # out on it (llama-server does after a few seconds), which is no fault of its answers.
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=120,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.model = model
        self.markers = tuple(dict.fromkeys((*KNOWN_MARKERS, *TURN_STARTS, *self._learned())))

    def _learned(self) -> list[str]:
        """End tokens the server itself reports (endmark's /props), to look for them too."""
        try:
            props = self.http.get("/props").json()
            return [t["text"] for t in props.get("eog_tokens", []) if t.get("text")]
        except (httpx.HTTPError, ValueError, AttributeError):
            return []

    # -- requests ---------------------------------------------------------------------------

    def ask(
        self, endpoint: str, stream: bool, prompt: str, max_tokens: int, **extra: Any
    ) -> Answer:
        """One request on `endpoint` in its own dialect; the text and whether it hit the limit.
        A connection dropped before the answer is retried once, on a new connection."""
        try:
            return self._ask(endpoint, stream, prompt, max_tokens, **extra)
        except DROPPED:
            return self._ask(endpoint, stream, prompt, max_tokens, **extra)

    def _ask(
        self, endpoint: str, stream: bool, prompt: str, max_tokens: int, **extra: Any
    ) -> Answer:
        if endpoint == "/completion":
            body = {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, **extra}
        elif endpoint == "/v1/completions":
            body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens,
                    "temperature": 0, **extra}  # fmt: skip
        else:
            body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens, "temperature": 0, **extra}  # fmt: skip
        if not stream:
            r = self.http.post(endpoint, json=body)
            r.raise_for_status()
            return self._whole(endpoint, r.json())
        parts: list[str] = []
        finish: Any = None
        with self.http.stream("POST", endpoint, json={**body, "stream": True}) as r:
            if r.is_error:
                r.read()  # keep the server's error message for the cell
            r.raise_for_status()
            for data in _sse(r.iter_lines()):
                text, end = self._chunk(endpoint, data)
                parts.append(text)
                finish = end or finish
        return Answer("".join(parts), finish in ("length", "limit"))

    @staticmethod
    def _whole(endpoint: str, data: dict[str, Any]) -> Answer:
        if endpoint == "/completion":
            return Answer(data.get("content", ""), data.get("stop_type") == "limit")
        choice = data["choices"][0]
        text = choice.get("text") if endpoint == "/v1/completions" else choice["message"]["content"]
        return Answer(text or "", choice.get("finish_reason") == "length")

    @staticmethod
    def _chunk(endpoint: str, data: dict[str, Any]) -> tuple[str, str | None]:
        if endpoint == "/completion":
            return data.get("content", ""), data.get("stop_type") if data.get("stop") else None
        if not data.get("choices"):
            return "", None
        choice = data["choices"][0]
        if endpoint == "/v1/completions":
            return choice.get("text") or "", choice.get("finish_reason")
        return (choice.get("delta") or {}).get("content") or "", choice.get("finish_reason")

    # -- checks -----------------------------------------------------------------------------

    def endpoints(self) -> list[str]:
        """The endpoints that answer a tiny request."""
        found = []
        for endpoint in ("/completion", "/v1/completions", "/v1/chat/completions"):
            try:
                self.ask(endpoint, False, "Hi", 1)
                found.append(endpoint)
            except (httpx.HTTPError, KeyError, ValueError):
                pass
        return found

    def _leaked(self, text: str) -> str | None:
        return next((m for m in self.markers if m in text), None)

    def answer_cell(self, endpoint: str, stream: bool) -> tuple[str, str]:
        prompt = QUESTION
        if endpoint != "/v1/chat/completions":
            prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
        a = self.ask(endpoint, stream, prompt, 96)
        if (m := self._leaked(a.text)) is not None:
            return LEAKED, m
        if cut_next_turn(a.text, ()) != a.text.strip():
            return NEXT_TURN, a.text[-60:]
        if a.hit_limit:
            return LIMIT, "96 tokens"
        return CLEAN, a.text[:60]

    def stop_cell(self, endpoint: str, stream: bool) -> tuple[str, str]:
        """A stop string cut from the server's own greedy answer, so it is sure to come up;
        the answer with it must end exactly before it, with no piece of it streamed."""
        prompt = STORY_PROMPT
        if endpoint != "/v1/chat/completions":
            prompt = f"<|im_start|>user\n{STORY_PROMPT}<|im_end|>\n<|im_start|>assistant\n"
        full = self.ask(endpoint, stream, prompt, 48).text
        stop = _stop_window(full)
        if stop is None:
            return UNSUPPORTED, "the answer had no clean text to cut a stop string from"
        expected = full[: full.index(stop)]
        got = self.ask(endpoint, stream, prompt, 48, stop=[stop]).text
        if got == expected or got.rstrip() == expected.rstrip():
            return CLEAN, f"stopped before {stop!r}"
        if stop in got:
            return PARTIAL_STOP, f"the stop string {stop!r} itself came through"
        extra = got[len(expected) :] if got.startswith(expected) else ""
        if extra and stop.startswith(extra):
            return PARTIAL_STOP, f"{extra!r}, the start of {stop!r}, came through"
        if (m := self._leaked(got)) is not None:
            return LEAKED, m
        return CLEAN, f"answer differed from the first run ({got[-20:]!r})"

    def grammar_cell(self, endpoint: str, stream: bool) -> tuple[str, str]:
        a = self.ask(endpoint, stream, "Reply with an empty JSON object.", 16,
                     grammar='root ::= "{}"')  # fmt: skip
        return self._json_verdict(a, exact="{}")

    def schema_cell(self, endpoint: str, stream: bool) -> tuple[str, str]:
        if endpoint == "/v1/chat/completions":
            extra: dict[str, Any] = {
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "city", "schema": SCHEMA}}
            }  # fmt: skip
        else:
            extra = {"json_schema": SCHEMA}
        a = self.ask(endpoint, stream, "Which city is the capital of France? JSON.", 64, **extra)
        return self._json_verdict(a)

    def _json_verdict(self, a: Answer, exact: str | None = None) -> tuple[str, str]:
        if (m := self._leaked(a.text)) is not None:
            return LEAKED, m
        try:
            json.loads(a.text)
        except ValueError:
            return (LIMIT if a.hit_limit else BAD_JSON), a.text[:60]
        if exact is not None and a.text != exact:
            return BAD_JSON, f"{a.text!r} instead of {exact!r}"
        return CLEAN, a.text[:60]

    def run(self) -> list[Cell]:
        cells = []
        checks = {
            "answer": self.answer_cell,
            "stop string": self.stop_cell,
            "grammar": self.grammar_cell,
            "json schema": self.schema_cell,
        }
        for endpoint in self.endpoints():
            for stream in (False, True):
                for name, check in checks.items():
                    try:
                        verdict, detail = check(endpoint, stream)
                    except httpx.HTTPStatusError as exc:
                        optional = name in ("grammar", "json schema")
                        code = exc.response.status_code
                        verdict = UNSUPPORTED if optional and code < 500 else ERROR
                        detail = f"HTTP {code}{_server_message(exc.response)}"
                    except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
                        verdict, detail = ERROR, f"{type(exc).__name__}: {exc}"[:80]
                    cells.append(Cell(name, endpoint, stream, verdict, detail))
        return cells


def _stop_window(text: str, size: int = 8) -> str | None:
    """Eight characters from a third of the way into `text`, or later: never a piece with
    U+FFFD (text the server could not decode, which no stop string can match) or mostly
    blank."""
    for at in range(len(text) // 3, len(text) - size + 1):
        window = text[at : at + size]
        if "\ufffd" not in window and len(window.strip()) >= 4:
            return window
    return None


def _server_message(response: httpx.Response) -> str:
    """The server's own words for an error answer, when it gives any."""
    try:
        response.read()
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError, httpx.HTTPError, httpx.StreamError):
        return ""
    return f": {str(message)[:100]}" if message else ""


def _sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            yield json.loads(line[6:])


def table(cells: list[Cell]) -> str:
    columns = list(dict.fromkeys((c.endpoint, c.stream) for c in cells))
    checks = list(dict.fromkeys(c.check for c in cells))
    by = {(c.check, c.endpoint, c.stream): c.verdict for c in cells}
    header = ["check"] + [f"{e} {'stream' if s else 'plain'}" for e, s in columns]
    rows = [[check] + [by.get((check, e, s), "-") for e, s in columns] for check in checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    return "\n".join(lines)


def probe(url: str, api_key: str | None, model: str, as_json: bool) -> int:
    cells = Prober(url, api_key, model).run()
    if not cells:
        print(f"no generation endpoint answered at {url}")
        return 1
    print(json.dumps([asdict(c) for c in cells], indent=2) if as_json else table(cells))
    return 1 if any(c.verdict in FAILURES for c in cells) else 0
