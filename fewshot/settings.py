"""The only module that reads the environment: cache folders, offline mode, ops choice.

Everything else receives these values as arguments or asks this module.
"""

from __future__ import annotations

import os
from pathlib import Path

OPS_CHOICES = ("auto", "compiled", "reference")


def home_dir() -> Path:
    """fewshot's cache root: ``$FEWSHOT_HOME``, else ``$XDG_CACHE_HOME/fewshot``, else ``~/.cache/fewshot``."""
    if os.environ.get("FEWSHOT_HOME"):
        return Path(os.environ["FEWSHOT_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fewshot"


def checkpoints_dir() -> Path:
    return home_dir() / "checkpoints"


def weights_dir() -> Path:
    return home_dir() / "weights"


def ops_build_dir() -> Path:
    return home_dir() / "ops"


def torch_home() -> Path:
    """Where torchvision/facenet keep their downloads (``$TORCH_HOME``, default ``~/.cache/torch``)."""
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """True when downloads are forbidden: ``FEWSHOT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set."""
    return _truthy(os.environ.get("FEWSHOT_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def ops_choice() -> str:
    """``FEWSHOT_OPS``: auto (compiled when it builds, else reference), compiled, or reference."""
    value = (os.environ.get("FEWSHOT_OPS") or "auto").strip().lower()
    if value not in OPS_CHOICES:
        from .errors import FewshotError

        raise FewshotError(f"FEWSHOT_OPS must be one of {', '.join(OPS_CHOICES)}, got {value!r}")
    return value


def winograd_enabled() -> bool:
    """``FEWSHOT_WINOGRAD`` (default on): 3x3 convolutions on the CPU by Winograd F(4x4, 3x3);
    ``0`` keeps torch's direct convolution everywhere (fewshot.cuda.winograd)."""
    value = os.environ.get("FEWSHOT_WINOGRAD")
    return value is None or value.strip() == "" or _truthy(value)


CPU_MATMUL_CHOICES = ("auto", "mkl", "avx512")


def cpu_matmul_choice() -> str:
    """``FEWSHOT_CPU_MATMUL``: what multiplies the Winograd convolutions' float32 matrices on the CPU: auto (the
    compiled AVX-512 kernel where MKL would run narrower vectors than the CPU has, fewshot.cuda.cpu_matmul), mkl,
    avx512 (wherever the CPU has AVX-512)."""
    value = (os.environ.get("FEWSHOT_CPU_MATMUL") or "auto").strip().lower()
    if value not in CPU_MATMUL_CHOICES:
        from .errors import FewshotError

        raise FewshotError(f"FEWSHOT_CPU_MATMUL must be one of {', '.join(CPU_MATMUL_CHOICES)}, got {value!r}")
    return value


def keep_freed_memory() -> bool:
    """``FEWSHOT_KEEP_FREED`` (default on): CPU runs keep freed memory for reuse (fewshot.host_memory)."""
    value = os.environ.get("FEWSHOT_KEEP_FREED")
    return value is None or value.strip() == "" or _truthy(value)


def onednn_max_isa() -> str:
    """``ONEDNN_MAX_CPU_ISA`` as oneDNN reads it (upper case; "" when unset: every ISA the CPU has)."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or "").strip().upper()


def tensorboard_events() -> bool:
    """``FEWSHOT_TENSORBOARD`` (default on): runs write TensorBoard events when the package is installed
    (fewshot.watch.hooks); ``0`` turns them off."""
    value = os.environ.get("FEWSHOT_TENSORBOARD")
    return value is None or value.strip() == "" or _truthy(value)


# --- Hub and frozen-network weights (fewshot.hub, fewshot.weights) ---------------------------------


def weights_env_var(name: str) -> str:
    """The variable that points at a weights file: ``inception-v3-fid`` -> ``FEWSHOT_WEIGHTS_INCEPTION_V3_FID``."""
    return "FEWSHOT_WEIGHTS_" + "".join(ch if ch.isalnum() else "_" for ch in name.upper())


def weights_env_path(name: str) -> Path | None:
    """The file named by ``FEWSHOT_WEIGHTS_<NAME>``, or None when unset."""
    value = os.environ.get(weights_env_var(name))
    return Path(value).expanduser() if value else None


def checkpoint_registry_override() -> Path | None:
    """``FEWSHOT_CHECKPOINT_REGISTRY``: a TOML file whose entries add to / replace the built-in checkpoint names."""
    value = os.environ.get("FEWSHOT_CHECKPOINT_REGISTRY")
    return Path(value).expanduser() if value else None


def weights_registry_override() -> Path | None:
    """``FEWSHOT_WEIGHTS_REGISTRY``: a TOML file whose entries add to / replace the built-in weights names."""
    value = os.environ.get("FEWSHOT_WEIGHTS_REGISTRY")
    return Path(value).expanduser() if value else None


def hf_endpoint() -> str | None:
    """``HF_ENDPOINT`` (read per call, so a changed value is honoured after huggingface_hub was imported)."""
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, following huggingface_hub's own rules (HF_HUB_CACHE, HF_HOME, XDG)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "huggingface" / "hub"


def clip_cache_dir() -> Path:
    """Where OpenAI's ``clip`` and older open_clip put the OpenAI ``.pt`` files (``~/.cache/clip``)."""
    return Path.home() / ".cache" / "clip"


def distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as set by torchrun; (0, 1, 0) for a single process."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def cuda_home() -> Path | None:
    """The CUDA toolkit for building the CUDA ops: ``$CUDA_HOME``/``$CUDA_PATH``, else /usr/local/cuda if present."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    default = Path("/usr/local/cuda")
    return default if default.is_dir() else None
