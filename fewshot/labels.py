"""Class labels of a training set: the official ``dataset.json``, or one sub-folder per class.

* ``dataset.json`` at the root of a folder or a zip, as stylegan2-ada-pytorch's ``dataset_tool`` writes it:
  ``{"labels": [["00000/img00000000.png", 3], ...]}`` with names relative to the root (``"labels": null``
  means unlabelled). Integer class labels only; every loaded image must have one.
* ``folders``: the first path component of each image names its class; the sorted folder names are the
  class indices 0, 1, ... (an image at the root has no class and is an error). Not automatic: the official
  dataset tool itself writes images into numbered sub-folders (``00000/``) that are no classes.

Labels follow the images: they are looked up by the names the loader kept (skipped files, ``max_images``),
and x-flips (a flag on the set) keep the label of their image.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import FewshotError

LABEL_MODES = ("auto", "folders", "none")
DATASET_JSON = "dataset.json"


@dataclass(frozen=True)
class Labels:
    """Integer class labels ``[N]`` of a set's images, in the set's order."""

    indices: torch.Tensor  # int64 [N]
    num_classes: int
    source: str  # "dataset.json", "folders", "--class N"
    names: list[str] | None = None  # class names (from folders), index order

    def describe(self) -> str:
        counts = torch.bincount(self.indices, minlength=self.num_classes).tolist()
        shown = [f"{self.names[k] if self.names else k}: {n}" for k, n in enumerate(counts)]
        listing = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
        return f"labels from {self.source}: {self.num_classes} classes ({listing})"

    def record(self) -> dict:
        """What a bundle stores about the classes (``training.labels``): JSON values only."""
        out: dict = {"classes": self.num_classes, "source": self.source}
        if self.names:
            out["names"] = list(self.names)
        return out


def _read_dataset_json(source: Path) -> str | None:
    """The text of ``dataset.json`` at the root of a folder or zip, or None when there is none."""
    if source.is_dir():
        path = source / DATASET_JSON
        return path.read_text(encoding="utf-8") if path.is_file() else None
    if source.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(source) as archive:
                if DATASET_JSON in archive.namelist():
                    return archive.read(DATASET_JSON).decode("utf-8")
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
            raise FewshotError(f"cannot read {DATASET_JSON} in {source}: {exc}") from None
    return None


def _parse_dataset_json(text: str, where: str) -> dict[str, int] | None:
    try:
        entries = json.loads(text).get("labels")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise FewshotError(f"{where}: not a dataset.json of the official form ({exc})",
                           hint='expected {"labels": [["img.png", 3], ...]}') from None
    if entries is None:
        return None
    table: dict[str, int] = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise FewshotError(f"{where}: a label entry {entry!r} is not [name, class]")
        name, label = entry
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise FewshotError(f"{where}: the label of {name} is {label!r}; fewshot reads class indices (integers "
                               f">= 0), not label vectors")
        table[name.replace("\\", "/")] = label
    return table


def dataset_json_labels(source: str | Path, names: list[str]) -> Labels | None:
    """The labels ``dataset.json`` gives the images ``names`` (None without the file or with null labels)."""
    source = Path(source).expanduser()
    text = _read_dataset_json(source)
    if text is None:
        return None
    table = _parse_dataset_json(text, f"{source}/{DATASET_JSON}")
    if table is None:
        return None
    missing = [n for n in names if n not in table]
    if missing:
        raise FewshotError(f"{len(missing)} image(s) have no label in {source}/{DATASET_JSON}, e.g. "
                           f"{', '.join(missing[:3])}", hint="label every image, or pass --labels none")
    indices = torch.tensor([table[n] for n in names], dtype=torch.int64)
    return Labels(indices, int(indices.max()) + 1, DATASET_JSON)


def folder_labels(names: list[str]) -> Labels:
    """One sub-folder per class: the sorted first path components are the classes."""
    loose = [n for n in names if "/" not in n]
    if loose:
        raise FewshotError(f"--labels folders: {len(loose)} image(s) sit at the top level, outside any class "
                           f"folder, e.g. {', '.join(loose[:3])}", hint="put each image in its class's sub-folder")
    folders = sorted({n.split("/", 1)[0] for n in names})
    if len(folders) < 2:
        raise FewshotError(f"--labels folders found one class folder ({folders[0]}); a class-conditional run "
                           "needs at least two", hint="use --class N to train every image as one class")
    index = {name: k for k, name in enumerate(folders)}
    indices = torch.tensor([index[n.split("/", 1)[0]] for n in names], dtype=torch.int64)
    return Labels(indices, len(folders), "folders", folders)


def read_labels(source: str | Path, names: list[str], mode: str) -> Labels | None:
    """The labels of the images ``names`` under ``source`` as ``mode`` (auto | folders | none) reads them."""
    if mode not in LABEL_MODES:
        raise FewshotError(f"unknown labels mode {mode!r}", hint=f"use one of: {', '.join(LABEL_MODES)}")
    if mode == "none":
        return None
    if mode == "folders":
        return folder_labels(names)
    return dataset_json_labels(source, names)


def single_class(count: int, class_index: int, num_classes: int) -> Labels:
    """Every image as class ``class_index`` (``--class N``)."""
    return Labels(torch.full([count], class_index, dtype=torch.int64), num_classes, f"--class {class_index}")


def one_hot(indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 ``[N, num_classes]`` one-hot rows: the c the official networks take."""
    return torch.nn.functional.one_hot(indices, num_classes).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# A checkpoint's classes, for the generation commands and `info`


def checkpoint_class_names(path: str | Path) -> list[str] | None:
    """The class names a fewshot bundle records (a run with folder labels), else None."""
    from .checkpoint import detect_format, read_header

    if detect_format(Path(path)) != "safetensors":
        return None
    names = ((read_header(path).training or {}).get("labels") or {}).get("names")
    return list(names) if names else None


def parse_class(value: str | None, c_dim: int, names: list[str] | None = None,
                allow_all: bool = False) -> int | str | None:
    """``--class``: an index, a class name the checkpoint records, or (``allow_all``) ``all``."""
    if value is None:
        return None
    text = value.strip()
    if allow_all and text.lower() == "all":
        if c_dim == 0:
            raise FewshotError("--class all was given, but this generator is unconditional")
        return "all"
    if names and text in names:
        return names.index(text)
    try:
        return int(text)
    except ValueError:
        known = f"; its classes: {', '.join(names)}" if names else ""
        wanted = "a class index" + (", a class name" if names else "") + (" or all" if allow_all else "")
        raise FewshotError(f"--class {text!r} is not {wanted}{known}") from None


def class_folder(index: int, names: list[str] | None) -> str:
    """``class03`` (or ``class03-owls`` when the class has a name): where `sample --class all` writes it."""
    if not names:
        return f"class{index:02d}"
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in names[index])
    return f"class{index:02d}-{safe}"
