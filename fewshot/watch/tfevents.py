"""TensorBoard events of a run, through ``torch.utils.tensorboard`` (the optional ``tensorboard`` package).

Scalars go under TensorBoard-style groups (``Loss/loss_G``, ``Augment/aug_p``, ``Metrics/fid``, ...) at the step
``cur_nimg`` (images shown: exact, and never the same for two ticks, unlike kimg in a short run); the
fixed-latent grid goes in as an image each time the run writes it. A resumed run purges the events past its
snapshot, so the curves continue without a fork.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

TENSORBOARD_INSTALL = "pip install 'fewshot[tensorboard]'"
# Tick-record keys that are not curves: the tick index and its position are the step, time is the wall time.
_NOT_SCALARS = {"tick", "kimg", "time"}
IMAGE_WIDTH = 1024  # px: wider grids go to TensorBoard scaled down (its image tab shows them smaller anyway)
_GROUPS = (("loss_", "Loss"), ("D_", "D"), ("aug_", "Augment"), ("lr_", "Progress"), ("sec_", "Timing"),
           ("eta_", "Timing"), ("mem_", "Resources"), ("r1_", "Reg"), ("pl_", "Reg"))


def tensorboard_missing() -> str | None:
    """None when the tensorboard package is there, else the line that says what it would give."""
    if importlib.util.find_spec("tensorboard") is not None:
        return None
    return f"tensorboard: not installed, so no TensorBoard events are written ({TENSORBOARD_INSTALL})"


def scalar_tag(key: str) -> str:
    """A tick-record key's TensorBoard tag: its group, then the key (``loss_G`` -> ``Loss/loss_G``)."""
    for prefix, group in _GROUPS:
        if key.startswith(prefix):
            return f"{group}/{key}"
    return f"Other/{key}"


def metric_scalars(result: dict[str, Any], prefix: str = "Metrics") -> dict[str, float]:
    """The numbers of a metrics result, nested ones by their path (``copies`` -> ``Metrics/copies/fraction``)."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}/{key}"] = float(value)
        elif isinstance(value, dict):
            out.update(metric_scalars(value, f"{prefix}/{key}"))
    return out


class EventWriter:
    """One run's TensorBoard writer (its event files in the run folder)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # flush_secs: the background flush; each tick flushes too, so `tensorboard` sees every tick at once.
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)

    def tick(self, record: dict[str, Any], step: int) -> None:
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self._writer.add_scalar(scalar_tag(key), value, global_step=step)
        self._writer.flush()

    def metrics(self, result: dict[str, Any], step: int) -> None:
        for tag, value in metric_scalars(result).items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def image(self, path: Path, step: int, tag: str = "Samples/fakes") -> None:
        """A PNG the run wrote (the grid): its bytes as they are on disk when at most ``IMAGE_WIDTH`` px wide,
        else scaled down to that. (tensorboard's record checksum is pure Python without TensorFlow, ~3 MB/s: a
        6 MB 2048-px grid took 2 s to write, its 1024-px copy a quarter of that.)"""
        import io

        from PIL import Image

        with Image.open(path) as picture:  # the header only, unless the image must be scaled
            width, height, channels = picture.width, picture.height, len(picture.getbands())
            if width > IMAGE_WIDTH:
                height = max(1, round(height * IMAGE_WIDTH / width))
                width = IMAGE_WIDTH
                buffer = io.BytesIO()
                picture.resize((width, height), Image.Resampling.BILINEAR).save(buffer, format="PNG", compress_level=1)
                data = buffer.getvalue()
            else:
                data = path.read_bytes()
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
