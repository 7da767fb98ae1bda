"""Reading one metadata value straight from a GGUF file's header.

llama.cpp's metadata API gives scalars and strings but not arrays such as
`tokenizer.ggml.eos_token_ids`; the `gguf` package can read them but parses the whole file
(seconds for a large vocabulary). This walks the key/value section only, skipping what it
does not need.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int | float | bool:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value  # type: ignore[no-any-return]

    def string(self) -> bytes:
        n = int(self.take("Q"))
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, vtype: int) -> None:
        if vtype in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[vtype])
        elif vtype == _STRING:
            n = int(self.take("Q"))  # read first: `self.pos += take()` would add to the old pos
            self.pos += n
        elif vtype == _ARRAY:
            etype, count = int(self.take("I")), int(self.take("Q"))
            if etype in _SCALARS:
                self.pos += struct.calcsize(_SCALARS[etype]) * count
            else:
                for _ in range(count):
                    self.skip(etype)
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")


def read_int_array(path: str | Path, key: str) -> list[int] | None:
    """The integer array stored under `key`, or None if the file has no such key."""
    wanted = key.encode()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            return None
        cur = _Cursor(data)
        cur.pos = 4
        version = int(cur.take("I"))
        if version < 2:
            return None
        cur.take("Q")  # tensor count
        n_kv = int(cur.take("Q"))
        for _ in range(n_kv):
            name = cur.string()
            vtype = int(cur.take("I"))
            if name != wanted:
                cur.skip(vtype)
                continue
            if vtype != _ARRAY:
                return None
            etype, count = int(cur.take("I")), int(cur.take("Q"))
            if etype not in _SCALARS or etype in (6, 7, 12):
                return None
            return [int(cur.take(_SCALARS[etype])) for _ in range(count)]
    return None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml's order: shape[0] is a row's length
    ggml_type: int


def read_tensors(path: str | Path) -> list[TensorInfo]:
    """The tensors a GGUF file holds: names, shapes and types, from its header only (llama.cpp's
    API does not say which optional tensors a model has, such as a reranker's `cls` head, nor
    how each weight is quantized)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            return []
        cur = _Cursor(data)
        cur.pos = 4
        if int(cur.take("I")) < 2:
            return []
        n_tensors, n_kv = int(cur.take("Q")), int(cur.take("Q"))
        for _ in range(n_kv):
            cur.string()
            cur.skip(int(cur.take("I")))
        out = []
        for _ in range(n_tensors):
            name = cur.string().decode("utf-8", errors="replace")
            shape = tuple(int(cur.take("Q")) for _ in range(int(cur.take("I"))))
            ggml_type = int(cur.take("I"))
            cur.take("Q")  # the data's offset
            out.append(TensorInfo(name, shape, ggml_type))
        return out


def read_tensor_names(path: str | Path) -> list[str]:
    return [t.name for t in read_tensors(path)]
