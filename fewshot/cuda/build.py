"""Just-in-time build of the compiled ops, its cache, and the state ``fewshot doctor`` reports.

Two extension modules are built from the sources in this folder with
``torch.utils.cpp_extension.load`` (ninja): ``cpu`` (bindings.cpp + bias_act.cpp + upfirdn2d.cpp + winograd.cpp +
cpu_gemm.cpp + filtered_lrelu.cpp) and ``cuda`` (bindings.cpp + bias_act.cu + upfirdn2d.cu + filtered_lrelu.cu). Each lands in
``ops_build_dir()/<kind>-<hash>`` where the hash covers the sources, the flags and the torch and
Python versions, so a cached build is reused across processes and an edit builds afresh. A
finished build leaves a ``built.ok`` marker; later processes import the ``.so`` directly, without
ninja or a compiler.

A build is tried at most once per process and kind. When it fails, ``FEWSHOT_OPS=auto`` warns
once and the dispatcher uses the reference ops; ``FEWSHOT_OPS=compiled`` raises a FewshotError.

``python -m fewshot.cuda.build --check-cuda`` compiles and links the CUDA module for sm_80 and
sm_90 in its own folder (no GPU needed) and exits non-zero when that fails.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .. import settings
from ..errors import FewshotError

SOURCE_DIR = Path(__file__).resolve().parent
HEADERS = ("ops_common.h", "ops_checks.h", "filtered_lrelu.h")
SOURCES = {
    "cpu": ("bindings.cpp", "bias_act.cpp", "upfirdn2d.cpp", "winograd.cpp", "cpu_gemm.cpp", "filtered_lrelu.cpp"),
    "cuda": ("bindings.cpp", "bias_act.cu", "upfirdn2d.cu", "filtered_lrelu.cu"),
}
OPS = ("bias_act", "upfirdn2d", "filtered_lrelu")
# -fno-trapping-math lets GCC turn the activation selects into vector blends (no FP-exception semantics needed).
CPU_CFLAGS = ["-O3", "-fno-trapping-math", "-fopenmp"]
CPU_LDFLAGS = ["-fopenmp"]
CHECK_ARCHS = ("80", "90")
MARKER = "built.ok"


@dataclass
class BuildState:
    """What happened to one extension kind in this process."""

    kind: str
    status: str = "not built"  # not built | compiled | failed
    reason: str = ""
    build_dir: Path | None = None
    seconds: float = 0.0
    from_cache: bool = False
    module: ModuleType | None = field(default=None, repr=False)


_states: dict[str, BuildState] = {}
_lock = threading.Lock()
_warned = False


def _cuda_arch_flags(archs: tuple[str, ...]) -> list[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def _flags(kind: str, archs: tuple[str, ...] = ()) -> dict[str, list[str]]:
    if kind == "cpu":
        return {"extra_cflags": list(CPU_CFLAGS), "extra_ldflags": list(CPU_LDFLAGS)}
    return {
        "extra_cflags": ["-O3", "-DFEWSHOT_CUDA"],
        # No --use_fast_math: the kernels must agree with the reference, not approximate expf/tanhf.
        "extra_cuda_cflags": ["-O3", "-DFEWSHOT_CUDA", *_cuda_arch_flags(archs)],
    }


def source_hash(kind: str, archs: tuple[str, ...] = ()) -> str:
    """Hash of everything that changes the built module: sources, headers, flags, torch, Python."""
    import torch

    digest = hashlib.sha256()
    for name in (*SOURCES[kind], *HEADERS):
        digest.update(name.encode())
        digest.update((SOURCE_DIR / name).read_bytes())
    digest.update(repr((kind, _flags(kind, archs), torch.__version__, torch.version.cuda, sys.version)).encode())
    return digest.hexdigest()[:16]


def module_name(kind: str, digest: str) -> str:
    # A distinct name per hash: two builds can then live in one process without clashing.
    return f"fewshot_ops_{kind}_{digest}"


def _import_built(name: str, build_dir: Path) -> ModuleType:
    path = build_dir / f"{name}.so"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpp_extension():  # -> module torch.utils.cpp_extension
    """Import torch's extension builder without its 'No CUDA runtime is found' warning on CPU-only machines."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp
    finally:
        log.setLevel(level)
    return cpp


def _prepare_cuda_home() -> None:
    """Point torch at a CUDA toolkit with headers; torch guesses /usr/local when nvcc is only on PATH."""
    cpp = _cpp_extension()
    current = Path(cpp.CUDA_HOME) if cpp.CUDA_HOME else None
    if current is not None and (current / "include" / "cuda_runtime.h").is_file():
        return
    home = settings.cuda_home()
    if home is None or not (home / "include" / "cuda_runtime.h").is_file():
        raise FewshotError(
            "no CUDA toolkit found (nvcc and cuda_runtime.h)", hint="install the CUDA toolkit or set CUDA_HOME"
        )
    cpp.CUDA_HOME = str(home)


def _short_reason(exc: BaseException, max_lines: int = 12) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    picked = (errors or lines)[:max_lines]
    return "\n".join(picked)


def build(kind: str, build_dir: Path | None = None, archs: tuple[str, ...] = (), verbose: bool = False) -> BuildState:
    """Build (or import from the cache) one extension kind; never raises for a failed build."""
    state = BuildState(kind=kind)
    start = time.perf_counter()
    try:
        digest = source_hash(kind, archs)
        name = module_name(kind, digest)
        state.build_dir = build_dir or settings.ops_build_dir() / f"{kind}-{digest}"
        marker = state.build_dir / MARKER
        if marker.is_file() and (state.build_dir / f"{name}.so").is_file():
            state.module = _import_built(name, state.build_dir)
            state.from_cache = True
        else:
            # Imported only to build: importing it guesses CUDA_HOME and logs a warning without a GPU.
            cpp = _cpp_extension()
            if kind == "cuda":
                _prepare_cuda_home()
            if shutil.which("ninja") is None and not cpp.is_ninja_available():
                raise FewshotError("ninja not found", hint="pip install ninja")
            state.build_dir.mkdir(parents=True, exist_ok=True)
            state.module = cpp.load(
                name=name,
                sources=[str(SOURCE_DIR / s) for s in SOURCES[kind]],
                extra_include_paths=[str(SOURCE_DIR)],
                build_directory=str(state.build_dir),
                with_cuda=kind == "cuda",
                verbose=verbose,
                **_flags(kind, archs),
            )
            marker.write_text(name + "\n")
        state.status = "compiled"
    except (Exception, SystemExit) as exc:  # a compiler/linker/import failure of any kind
        state.status = "failed"
        state.reason = _short_reason(exc)
        state.module = None
    state.seconds = time.perf_counter() - start
    return state


def _device_archs() -> tuple[str, ...]:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return (f"{major}{minor}",)


def get_state(kind: str) -> BuildState:
    """The build state of ``kind`` in this process, building it on first use."""
    with _lock:
        if kind not in _states:
            archs = _device_archs() if kind == "cuda" else ()
            _states[kind] = build(kind, archs=archs)
        return _states[kind]


def peek_state(kind: str) -> BuildState | None:
    """The state if a build was already tried in this process, without building."""
    return _states.get(kind)


def compiled_module(device_type: str) -> ModuleType | None:
    """The compiled module for tensors on ``device_type``, or None for the reference ops.

    Honours ``FEWSHOT_OPS``: ``reference`` never builds; ``auto`` falls back with one warning per
    process; ``compiled`` turns an unavailable build into a FewshotError.
    """
    global _warned
    choice = settings.ops_choice()
    if choice == "reference":
        return None
    if device_type not in SOURCES:
        if choice == "compiled":
            raise FewshotError(f"no compiled ops for device type {device_type!r}", hint="set FEWSHOT_OPS=auto")
        return None
    state = get_state(device_type)
    if state.module is not None:
        return state.module
    if choice == "compiled":
        raise FewshotError(
            f"the compiled {device_type} ops failed to build: {state.reason.splitlines()[0] if state.reason else '?'}",
            hint="run `fewshot doctor` for details, or set FEWSHOT_OPS=reference",
        )
    if not _warned:
        _warned = True
        warnings.warn(
            f"fewshot: compiled {device_type} ops unavailable ({state.reason.splitlines()[0] if state.reason else '?'}); "
            "using the slower reference ops. `fewshot doctor` shows why; FEWSHOT_OPS=reference silences this.",
            RuntimeWarning,
            stacklevel=3,
        )
    return None


def _reset_for_tests() -> None:
    """Forget builds and the warning (tests only)."""
    global _warned
    with _lock:
        _states.clear()
        _warned = False


def _nvcc_version(home: Path | None) -> str:
    nvcc = home / "bin" / "nvcc" if home else None
    exe = str(nvcc) if nvcc and nvcc.is_file() else shutil.which("nvcc")
    if not exe:
        return "not found"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unusable ({exc})"
    release = [line for line in out.splitlines() if "release" in line]
    return f"{exe}: {release[-1].strip() if release else out.strip()}"


def check_cuda(fresh: bool = False, verbose: bool = False) -> int:
    """Compile and link the CUDA module for sm_80 and sm_90 without a GPU; 0 on success."""
    import torch

    digest = source_hash("cuda", CHECK_ARCHS)
    build_dir = settings.ops_build_dir() / f"cuda-check-{digest}"
    if fresh and build_dir.exists():
        shutil.rmtree(build_dir)
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); nvcc {_nvcc_version(settings.cuda_home())}")
    print(f"building the CUDA ops for {', '.join('sm_' + a for a in CHECK_ARCHS)} in {build_dir}")
    state = build("cuda", build_dir=build_dir, archs=CHECK_ARCHS, verbose=verbose)
    if state.status == "compiled":
        cached = " (cached build)" if state.from_cache else ""
        print(f"OK: CUDA ops built, linked and imported in {state.seconds:.1f} s{cached}: {', '.join(OPS)}")
        return 0
    print(f"FAILED after {state.seconds:.1f} s:\n{state.reason}", file=sys.stderr)
    return 1


def check_cpu(verbose: bool = False) -> int:
    """Build (or load from the cache) the CPU module and report; 0 on success."""
    state = build("cpu", verbose=verbose)
    if state.status == "compiled":
        how = "loaded from cache" if state.from_cache else "built"
        print(f"OK: CPU ops {how} in {state.seconds:.1f} s: {state.build_dir}")
        return 0
    print(f"FAILED after {state.seconds:.1f} s:\n{state.reason}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot.cuda.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check-cuda", action="store_true", help="build and link the CUDA ops for sm_80 and sm_90")
    parser.add_argument("--check-cpu", action="store_true", help="build the CPU ops (or load them from the cache)")
    parser.add_argument("--fresh", action="store_true", help="with --check-cuda: delete its build folder first")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)
    if not (args.check_cuda or args.check_cpu):
        parser.error("choose --check-cuda and/or --check-cpu")
    code = 0
    try:
        if args.check_cpu:
            code |= check_cpu(verbose=args.verbose)
        if args.check_cuda:
            code |= check_cuda(fresh=args.fresh, verbose=args.verbose)
    except FewshotError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
