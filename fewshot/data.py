"""Training images: discovery, decoding, checks and an in-memory uint8 cache.

A source is a folder (searched recursively) or a ``.zip``. Every file is decoded once into an
RGB uint8 tensor ``[N, 3, R, R]``; 25-1000 images fit in memory easily (1000 x 256 px = 197 MB).

Decisions a user can rely on (also printed by :meth:`ImageSet.describe`):

* Order is the sorted list of relative paths (POSIX separators), so runs are reproducible
  whatever the file system returns.
* EXIF orientation is applied before anything else.
* Transparency (RGBA, LA, palette with a transparent colour) is composited on **white**: most
  transparent images are cut-outs or logos whose hidden pixels are arbitrary (often black), and
  white is what every image viewer shows them on.
* Grayscale, CMYK, palette and 16-bit / float images are converted to 8-bit RGB; 16-bit values
  are scaled by 255/65535, not clipped. ICC profiles are not applied.
* ``crop="center"`` cuts the largest centred square; ``crop="pad"`` keeps the whole picture and
  pads the short side with **black** bars, as the official ``dataset_tool --transform=center-crop-wide``
  does. Then an antialiased Lanczos resize to the resolution.
* ``mirror`` is only a flag: the images are stored unflipped and :func:`sample_batch` flips half of
  each batch, so the cache is not doubled.
* A file that cannot be decoded (corrupt, truncated, not an image despite its suffix, too large) is
  skipped with its reason; files with other suffixes and hidden files are ignored and counted.
* Exact duplicates (identical decoded pixels at source size) are reported, not removed.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import math
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import FewshotError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
CROP_MODES = ("center", "pad")
# A larger file is skipped unread: it is no training image (the decoder refuses over ~179M pixels anyway), and
# a zip member's declared size is what reading it would allocate (a zip bomb declares gigabytes).
MAX_FILE_BYTES = 1 << 30
# What zipfile raises on a damaged archive or member, beyond BadZipFile: unsupported versions and methods
# (NotImplementedError, a RuntimeError), bad names (UnicodeDecodeError, a ValueError), corrupt streams.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError, zlib.error, lzma.LZMAError)


from .imageset import DataSummary, ImageSet  # noqa: E402 - shared with the built-in data sets

# ---------------------------------------------------------------------------------------------
# Discovery


def _is_hidden(relpath: str) -> bool:
    parts = relpath.split("/")
    return any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX"


def _list_folder(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    images, ignored = [], []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if _is_hidden(rel):
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else ignored).append((rel, path))
    return sorted(images), sorted(rel for rel, _ in ignored)


def _iter_sources(source: Path) -> tuple[list[str], Iterator[tuple[str, bytes | Exception]], list[str], str]:
    """(relative names, iterator of (name, file bytes or the error reading them), ignored, description)."""
    if source.is_dir():
        entries, ignored = _list_folder(source)

        def read_folder() -> Iterator[tuple[str, bytes | Exception]]:
            for rel, path in entries:
                try:
                    if path.stat().st_size > MAX_FILE_BYTES:
                        yield rel, ValueError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
                        continue
                    yield rel, path.read_bytes()
                except OSError as exc:
                    yield rel, exc

        return [rel for rel, _ in entries], read_folder(), ignored, f"folder {source}"

    if source.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(source)
        except _ZIP_ERRORS as exc:
            raise FewshotError(f"cannot open {source} as a zip archive: {exc}") from None
        # A member without a name (a damaged archive) is no file to read; ZipInfo.is_dir fails on it.
        members = [m for m in archive.infolist() if m.filename and not m.is_dir() and not _is_hidden(m.filename)]
        wanted = sorted(m.filename for m in members if Path(m.filename).suffix.lower() in IMAGE_SUFFIXES)
        # zipfile reads a member's claimed compressed size in one call: a claim beyond the archive is damage.
        archive_bytes = source.stat().st_size
        sizes = {m.filename: (m.file_size, m.compress_size) for m in members}
        ignored = sorted(m.filename for m in members if Path(m.filename).suffix.lower() not in IMAGE_SUFFIXES)

        def read_zip() -> Iterator[tuple[str, bytes | Exception]]:
            with archive:
                for name in wanted:
                    size, compressed = sizes[name]
                    if size > MAX_FILE_BYTES:
                        yield name, ValueError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
                        continue
                    if compressed > archive_bytes:
                        yield name, zipfile.BadZipFile("damaged entry: claims more bytes than the archive holds")
                        continue
                    try:
                        yield name, archive.read(name)
                    except _ZIP_ERRORS as exc:
                        yield name, exc

        return wanted, read_zip(), ignored, f"zip {source}"

    raise FewshotError(
        f"{source} is neither a folder nor a .zip",
        hint="pass a folder of images (searched recursively) or a zip archive of them",
    )


# ---------------------------------------------------------------------------------------------
# Decoding


def _to_rgb(img, converted: dict[str, int]):  # PIL.Image -> PIL.Image in mode RGB
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    converted[mode] = converted.get(mode, 0) + 1
    if mode == "P":
        # A palette may carry a transparent colour; go through RGBA so it is composited like alpha.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0  # float images are usually in [0, 1]
        elif mode != "F" and values.size and values.max() > 255:
            values = values * (255.0 / 65535.0)  # 16-bit: scale, do not clip
        values = np.nan_to_num(values).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(values, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, I;16 variants handled above


def _square(img, crop: str):
    from PIL import Image

    w, h = img.size
    if w == h:
        return img
    if crop == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return img.crop((left, top, left + side, top + side))
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def _decode(data: bytes, resolution: int, crop: str, converted: dict[str, int]) -> tuple[np.ndarray, tuple[int, int], str]:
    """File bytes -> (uint8 [R, R, 3], source (w, h), hash of the source pixels). Raises on bad data."""
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        # A decompression-bomb warning becomes an error so such a file is skipped, not decoded.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()  # force the full decode now: truncated files fail here
            img = ImageOps.exif_transpose(opened)
            img = _to_rgb(img, converted)
    source_size = img.size
    if min(source_size) < 1:
        raise ValueError("empty image")
    pixels_hash = hashlib.sha256(img.tobytes() + repr(source_size).encode()).hexdigest()
    img = _square(img, crop)
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy(), source_size, pixels_hash


def _reason(exc: BaseException) -> str:
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (unknown or corrupt format)"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "too many pixels (decompression-bomb guard)"
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower():
        return f"truncated file ({text})"
    return f"cannot decode: {text}"


def _check_arguments(source: str | Path, resolution: int, crop: str) -> Path:
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise FewshotError(f"resolution must be a positive integer, got {resolution!r}")
    if crop not in CROP_MODES:
        raise FewshotError(f"unknown crop mode {crop!r}", hint=f"use one of: {', '.join(CROP_MODES)}")
    source = Path(source).expanduser()
    if not source.exists():
        raise FewshotError(f"data source {source} does not exist")
    return source


def _decoded(contents: Iterator[tuple[str, bytes | Exception]], summary: DataSummary, bar: Any) -> Iterator[
        tuple[str, np.ndarray]]:
    """(name, uint8 [R, R, 3]) for each usable file, in order; ``summary`` collects the count, the size range,
    what was skipped and the duplicate groups (complete once the iteration ends or is closed)."""
    by_hash: dict[str, list[str]] = {}
    try:
        for name, content in contents:
            bar.update(1)
            if isinstance(content, Exception):
                summary.skipped.append((name, f"cannot read: {content}"))
                continue
            try:
                array, size, pixels_hash = _decode(content, summary.resolution, summary.crop, summary.converted)
            except Exception as exc:  # noqa: BLE001 - any decoder failure means "skip this file"
                summary.skipped.append((name, _reason(exc)))
                continue
            summary.count += 1
            by_hash.setdefault(pixels_hash, []).append(name)
            area = size[0] * size[1]
            if summary.min_size is None or area < summary.min_size[0] * summary.min_size[1]:
                summary.min_size = size
            if summary.max_size is None or area > summary.max_size[0] * summary.max_size[1]:
                summary.max_size = size
            kept_side = min(size) if summary.crop == "center" else max(size)
            summary.upscaled += kept_side < summary.resolution
            yield name, array
    finally:
        summary.duplicates = [group for group in by_hash.values() if len(group) > 1]


def _shown(name: str) -> str:
    """A file name as an error line can show it: control characters (a zip member may name a line break)
    escaped, so the message stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)


def _require_two(summary: DataSummary, candidates: int) -> None:
    if summary.count >= 2:
        return
    found = f"found {summary.count} usable image(s) among {candidates} candidate file(s) in {summary.source}"
    if summary.skipped:
        found += "; skipped: " + "; ".join(f"{_shown(n)}: {_shown(r)}" for n, r in summary.skipped[:5])
    raise FewshotError(
        f"need at least 2 usable images, {found}",
        hint=f"supported suffixes: {', '.join(IMAGE_SUFFIXES)} (any letter case)",
    )


def _decoding_bar(total: int, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="decoding images", unit="img", disable=None if progress else True, leave=False)


def load_images(
    source: str | Path,
    resolution: int,
    crop: str = "center",
    mirror: bool = False,
    max_images: int | None = None,
    progress: bool = True,
) -> ImageSet:
    """Decode every image under ``source`` (folder or zip) to RGB uint8 ``[N, 3, R, R]``.

    Bad files are skipped and listed in ``summary.skipped``; fewer than two usable images is a
    :class:`FewshotError`. See the module docstring for the conversion rules.
    """
    if max_images is not None and max_images < 1:
        raise FewshotError(f"max_images must be at least 1, got {max_images}")
    source = _check_arguments(source, resolution, crop)
    names, contents, ignored, description = _iter_sources(source)
    summary = DataSummary(source=description, resolution=resolution, crop=crop, ignored=ignored)
    capacity = len(names) if max_images is None else min(len(names), max_images)
    _check_memory(capacity, resolution, description)
    # Decoded straight into the final [N, 3, R, R] layout: one copy of the set in memory, not two.
    buffer = np.empty((max(capacity, 1), 3, resolution, resolution), dtype=np.uint8)
    kept: list[str] = []
    bar = _decoding_bar(len(names), progress)
    decoded = _decoded(contents, summary, bar)
    try:
        for name, array in decoded:
            buffer[len(kept)] = array.transpose(2, 0, 1)
            kept.append(name)
            if len(kept) == capacity:
                break
    finally:
        decoded.close()
        bar.close()
    _require_two(summary, len(names))
    images = torch.from_numpy(buffer[: len(kept)])  # slots of skipped files were never touched: not resident
    return ImageSet(images=images, names=kept, summary=summary, mirror=bool(mirror))


class ImageStream:
    """The images of a source decoded a chunk at a time, for sets too large to hold at once (a metrics
    reference set such as the full 70k FFHQ). Same files, order and conversions as :func:`load_images`."""

    def __init__(self, source: str | Path, resolution: int, crop: str = "center") -> None:
        self.source = _check_arguments(source, resolution, crop)
        self.resolution, self.crop = resolution, crop
        names, _, ignored, self.description = _iter_sources(self.source)
        self.candidates = len(names)
        self.summary = DataSummary(source=self.description, resolution=resolution, crop=crop, ignored=ignored)

    def listing_key(self) -> str:
        """sha256 over what identifies the files without decoding them (a cache key): relative names with
        their sizes and modification times (folder) or CRCs (zip), and the decoding settings."""
        digest = hashlib.sha256(f"fewshot.ImageStream/1|{self.resolution}|{self.crop}".encode())
        if self.source.is_dir():
            entries, _ = _list_folder(self.source)
            for rel, path in entries:
                stat = path.stat()
                digest.update(f"|{rel}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        else:
            with zipfile.ZipFile(self.source) as archive:
                for info in sorted(archive.infolist(), key=lambda m: m.filename):
                    if info.filename and not info.is_dir() and not _is_hidden(info.filename):
                        digest.update(f"|{info.filename}|{info.file_size}|{info.CRC}".encode())
        return digest.hexdigest()

    def chunks(self, size: int, progress: bool = False) -> Iterator[torch.Tensor]:
        """uint8 ``[<=size, 3, R, R]`` batches of every usable image; ``summary`` describes the pass once it
        ends (fewer than two usable images is a FewshotError then)."""
        names, contents, ignored, _ = _iter_sources(self.source)
        self.summary = DataSummary(source=self.description, resolution=self.resolution, crop=self.crop,
                                   ignored=ignored)
        bar = _decoding_bar(len(names), progress)
        decoded = _decoded(contents, self.summary, bar)
        batch: list[np.ndarray] = []
        try:
            for _, array in decoded:
                batch.append(array.transpose(2, 0, 1))
                if len(batch) == size:
                    yield torch.from_numpy(np.stack(batch))
                    batch = []
            if batch:
                yield torch.from_numpy(np.stack(batch))
        finally:
            decoded.close()
            bar.close()
        _require_two(self.summary, len(names))


def _check_memory(count: int, resolution: int, description: str) -> None:
    """Refuse up front a set that cannot fit in memory, rather than decode for minutes and be killed."""
    from .host_memory import available_bytes

    needed = count * 3 * resolution * resolution
    available = available_bytes()
    if available is None or needed <= 0.8 * available:
        return
    fits = max(int(0.8 * available // (3 * resolution * resolution)), 0)
    raise FewshotError(
        f"{count} images at {resolution}x{resolution} need {needed / 2**30:.1f} GiB in memory, more than the "
        f"{available / 2**30:.1f} GiB available, from {description}",
        hint=f"use at most ~{fits} of them (training: --set max_images={fits}) or a smaller resolution",
    )


def infer_resolution(source: str | Path, crop: str = "center", sample: int = 256) -> tuple[int, str]:
    """The network resolution a from-scratch run should use for ``source``, and a one-line reason.

    The largest power of two not above the median square side (the short side for ``crop="center"``,
    the long side for ``"pad"``), between 8 and 1024: images are never upscaled by more than the
    rounding, and a set of 256 x 256 images gives 256, as the official dataset tool would keep it.
    Only headers are read, from at most ``sample`` files spread evenly over the sorted listing.
    """
    from PIL import Image

    source = Path(source).expanduser()
    if not source.exists():
        raise FewshotError(f"data source {source} does not exist")
    names, contents, _, description = _iter_sources(source)
    stride = max(1, math.ceil(len(names) / sample))
    wanted = set(names[::stride])
    sides: list[int] = []
    unreadable: list[str] = []
    for name, content in contents:
        if name not in wanted:
            continue
        if isinstance(content, Exception):
            unreadable.append(f"{_shown(name)}: {_shown(str(content))}")
            continue
        try:
            with Image.open(io.BytesIO(content)) as opened:
                w, h = opened.size
        except Exception:  # noqa: BLE001 - load_images reports each unreadable file; here only when none is left
            unreadable.append(f"{_shown(name)}: not a readable image (unknown or corrupt format)")
            continue
        if min(w, h) >= 1:
            sides.append(min(w, h) if crop == "center" else max(w, h))
    if not sides:
        found = f"no image files in {description}" if not names else (
            f"no readable images among {len(names)} image file(s) in {description}; skipped: "
            + "; ".join(unreadable[:5]) + ("; ..." if len(unreadable) > 5 else ""))
        raise FewshotError(f"{found} (so no resolution to derive from them)",
                           hint=f"supported suffixes: {', '.join(IMAGE_SUFFIXES)} (any letter case); "
                                "pass --resolution to choose the size yourself")
    median = sorted(sides)[len(sides) // 2]
    resolution = min(1024, max(8, 1 << (median.bit_length() - 1)))
    side = "short" if crop == "center" else "long"
    return resolution, f"resolution {resolution} from the data (median {side} side {median} px over {len(sides)} images)"


def load_image(path: str | Path, resolution: int, crop: str = "center") -> np.ndarray:
    """One image file as a training image of ``resolution`` is made (same conversion, crop and resize):
    uint8 ``[R, R, 3]``. A file that cannot be read or decoded is one error with the reason."""
    _check_arguments(path, resolution, crop)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FewshotError(f"{path} is not a file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
        array, _, _ = _decode(path.read_bytes(), resolution, crop, {})
    except Exception as exc:  # noqa: BLE001 - every decoder failure is the file's, said in one line
        raise FewshotError(f"cannot read {path}: {_reason(exc)}") from None
    return array


# ---------------------------------------------------------------------------------------------
# Hashing, sampling, the built-in demo set


def content_hash(images: torch.Tensor | ImageSet) -> str:
    """sha256 over the uint8 pixels and the shape: a cache key for metrics statistics and priors."""
    if isinstance(images, ImageSet):
        images = images.images
    if images.dtype != torch.uint8:
        raise FewshotError(f"content_hash expects uint8 images, got {images.dtype}")
    digest = hashlib.sha256(repr(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def sample_batch(
    imageset: ImageSet,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``batch_size`` images with replacement as float in [-1, 1], x-flipping half when mirror is set.

    Only ``generator`` supplies randomness (indices, then flips), so saving and restoring its state
    resumes the exact sequence of batches.
    """
    return sample_indexed_batch(imageset, batch_size, generator, device)[0]


def sample_indexed_batch(
    imageset: ImageSet,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_batch` and the index of each drawn image (to look up its label); same draws."""
    if batch_size < 1:
        raise FewshotError(f"batch size must be at least 1, got {batch_size}")
    count = len(imageset)
    indices = torch.randint(count, (batch_size,), generator=generator, device=generator.device)
    batch = imageset.images[indices.to(imageset.images.device)]
    if device is not None:
        batch = batch.to(device)
    batch = batch.to(torch.float32) / 127.5 - 1.0
    if imageset.mirror:
        flip = torch.rand(batch_size, generator=generator, device=generator.device) < 0.5
        flip = flip.to(batch.device).view(-1, 1, 1, 1)
        batch = torch.where(flip, batch.flip(3), batch)
    return batch, indices.cpu()


# The built-in procedural data sets (demo, demo:rings) live in fewshot.demo_data; these names stay here.
from .demo_data import DEMO_DOMAINS, DEMO_SOURCE, demo_domain, demo_images, is_builtin_source  # noqa: E402, F401
