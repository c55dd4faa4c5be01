"""Publishing a run: the model card from the run's own records, the folder to upload, the push."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, settings
from ..errors import FewshotError
from ..train.run_dir import CHECKPOINTS_DIR, CONFIG_NAME, EXPORT_NAMES, METRICS_NAME, list_snapshots
from .fetch import _is_network_error, parse_hf_ref
from .registry import CheckpointEntry, registry_entry_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# --- push -------------------------------------------------------------------------------------------------

# A run folder of fewshot's (fewshot.train.run_dir names its files), or a folder laid out for the Hub.
BUNDLE_CANDIDATES = (*EXPORT_NAMES, "latest.safetensors")


@dataclass
class PushSource:
    bundle: Path
    run_dir: Path | None
    config: dict[str, Any]
    metrics: dict[str, Any]


def _read_config(run_dir: Path) -> dict[str, Any]:
    for name in ("config.json", CONFIG_NAME):
        path = run_dir / name
        if path.is_file():
            try:
                if name.endswith(".json"):
                    data = json.loads(path.read_text())
                else:
                    with open(path, "rb") as fh:
                        data = tomllib.load(fh)
            except (OSError, ValueError) as exc:
                raise FewshotError(f"cannot read {path}: {exc}") from None
            return data if isinstance(data, dict) else {}
    return {}


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    """Latest value of each metric from ``metrics.json`` or ``metrics.jsonl`` (one JSON record per line)."""
    metrics: dict[str, Any] = {}
    path = run_dir / "metrics.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                metrics.update(data.get("results", data))
        except (OSError, ValueError):
            pass
    path = run_dir / METRICS_NAME
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                metrics.update(record.get("results", {k: v for k, v in record.items() if isinstance(v, (int, float))}))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _run_dir_of(bundle: Path) -> Path | None:
    """The run folder a bundle belongs to (``run/best.safetensors``, ``run/checkpoints/snapshot-*``), if any."""
    folders = [bundle.parent] + ([bundle.parent.parent] if bundle.parent.name == CHECKPOINTS_DIR else [])
    for folder in folders:
        if any((folder / name).is_file() for name in (CONFIG_NAME, "config.json")):
            return folder
    return None


def find_push_source(path: Path) -> PushSource:
    """A bundle file, or a run folder (its best/final/latest or newest ``*.safetensors``)."""
    path = Path(path)
    if path.is_file():
        run_dir = _run_dir_of(path)
        return PushSource(path, run_dir, _read_config(run_dir) if run_dir else {}, _read_metrics(run_dir) if run_dir else {})
    if not path.is_dir():
        raise FewshotError(f"no such checkpoint or run folder: {path}")
    candidates = [path / n for n in BUNDLE_CANDIDATES] + [path / CHECKPOINTS_DIR / n for n in BUNDLE_CANDIDATES]
    bundle = next((c for c in candidates if c.is_file()), None)
    if bundle is None:
        found = sorted(
            list(path.glob("*.safetensors")) + list((path / CHECKPOINTS_DIR).glob("*.safetensors")),
            key=lambda p: (p.stat().st_mtime, p.name),
        )
        if not found:
            raise FewshotError(f"{path}: no *.safetensors checkpoint in this run folder")
        bundle = found[-1]
    return PushSource(bundle, path, _read_config(path), _read_metrics(path))


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "", {})), None)


def _dig(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def _data_record(training: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """The training images' record (``{"images": N, "sha256": ...}``) a run's snapshots carry: the bundle's
    own, else the newest snapshot's in its run folder (exported best/final bundles do not repeat it)."""
    from ..checkpoint import read_header

    if isinstance(training.get("data"), dict):
        return training["data"]
    if run_dir is None:
        return {}
    for snapshot in reversed(list_snapshots(run_dir)):
        try:
            record = (read_header(snapshot).training or {}).get("data")
        except FewshotError:  # a damaged snapshot says nothing; an older one may
            continue
        if isinstance(record, dict):
            return record
    return {}


def model_card_fields(source: PushSource, *, base: str | None = None, preset: str | None = None,
                      data_size: int | None = None, licence: str | None = None) -> dict[str, Any]:
    """What the card says: base model, preset, data size, resolution, metrics, licence (inherited from the base).

    Each comes from the arguments, else the run: the bundle's training record and provenance, the run
    folder's config.toml, the images record of its snapshots; the licence from the base's registry entry.
    """
    from ..checkpoint import read_header

    header = read_header(source.bundle)
    training, config, prov = header.training or {}, source.config, header.provenance or {}
    base = _first(base, training.get("base"), _dig(config, "resume"), _dig(config, "base"), _dig(config, "transfer", "base"),
                  _dig(training, "config", "resume"), _dig(training, "config", "base"), prov.get("base"), prov.get("source"))
    preset = _first(preset, config.get("preset"), training.get("preset"), _dig(training, "config", "preset"))
    data = _data_record(training, source.run_dir)
    data_size = _first(data_size, data.get("images"), _dig(config, "data", "size"), config.get("data_size"),
                       training.get("data_size"), _dig(training, "training_set_kwargs", "max_size"))
    metrics = dict(training.get("metrics") or {}) if isinstance(training.get("metrics"), dict) else {}
    metrics.update(source.metrics)
    entry = registry_entry_for(str(base)) if base else None
    spec = header.specs.get("G_ema") or header.specs.get("G")
    return {
        "base": base,
        "base_entry": entry,
        "preset": preset,
        "data_size": data_size,
        "metrics": metrics,
        "licence": _first(licence, entry.licence if entry else None, training.get("licence"), "unknown"),
        "licence_inherited": not licence and entry is not None and bool(entry.licence),
        "licence_url": entry.licence_url if entry else None,
        "resolution": spec.init_kwargs.get("img_resolution") if spec else None,
        "data_sha256": data.get("sha256"),
        # The run's config is known and names no base: trained from scratch (not merely unrecorded).
        "from_scratch": base is None and bool(config or training.get("config")),
        "networks": sorted(header.specs),
    }


def _yaml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON scalars, lists and maps are valid YAML flow values


def render_model_card(repo_id: str, fields: dict[str, Any], files: list[str]) -> str:
    """README.md with YAML front matter the Hub reads (licence, tags, base model) plus fewshot's own keys."""
    licence = fields["licence"]
    front: dict[str, Any] = {"library_name": "fewshot", "tags": ["stylegan2", "gan", "few-shot", "image-generation", "fewshot"],
                             "pipeline_tag": "unconditional-image-generation"}
    if licence in ("mit", "apache-2.0", "cc-by-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "openrail"):
        front["license"] = licence
    else:
        front["license"] = "other"
        front["license_name"] = licence
        if fields.get("licence_url"):
            front["license_link"] = fields["licence_url"]
    base = fields.get("base")
    if isinstance(base, str) and base.startswith("hf://"):
        front["base_model"] = parse_hf_ref(base).repo_id
    front["fewshot_base"] = base
    front["fewshot_preset"] = fields.get("preset")
    front["fewshot_data_size"] = fields.get("data_size")
    front["fewshot_metrics"] = fields.get("metrics") or {}
    front["fewshot_resolution"] = fields.get("resolution")
    lines = ["---"] + [f"{k}: {_yaml_value(v)}" for k, v in front.items()] + ["---", ""]
    entry: CheckpointEntry | None = fields.get("base_entry")
    resolution = fields.get("resolution")
    lines += [f"# {repo_id.split('/')[-1]}", "",
              f"A StyleGAN2 generator {'fine-tuned' if base else 'trained'} with [fewshot](https://pypi.org/project/fewshot/)"
              + (f" ({resolution}x{resolution} px)." if resolution else "."), ""]
    lines += ["| | |", "|---|---|",
              f"| base model | {base or ('none (trained from scratch)' if fields.get('from_scratch') else 'unknown')}"
              + (f" ({entry.description})" if entry else "") + " |",
              f"| preset | {fields.get('preset') or 'unknown'} |",
              f"| training images | {fields.get('data_size') or 'unknown'} |",
              f"| resolution | {resolution}x{resolution} |" if resolution else "| resolution | unknown |",
              f"| networks | {', '.join(fields['networks'])} |"]
    for name, value in (fields.get("metrics") or {}).items():
        lines.append(f"| {name} | {value} |")
    lines += ["", "![samples](samples.png)" if "samples.png" in files else "", "",
              "## Use", "", "```bash", f"fewshot sample hf://{repo_id}/{files[0]} --seeds 0-15", "```", "",
              "## Licence", ""]
    if licence == "unknown":
        why = "Trained from scratch, so no licence is inherited" if fields.get("from_scratch") else "Unknown"
        lines.append(f"{why}: give one with `fewshot push --license`. The training images keep their own licence.")
    else:
        lines.append(("Inherited from the base model: " if fields.get("licence_inherited") else "") + licence
                     + (f" ({fields['licence_url']})" if fields.get("licence_url") else "")
                     + ". The training images keep their own licence.")
    lines.append("")
    return "\n".join(lines)


def sample_grid(bundle_path: Path, out: Path, seeds: list[int], psi: float = 1.0, columns: int = 4) -> Path:
    """A PNG grid of the generator's images for ``seeds`` (latents drawn as the official generate.py does)."""
    import numpy as np
    import torch
    from PIL import Image

    from ..checkpoint import load_bundle, read_header
    from ..synthesis import inference_kwargs

    generators = [n for n in ("G_ema", "G") if n in read_header(bundle_path).specs]
    if not generators:
        raise FewshotError(f"{bundle_path} holds no generator (neither G_ema nor G)")
    if not seeds:
        raise FewshotError("no seeds for the sample grid")
    bundle = load_bundle(bundle_path, names=tuple(generators[:1]))
    G = bundle.generator
    z = torch.from_numpy(np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in seeds])).float()
    c = torch.zeros(len(seeds), G.c_dim)
    if G.c_dim:
        c[torch.arange(len(seeds)), torch.tensor([seed % G.c_dim for seed in seeds])] = 1  # cycle through labels
    with torch.no_grad():  # one batch: the per-seed latents are the official ones either way
        images = G(z, c, truncation_psi=psi, noise_mode="const", **inference_kwargs(z.device))
    tiles = list((images * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    h, w, ch = tiles[0].shape
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * h, columns * w, ch), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    Image.fromarray(grid[..., 0] if ch == 1 else grid).save(out)
    return out


def prepare_push_folder(source: PushSource, out_dir: Path, repo_id: str, *, seeds: list[int] | None = None,
                        psi: float = 1.0, **card_overrides: Any) -> list[Path]:
    """Write what ``push`` uploads: the bundle, config.json, samples.png and README.md (the model card)."""
    from ..checkpoint import read_header

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FewshotError(f"{out_dir} exists and is not empty", hint="choose a new folder for --dry-run")
    out_dir.mkdir(parents=True, exist_ok=True)
    header = read_header(source.bundle)
    bundle_name = source.bundle.name
    shutil.copy2(source.bundle, out_dir / bundle_name)
    fields = model_card_fields(source, **card_overrides)
    config = {
        "library": "fewshot", "fewshot_version": __version__, "checkpoint": bundle_name,
        "networks": {n: s.to_json() for n, s in header.specs.items()},
        "base": fields["base"], "preset": fields["preset"], "data_size": fields["data_size"],
        "metrics": fields["metrics"], "licence": fields["licence"], "provenance": header.provenance,
        "training_config": source.config or (header.training or {}).get("config"),
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    sample_grid(source.bundle, out_dir / "samples.png", seeds if seeds is not None else list(range(8)), psi=psi)
    files = [bundle_name, "config.json", "samples.png"]
    (out_dir / "README.md").write_text(render_model_card(repo_id, fields, files))
    return [out_dir / f for f in files + ["README.md"]]


def push_to_hub(path: Path, repo_id: str, *, private: bool = False, dry_run_dir: Path | None = None,
                seeds: list[int] | None = None, **card_overrides: Any) -> str:
    """Upload a bundle (or a run's best checkpoint) with its card; ``dry_run_dir`` writes the folder only."""
    import tempfile

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise FewshotError(f"--repo must be user/name, got {repo_id!r}")
    source = find_push_source(path)
    if dry_run_dir is not None:
        prepare_push_folder(source, dry_run_dir, repo_id, seeds=seeds, **card_overrides)
        return str(dry_run_dir)
    if settings.offline():
        raise FewshotError("cannot push while offline (FEWSHOT_OFFLINE / HF_HUB_OFFLINE is set)",
                           hint="use --dry-run DIR to write the folder, and upload it later")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="fewshot-push-") as tmp:
        folder = Path(tmp) / "upload"
        prepare_push_folder(source, folder, repo_id, seeds=seeds, **card_overrides)
        endpoint = settings.hf_endpoint()
        api = HfApi(endpoint=endpoint) if endpoint else HfApi()
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                              commit_message=f"Upload {source.bundle.name} with fewshot {__version__}")
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            hint = "log in with `hf auth login` or set HF_TOKEN" if status in (401, 403) else None
            raise FewshotError(f"push to {repo_id} failed: {str(exc).splitlines()[0]}", hint=hint) from None
        except (OSError, ValueError) as exc:
            raise FewshotError(f"push to {repo_id} failed: {exc}".splitlines()[0]) from None
        except Exception as exc:
            if not _is_network_error(exc):
                raise
            raise FewshotError(f"cannot reach the Hub at {endpoint or 'https://huggingface.co'}: {exc}",
                               hint="check the network; --dry-run DIR writes the folder to upload later") from None
    return str(url)
