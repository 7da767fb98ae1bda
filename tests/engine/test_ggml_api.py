"""libggml's functions that endmark declares exist in this build, with their prototypes."""

from __future__ import annotations

from endmark.engine.ggml_api import PROTOTYPES, ggml


def test_every_declared_function_is_this_builds_with_its_prototype() -> None:
    lib = ggml()
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        assert (fn.restype, fn.argtypes) == (restype, argtypes), name
    assert lib.ggml_backend_dev_by_type(0)  # the CPU device, which the repack choice asks
