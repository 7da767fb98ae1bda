"""llama.cpp's own C++ server, built once from the sources in the llama-cpp-python sdist.

`python -m benchmarks.llama_server` builds it (about 7 minutes on two cores) into
~/.cache/endmark/llama-server-<version>/ and prints the binary's path; the harness calls
`ensure_built()` and skips llama-server with a clear message if the build fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path.home() / ".cache" / "endmark"


def binary_path() -> Path:
    return CACHE / f"llama-server-{version('llama-cpp-python')}" / "bin" / "llama-server"


def ensure_built(log: Path | None = None) -> Path:
    """The llama-server binary, building it first if needed; raises RuntimeError on failure."""
    target = binary_path()
    if target.is_file():
        return target
    if shutil.which("cmake") is None:
        raise RuntimeError("cmake is not installed")
    ver = version("llama-cpp-python")
    work = Path(tempfile.mkdtemp(prefix="endmark-llama-"))
    out = (log or work / "build.log").open("w")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "-d", str(work), f"llama-cpp-python=={ver}"],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        subprocess.run(
            ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
             "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON"],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", "2"],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        built = next(build.glob("**/bin/llama-server"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)
        return target
    except (subprocess.CalledProcessError, StopIteration, ValueError, OSError) as exc:
        raise RuntimeError(f"building llama-server failed ({exc}); see {out.name}") from exc
    finally:
        out.close()
        shutil.rmtree(work / "build", ignore_errors=True)


if __name__ == "__main__":
    print(ensure_built(Path("/tmp/llama-server-build.log")))
