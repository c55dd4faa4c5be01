"""rosinality/stylegan2-pytorch checkpoints (``.pt``) to and from fewshot's StyleGAN2 networks.

rosinality's networks compute the same functions as NVIDIA's (fewshot.nets) when NVIDIA's ``conv_clamp`` is
off: equalised learning rate as a forward-time gain (lr_mul included) on both sides, the same [1,3,3,1] blur
with the same paddings, the same upsampling (transposed conv on the stored kernel, then the blur; no flip,
checked against rosinality's code), lrelu(x + b) * sqrt(2), and demodulation eps 1e-8 (applied after the
1/sqrt(fan_in) gain there, before it here: a relative difference of ~1e-8). So import and export are renames
and reshapes, onto fewshot's own Generator / Discriminator classes (no network family of its own).

The correspondence, per network:

- mapping: ``style.{i+1}`` (after a PixelNorm at ``style.0``) = ``mapping.fc{i}`` (both keep lr_mul in the
  forward pass, so weights and biases copy unchanged); ``latent_avg`` = ``mapping.w_avg``.
- synthesis: ``input.input`` [1,C,4,4] = ``b4.const``; ``conv1`` = ``b4.conv1``; ``to_rgb1`` = ``b4.torgb``;
  ``convs.{2k}`` / ``convs.{2k+1}`` = ``b{8*2^k}.conv0`` (up) / ``.conv1``; ``to_rgbs.{k}`` = ``.torgb``;
  ``*.conv.modulation`` = ``*.affine``; ``*.noise.weight`` [1] = ``*.noise_strength`` []; ``*.activate.bias``
  = ``*.bias``; ``noises.noise_{j}`` [1,1,r,r] = the j-th layer's ``noise_const`` [r,r].
- discriminator: ``convs.0`` = ``b{top}.fromrgb``; ``convs.{j}.conv1/conv2/skip`` = ``b{res}.conv0/conv1/skip``;
  ``final_conv`` = ``b4.conv``; ``final_linear.0/1`` = ``b4.fc`` / ``b4.out``; minibatch stddev group 4, 1 feature.

Files are read with ``torch.load(weights_only=True)`` only (argparse.Namespace, which rosinality's train.py
saves as ``args``, is allowed as the inert attribute bag it is); nothing from a file runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import FewshotError

SOURCE_FORMAT = "rosinality/stylegan2-pytorch checkpoint"
MEAN_LATENT_SAMPLES = 4096  # what rosinality's generate.py / projector.py average for their truncation centre
MEAN_LATENT_SEED = 0
MBSTD_GROUP = 4  # rosinality's Discriminator.stddev_group (stddev_feat = 1)
# The networks of a rosinality checkpoint and the bundle names they become.
NETWORK_KEYS = {"g_ema": "G_ema", "g": "G", "d": "D"}


def _blur_kernel(gain: float) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


# --------------------------------------------------------------------------------------------
# Reading


def read_rosinality_file(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a rosinality ``.pt``, read under ``weights_only`` rules."""
    from .official_pickle import load_torch_tensors

    path = Path(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = load_torch_tensors(path, str(path))
    if not is_rosinality_checkpoint(data):
        raise FewshotError(
            f"{path} is a torch.save archive, but not a rosinality/stylegan2-pytorch checkpoint "
            "(expected a dict with g_ema, g or d state dicts)"
        )
    return data


def is_rosinality_checkpoint(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    nets = [data.get(k) for k in NETWORK_KEYS if isinstance(data.get(k), dict)]
    return bool(nets) and all(
        "style.1.weight" in sd or "final_linear.1.weight" in sd for sd in nets
    )


def _args_dict(args: Any) -> dict[str, Any]:
    items = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}
    return {str(k): v for k, v in items.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _channel_config(channels: dict[int, int], multiplier: Any) -> tuple[int, int]:
    """(channel_base, channel_max) with ``min(channel_base // res, channel_max) == channels[res]`` for all res."""
    top = max(channels)
    candidates = [(16384 * multiplier, 512)] if isinstance(multiplier, int) and multiplier > 0 else []
    candidates.append((channels[top] * top, channels[4]))
    for base, cmax in candidates:
        if all(min(base // res, cmax) == ch for res, ch in channels.items()):
            return base, cmax
    raise FewshotError(f"rosinality checkpoint: channel counts {channels} fit no StyleGAN2 channel_base/channel_max")


def _take(sd: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in sd:
        raise FewshotError(f"{where}: missing {key!r}; not the rosinality StyleGAN2 layout")
    value = sd.pop(key)
    if not isinstance(value, torch.Tensor):
        raise FewshotError(f"{where}: {key!r} is not a tensor")
    return value.detach().to(torch.float32)


def _check_blur(sd: dict[str, torch.Tensor], key: str, gain: float, where: str) -> None:
    kernel = _take(sd, key, where)
    if kernel.shape != (4, 4) or not torch.allclose(kernel, _blur_kernel(gain), atol=1e-6):
        raise FewshotError(f"{where}: {key} is not the [1,3,3,1] blur kernel every StyleGAN2 uses; not supported")


def _synthesis_plan(log2: int) -> list[tuple[str, str, int]]:
    """(rosinality prefix, fewshot prefix, resolution) per styled conv, in noise order."""
    plan = [("conv1", "synthesis.b4.conv1", 4)]
    for k, res in enumerate(2**i for i in range(3, log2 + 1)):
        plan += [(f"convs.{2 * k}", f"synthesis.b{res}.conv0", res), (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", res)]
    return plan


def _rgb_plan(log2: int) -> list[tuple[str, str]]:
    return [("to_rgb1", "synthesis.b4.torgb")] + [
        (f"to_rgbs.{k}", f"synthesis.b{2 ** (k + 3)}.torgb") for k in range(log2 - 2)
    ]


def _generator_state(sd: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """rosinality generator state -> official-layout state (without w_avg and the fixed filters)."""
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        out[f"mapping.fc{n_mlp}.weight"] = _take(sd, f"style.{n_mlp + 1}.weight", where)
        out[f"mapping.fc{n_mlp}.bias"] = _take(sd, f"style.{n_mlp + 1}.bias", where)
        n_mlp += 1
    const = _take(sd, "input.input", where)
    out["synthesis.b4.const"] = const[0]
    log2 = 2 + sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    for j, (src, dst, res) in enumerate(_synthesis_plan(log2)):
        if f"{src}.conv.blur.kernel" in sd:  # an upsampling conv: transposed conv, then the blur
            _check_blur(sd, f"{src}.conv.blur.kernel", 4.0, where)
        out[f"{dst}.weight"] = _take(sd, f"{src}.conv.weight", where)[0]
        out[f"{dst}.affine.weight"] = _take(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _take(sd, f"{src}.conv.modulation.bias", where)
        out[f"{dst}.noise_strength"] = _take(sd, f"{src}.noise.weight", where).reshape([])
        out[f"{dst}.bias"] = _take(sd, f"{src}.activate.bias", where)
        out[f"{dst}.noise_const"] = _take(sd, f"noises.noise_{j}", where).reshape(res, res)
    for src, dst in _rgb_plan(log2):
        out[f"{dst}.weight"] = _take(sd, f"{src}.conv.weight", where)[0]
        out[f"{dst}.bias"] = _take(sd, f"{src}.bias", where).reshape(-1)
        out[f"{dst}.affine.weight"] = _take(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _take(sd, f"{src}.conv.modulation.bias", where)
        if f"{src}.upsample.kernel" in sd:
            _check_blur(sd, f"{src}.upsample.kernel", 4.0, where)
    if sd:
        raise FewshotError(f"{where}: unexpected {len(sd)} tensor(s) (e.g. {', '.join(list(sd)[:3])}); "
                           "not the StyleGAN2 layout (SWAGAN and other variants are not supported)")
    return out


def _generator_kwargs(state: dict[str, torch.Tensor], args: dict[str, Any]) -> dict[str, Any]:
    n_mlp = sum(1 for k in state if k.startswith("mapping.fc") and k.endswith(".weight"))
    w_dim = state["synthesis.b4.conv1.affine.weight"].shape[1]
    top = max(int(k.split(".")[1][1:]) for k in state if k.startswith("synthesis.b"))
    channels = {4: state["synthesis.b4.const"].shape[0]}
    channels.update({res: state[f"synthesis.b{res}.conv1.weight"].shape[0] for res in (2**i for i in range(3, int(math.log2(top)) + 1))})
    base, cmax = _channel_config(channels, args.get("channel_multiplier"))
    return dict(
        z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=top, img_channels=3,
        mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=float(args.get("lr_mlp", 0.01))),
        synthesis_kwargs=dict(channel_base=base, channel_max=cmax, architecture="skip", conv_clamp=None),
    )


def _discriminator_state(sd: dict[str, torch.Tensor], where: str) -> tuple[dict[str, torch.Tensor], int]:
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}
    n_blocks = sum(1 for k in sd if k.startswith("convs.") and k.endswith(".conv1.0.weight"))
    top = 4 * 2**n_blocks
    out[f"b{top}.fromrgb.weight"] = _take(sd, "convs.0.0.weight", where)
    out[f"b{top}.fromrgb.bias"] = _take(sd, "convs.0.1.bias", where)
    for j in range(1, n_blocks + 1):
        res, src = top // 2 ** (j - 1), f"convs.{j}"
        out[f"b{res}.conv0.weight"] = _take(sd, f"{src}.conv1.0.weight", where)
        out[f"b{res}.conv0.bias"] = _take(sd, f"{src}.conv1.1.bias", where)
        _check_blur(sd, f"{src}.conv2.0.kernel", 1.0, where)
        out[f"b{res}.conv1.weight"] = _take(sd, f"{src}.conv2.1.weight", where)
        out[f"b{res}.conv1.bias"] = _take(sd, f"{src}.conv2.2.bias", where)
        _check_blur(sd, f"{src}.skip.0.kernel", 1.0, where)
        out[f"b{res}.skip.weight"] = _take(sd, f"{src}.skip.1.weight", where)
    out["b4.conv.weight"] = _take(sd, "final_conv.0.weight", where)
    out["b4.conv.bias"] = _take(sd, "final_conv.1.bias", where)
    for i, name in enumerate(("fc", "out")):
        out[f"b4.{name}.weight"] = _take(sd, f"final_linear.{i}.weight", where)
        out[f"b4.{name}.bias"] = _take(sd, f"final_linear.{i}.bias", where)
    if sd:
        raise FewshotError(f"{where}: unexpected {len(sd)} tensor(s) (e.g. {', '.join(list(sd)[:3])}); "
                           "not the StyleGAN2 discriminator layout")
    return out, top


def _discriminator_kwargs(state: dict[str, torch.Tensor], top: int, args: dict[str, Any]) -> dict[str, Any]:
    channels = {4: state["b4.conv.weight"].shape[0]}
    channels.update({res: state[f"b{res}.conv0.weight"].shape[0] for res in (2**i for i in range(3, int(math.log2(top)) + 1))})
    base, cmax = _channel_config(channels, args.get("channel_multiplier"))
    return dict(
        c_dim=0, img_resolution=top, img_channels=3, architecture="resnet", channel_base=base, channel_max=cmax,
        conv_clamp=None, epilogue_kwargs=dict(mbstd_group_size=MBSTD_GROUP, mbstd_num_channels=1),
    )


def _load_into(class_name: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor], where: str) -> nn.Module:
    from .nets import build_network

    net = build_network(class_name, kwargs)
    own = net.state_dict()
    # The fixed resampling filters (and w_avg, set by the caller) are the network's own.
    state = {**{k: v for k, v in own.items() if k.endswith("resample_filter") or k == "mapping.w_avg"}, **state}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shapes that contradict each other within the file
        detail = " ".join(str(exc).split())[:300]
        raise FewshotError(f"{where}: weights do not fit a StyleGAN2 network: {detail}") from None
    return net.eval().requires_grad_(False)


def mean_latent(generator: nn.Module) -> torch.Tensor:
    """rosinality's ``mean_latent(4096)``: the mean of mapped random z (here from a fixed seed)."""
    rng = torch.Generator().manual_seed(MEAN_LATENT_SEED)
    z = torch.randn([MEAN_LATENT_SAMPLES, generator.z_dim], generator=rng)
    with torch.no_grad():
        return generator.mapping(z, None, skip_w_avg_update=True)[:, 0].mean(dim=0)


def networks_from_rosinality(data: dict[str, Any], source: str) -> tuple[dict[str, nn.Module], str]:
    """fewshot networks for a rosinality checkpoint dict, and how ``w_avg`` (the truncation centre) was set."""
    args = _args_dict(data.get("args"))
    networks: dict[str, nn.Module] = {}
    truncation = ""
    for key, name in NETWORK_KEYS.items():
        sd = data.get(key)
        if not isinstance(sd, dict):
            continue
        where = f"{source}:{key}"
        if name == "D":
            state, top = _discriminator_state(sd, where)
            networks[name] = _load_into("Discriminator", _discriminator_kwargs(state, top, args), state, where)
            continue
        state = _generator_state(sd, where)
        net = _load_into("Generator", _generator_kwargs(state, args), state, where)
        # latent_avg is g_ema's; fewshot's exports add g's own as latent_avg_g, so that a round trip is exact.
        latent_avg = data.get("latent_avg_g") if name == "G" and "latent_avg_g" in data else data.get("latent_avg")
        if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() and latent_avg.numel() % net.w_dim == 0:
            rows = latent_avg.detach().float().reshape(-1, net.w_dim)  # [w_dim], [1, w_dim] or one row per layer
            net.mapping.w_avg.copy_(rows[0])
            truncation = "w_avg = the checkpoint's latent_avg (as e4e/pSp use it)"
            if len(rows) > 1 and not torch.equal(rows, rows[:1].expand_as(rows)):
                truncation += f"; its first of {len(rows)} per-layer rows"
        else:
            net.mapping.w_avg.copy_(mean_latent(net))
            truncation = (f"w_avg = mean of {MEAN_LATENT_SAMPLES} mapped z (seed {MEAN_LATENT_SEED}), as rosinality's "
                          "mean_latent(4096); the checkpoint has no latent_avg")
        networks[name] = net
    if not any(n in networks for n in ("G", "G_ema")) and "D" not in networks:
        raise FewshotError(f"{source}: no g_ema, g or d network in this rosinality checkpoint")
    return networks, truncation


def import_rosinality(path: str | Path) -> tuple[dict[str, nn.Module], dict[str, Any], dict[str, Any]]:
    """Import a rosinality ``.pt``: (networks, provenance, training extras)."""
    path = Path(path)
    data = read_rosinality_file(path)
    networks, truncation = networks_from_rosinality(data, str(path))
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    provenance: dict[str, Any] = {
        "source": path.name,
        "source_sha256": digest.hexdigest(),
        "source_format": SOURCE_FORMAT,
        "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "converted_by": f"fewshot {__version__}",
    }
    if truncation:
        provenance["truncation"] = truncation
    args = _args_dict(data.get("args"))
    if args:
        provenance["rosinality_args"] = {k: args[k] for k in ("size", "latent", "n_mlp", "channel_multiplier", "iter")
                                         if k in args}
    training: dict[str, Any] = {}
    if isinstance(data.get("ada_aug_p"), (int, float)):
        training["augment_p"] = float(data["ada_aug_p"])
    return networks, provenance, training


# --------------------------------------------------------------------------------------------
# Writing


def _exportable(net: nn.Module, name: str) -> None:
    kw = net.init_kwargs
    problems = []
    if kw.get("c_dim"):
        problems.append("it is class-conditional")
    if kw.get("img_channels") != 3:
        problems.append(f"it has {kw.get('img_channels')} image channels (rosinality: 3)")
    if name == "D":
        epi = kw.get("epilogue_kwargs") or {}
        if kw.get("architecture", "resnet") != "resnet":
            problems.append(f"its architecture is {kw.get('architecture')!r} (rosinality: resnet)")
        if epi.get("mbstd_group_size", 4) != MBSTD_GROUP or epi.get("mbstd_num_channels", 1) != 1:
            problems.append("its minibatch-stddev is not group 4 with 1 feature (rosinality's)")
    else:
        if (kw.get("synthesis_kwargs") or {}).get("architecture", "skip") != "skip":
            problems.append("its synthesis is not the 'skip' architecture (rosinality's)")
        if kw.get("z_dim") != kw.get("w_dim"):
            problems.append("z_dim differs from w_dim (rosinality has one style_dim)")
    if problems:
        raise FewshotError(f"{name} cannot be written in rosinality's format: {'; '.join(problems)}")


def _generator_to_rosinality(net: nn.Module) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    log2 = int(math.log2(net.img_resolution))
    n_mlp = sum(1 for k in sd if k.startswith("mapping.fc") and k.endswith(".weight"))
    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    noises = {}
    for j, (dst, src, res) in enumerate(_synthesis_plan(log2)):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        if src.endswith("conv0"):
            out[f"{dst}.conv.blur.kernel"] = _blur_kernel(4.0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        noises[f"noises.noise_{j}"] = sd[f"{src}.noise_const"].reshape(1, 1, res, res)
    for dst, src in _rgb_plan(log2):
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if dst != "to_rgb1":
            out[f"{dst}.upsample.kernel"] = _blur_kernel(4.0)
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
    out.update(noises)
    return out


def _discriminator_to_rosinality(net: nn.Module) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    top = net.img_resolution
    out = {"convs.0.0.weight": sd[f"b{top}.fromrgb.weight"], "convs.0.1.bias": sd[f"b{top}.fromrgb.bias"]}
    for j, res in enumerate((top // 2**i for i in range(int(math.log2(top)) - 2)), start=1):
        out[f"convs.{j}.conv1.0.weight"] = sd[f"b{res}.conv0.weight"]
        out[f"convs.{j}.conv1.1.bias"] = sd[f"b{res}.conv0.bias"]
        out[f"convs.{j}.conv2.0.kernel"] = _blur_kernel(1.0)
        out[f"convs.{j}.conv2.1.weight"] = sd[f"b{res}.conv1.weight"]
        out[f"convs.{j}.conv2.2.bias"] = sd[f"b{res}.conv1.bias"]
        out[f"convs.{j}.skip.0.kernel"] = _blur_kernel(1.0)
        out[f"convs.{j}.skip.1.weight"] = sd[f"b{res}.skip.weight"]
    out["final_conv.0.weight"] = sd["b4.conv.weight"]
    out["final_conv.1.bias"] = sd["b4.conv.bias"]
    for i, name in enumerate(("fc", "out")):
        out[f"final_linear.{i}.weight"] = sd[f"b4.{name}.weight"]
        out[f"final_linear.{i}.bias"] = sd[f"b4.{name}.bias"]
    return out


def rosinality_checkpoint(networks: dict[str, nn.Module]) -> dict[str, Any]:
    """The checkpoint dict rosinality's code (and e4e, pSp, StyleCLIP, CDC) loads: ``g_ema``, ``g``, ``d``,
    ``latent_avg`` (g_ema's w_avg) and ``args`` (a plain dict, so that ``torch.load(weights_only=True)`` reads
    it too); plus ``latent_avg_g`` (g's w_avg, which rosinality does not keep and its code never reads)."""
    generator = networks.get("G_ema", networks.get("G"))
    if generator is None:
        raise FewshotError("this checkpoint holds no generator (neither G_ema nor G) to write for rosinality")
    if hasattr(generator.synthesis, "input"):
        raise FewshotError("rosinality's format holds StyleGAN2 networks; this checkpoint's generator is a "
                           "StyleGAN3 one", hint="keep it as a fewshot .safetensors bundle")
    ckpt: dict[str, Any] = {}
    for key, name in NETWORK_KEYS.items():
        net = networks.get(name)
        if net is None:
            continue
        _exportable(net, name)
        ckpt[key] = _discriminator_to_rosinality(net) if name == "D" else _generator_to_rosinality(net)
    ckpt["latent_avg"] = generator.mapping.w_avg.detach().to("cpu", torch.float32).clone()
    if "G" in networks and "G_ema" in networks:  # rosinality keeps one; the training G's is kept beside it
        ckpt["latent_avg_g"] = networks["G"].mapping.w_avg.detach().to("cpu", torch.float32).clone()
    syn = generator.init_kwargs.get("synthesis_kwargs") or {}
    base, cmax = syn.get("channel_base", 32768), syn.get("channel_max", 512)
    args: dict[str, Any] = {"size": generator.img_resolution, "latent": generator.w_dim,
                            "n_mlp": generator.init_kwargs.get("mapping_kwargs", {}).get("num_layers", 8)}
    if cmax == 512 and base % 16384 == 0:
        args["channel_multiplier"] = base // 16384
    ckpt["args"] = args
    return ckpt


def rosinality_file_bytes(networks: dict[str, nn.Module]) -> tuple[bytes, list[str]]:
    """The ``.pt`` file rosinality's code reads for ``networks``, and notes for the user."""
    import io

    ckpt = rosinality_checkpoint(networks)
    notes = []
    generator = networks.get("G_ema", networks.get("G"))
    clamp = (generator.init_kwargs.get("synthesis_kwargs") or {}).get("conv_clamp")
    if clamp is not None:
        notes.append(f"note: rosinality's networks have no conv_clamp; activations beyond ±{clamp} are no longer "
                     "clipped")
    if "channel_multiplier" not in ckpt["args"]:
        notes.append("note: the channel counts match no rosinality channel_multiplier; its stock Generator cannot "
                     "be built for them")
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue(), notes
