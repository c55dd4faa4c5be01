"""``fewshot doctor``: versions, compilers, and the state of the compiled ops."""

from __future__ import annotations

import typer

from .app import PANEL_SETUP, app


@app.command(
    rich_help_panel=PANEL_SETUP,
    epilog="[bold]Examples[/bold]\n\n  fewshot doctor\n\n  fewshot doctor --no-build\n\n"
    "  FEWSHOT_OPS=reference fewshot doctor",
)


def doctor(
    build: bool = typer.Option(
        True, "--build/--no-build", help="Build (or load from the cache) the compiled ops to report their state."
    ),
) -> None:
    """Report torch/CUDA versions, compilers, each compiled op's state, the ops cache and the optional extras."""
    import shutil
    import sys

    import torch

    from .. import settings
    from ..cuda import build as ops_build

    def line(label: str, value: str) -> None:
        typer.echo(f"{label:<21} {value}")  # "filtered_lrelu [cuda]" fits

    line("python", sys.version.split()[0])
    cuda_device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    line("torch", f"{torch.__version__} (built for CUDA {torch.version.cuda or 'none'}; {cuda_device})")
    line("c++", shutil.which("c++") or "not found")
    line("nvcc", ops_build._nvcc_version(settings.cuda_home()))
    line("ninja", shutil.which("ninja") or "not found")
    choice = settings.ops_choice()
    line("FEWSHOT_OPS", choice)
    line("ops cache", str(settings.ops_build_dir()))

    kinds = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for kind in kinds:
        if choice == "reference":
            state = ops_build.BuildState(kind=kind, status="reference", reason="FEWSHOT_OPS=reference")
        elif build:
            state = ops_build.get_state(kind)
        else:
            state = ops_build.peek_state(kind) or ops_build.BuildState(kind=kind, reason="not built (--no-build)")
        if state.status == "compiled":
            how = "from cache" if state.from_cache else f"built in {state.seconds:.0f} s"
            detail = f"compiled ({how}; {state.build_dir})"
        elif state.status == "failed":
            first = state.reason.splitlines()[0] if state.reason else "?"
            detail = f"failed: {first} -> reference" if choice == "auto" else f"failed: {first}"
        else:
            detail = f"reference ({state.reason})" if state.reason else "reference"
        for op in ops_build.OPS:
            line(f"{op} [{kind}]", detail)
        if state.status == "failed" and len(state.reason.splitlines()) > 1:
            typer.echo("  " + "\n  ".join(state.reason.splitlines()[1:]))
    if choice == "reference" or not settings.winograd_enabled():
        winograd = "off (" + ("FEWSHOT_OPS=reference" if choice == "reference" else "FEWSHOT_WINOGRAD=0") + ")"
    else:
        winograd = "on for wide 3x3 convolutions, with the compiled CPU ops (FEWSHOT_WINOGRAD=0 turns it off)"
    line("winograd [cpu]", winograd)
    line("matmul [cpu]", cpu_matmul_state())
    line("keep freed mem", "on for CPU runs (glibc)" if settings.keep_freed_memory() else "off (FEWSHOT_KEEP_FREED=0)")
    from ..nets.precision import native_bf16

    native, why = native_bf16()
    line("bfloat16 [cpu]", "native: train --cpu-bf16 runs the num_fp16_res blocks' direct convolutions in bfloat16" if native
         else f"not native ({why}): train --cpu-bf16 is refused")
    if not torch.cuda.is_available():
        line("ops [cuda]", "no CUDA device (check the CUDA build with `python -m fewshot.cuda.build --check-cuda`)")

    # Optional extras: what each unlocks and, when missing or broken, the exact install line.
    from ..extractors.clip import CLIP_EXTRA
    from ..extractors.facenet import FACENET_EXTRA

    line("clip", optional_module_state("open_clip", "open_clip_torch", CLIP_EXTRA, "Reg-DGM --reg-model clip"))
    line("facenet", optional_module_state(
        "facenet_pytorch", "facenet-pytorch", f"{FACENET_EXTRA} (--no-deps: its pins would replace your torch)",
        "Reg-DGM --reg-model facenet"))
    line("lpips", optional_module_state("lpips", "lpips", "pip install 'fewshot[lpips]'",
                                        "LPIPS: fewshot project, the intra-lpips and copies metrics"))
    line("tensorboard", optional_module_state("tensorboard", "tensorboard", "pip install 'fewshot[tensorboard]'",
                                              "TensorBoard events of every run (tensorboard --logdir runs)"))
    line("mp4 output", optional_module_state("imageio_ffmpeg", "imageio-ffmpeg", "pip install 'fewshot[video]'",
                                             "interpolate --out walk.mp4, timelapse --out progress.mp4"))


def optional_module_state(module: str, distribution: str, install: str, purpose: str) -> str:
    """One line on an optional package: installed (version), installed but broken (which import fails), or missing."""
    import importlib
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"not installed, needed for {purpose}: {install}"
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or "?").split(".")[0]
        return f"installed but cannot import {missing!r} (pip install {missing}); needed for {purpose}"
    except Exception as exc:  # noqa: BLE001 - a broken package is reported, never a traceback
        return f"installed but fails to import ({type(exc).__name__}: {exc}); needed for {purpose}"
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "version unknown"
    return f"installed ({distribution} {version}), for {purpose}"


def cpu_matmul_state() -> str:
    """What multiplies the Winograd GEMMs in float32 on this CPU, and why (fewshot.cuda.cpu_matmul)."""
    from .. import settings
    from ..cuda import cpu_matmul

    choice = settings.cpu_matmul_choice()
    wanted, why = cpu_matmul.auto_prefers_avx512()
    if choice == "mkl" or (choice == "auto" and not wanted):
        return f"MKL ({'FEWSHOT_CPU_MATMUL=mkl' if choice == 'mkl' else why})"
    if cpu_matmul.avx512_module() is None:
        return "MKL (the compiled AVX-512 kernel cannot run here: no AVX-512, or no compiled CPU ops)"
    return f"fewshot's AVX-512 kernel ({'FEWSHOT_CPU_MATMUL=avx512' if choice == 'avx512' else why})"
