"""Which class labels a run trains with: the data's, ``--class N``, or none, checked against the networks.

| networks                    | labelled data                       | unlabelled data                        |
|-----------------------------|-------------------------------------|----------------------------------------|
| from scratch                | conditional nets, c_dim = classes   | unconditional (as before)              |
| unconditional base          | labels ignored, with a note         | unconditional (as before)              |
| class-conditional base      | conditional fine-tune (as official) | refused: --class N or labels           |
| DISP (instance priors)      | labels ignored, with a note         | DISP; a conditional base is refused    |

G and D see the labels as in stylegan2-ada-pytorch: one-hot c; D gets the real image's label for a real and the
generated image's label for a fake; the fakes' labels are drawn from the data's label distribution (the label
of a random training image), one per fake, from the run's data generator (so a snapshot resumes them exactly).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import FewshotError
from ..labels import Labels, one_hot, read_labels, single_class

LABELLED_HINT = ("pass --class N to train every image as class N, or label the images: a dataset.json "
                 "(the official dataset tool's) or --labels folders (one sub-folder per class)")


def data_labels(cfg: TrainConfig, images: Any) -> Labels | None:
    """The labels the data carries under ``cfg.labels`` (the built-in demo sets have none)."""
    from ..data import is_builtin_source

    if is_builtin_source(cfg.data):
        if cfg.labels == "folders":
            raise FewshotError("--labels folders needs an image folder or zip; the built-in sets have no classes")
        return None
    return read_labels(cfg.data, images.names, cfg.labels)


def conditioning(cfg: TrainConfig, labels: Labels | None, count: int, c_dim: int | None,
                 note: Any) -> Labels | None:
    """The labels the run trains with (None: unconditional, or DISP). ``c_dim`` is the base's (or the
    snapshot's) generator's, None from scratch; ``count`` the number of images."""
    if cfg.disp:
        if cfg.class_index is not None:
            raise FewshotError("--class picks a class of a class-conditional base; DISP conditions on instance "
                               "priors instead", hint="drop --class, or train without DISP")
        if labels is not None:
            note(f"note: the {labels.source} labels are ignored: DISP conditions the networks on instance priors")
        return None
    if c_dim is None:  # from scratch: the labels make the networks conditional
        if cfg.class_index is not None:
            raise FewshotError("--class N trains every image as one class of a class-conditional base; from "
                               "scratch the data's labels decide the classes",
                               hint="drop --class; label the images (a dataset.json, or --labels folders)")
        return labels
    if c_dim == 0:
        if cfg.class_index is not None:
            raise FewshotError(f"--class {cfg.class_index} was given, but the base is unconditional",
                               hint="drop --class, or fine-tune a class-conditional base")
        if labels is not None:
            note(f"note: the base is unconditional, so the {labels.source} labels are ignored (--base none trains "
                 f"a class-conditional model from scratch; --labels none silences this)")
        return None
    return _conditional_base(cfg, labels, count, c_dim, note)


def _conditional_base(cfg: TrainConfig, labels: Labels | None, count: int, c_dim: int, note: Any) -> Labels:
    if cfg.class_index is not None:
        if cfg.class_index >= c_dim:
            raise FewshotError(f"--class {cfg.class_index} is out of range: the base has classes 0-{c_dim - 1}")
        if labels is not None:
            note(f"note: --class {cfg.class_index} trains every image as that class; the {labels.source} labels "
                 "are ignored")
        return single_class(count, cfg.class_index, c_dim)
    if labels is None:
        raise FewshotError(f"the base is class-conditional ({c_dim} classes) but the images have no labels",
                           hint=LABELLED_HINT)
    if labels.source == "folders" and labels.num_classes != c_dim:
        raise FewshotError(f"the data has {labels.num_classes} class folders but the base has {c_dim} classes",
                           hint="one sub-folder per class of the base (sorted names = class indices), or a "
                                "dataset.json naming each image's class")
    if labels.num_classes > c_dim:
        raise FewshotError(f"the data's labels go up to class {labels.num_classes - 1} but the base has {c_dim} "
                           f"classes (0-{c_dim - 1})", hint="relabel the images within the base's classes")
    return replace(labels, num_classes=c_dim)


def base_c_dim(spec_kwargs: dict[str, Any] | None) -> int | None:
    """The class count of a generator's constructor arguments (None: no generator, i.e. from scratch)."""
    return None if spec_kwargs is None else int(spec_kwargs.get("c_dim", 0) or 0)


def labels_digest(labels: Labels | None) -> str | None:
    if labels is None:
        return None
    return hashlib.sha256(labels.indices.numpy().tobytes() + str(labels.num_classes).encode()).hexdigest()


def draw_labels(labels: Labels, indices: torch.Tensor) -> torch.Tensor:
    """One-hot c of the images ``indices``."""
    return one_hot(labels.indices[indices.cpu()], labels.num_classes)


def draw_gen_labels(labels: Labels, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` one-hot c from the data's label distribution: the labels of random training images."""
    picks = torch.randint(labels.indices.shape[0], (count,), generator=gen, device=gen.device)
    return draw_labels(labels, picks)


def grid_cells(labels: Labels, cols: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(class, training image) of each cell of a cols x rows grid: one class per row, cycling through the
    classes the data holds; a row's images are that class's, in order (reals.png shows what fakes.png aims at)."""
    present = torch.unique(labels.indices)
    classes, images = [], []
    for row in range(rows):
        k = present[row % len(present)]
        members = torch.nonzero(labels.indices == k).flatten()
        for col in range(cols):
            classes.append(int(k))
            images.append(int(members[col % len(members)]))
    return torch.tensor(classes, dtype=torch.int64), torch.tensor(images, dtype=torch.int64)
