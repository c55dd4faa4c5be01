"""Safetensors bundles and the safe import of official stylegan2-ada-pytorch pickles."""

from __future__ import annotations

import collections
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_D, make_tiny_G
from official_format import (
    dump_official,
    make_malicious_pickle,
    make_official_pickle,
    make_tf_pickle,
    to_persistent,
)

from fewshot import checkpoint
from fewshot.checkpoint import (
    FORMAT_VERSION,
    convert_pickle,
    load_bundle,
    load_checkpoint,
    read_header,
    save_bundle,
    sha256_file,
)
from fewshot.errors import FewshotError


def g_out(G, seed=0):
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, None, truncation_psi=0.7, noise_mode="const")


def d_out(D, seed=0):
    img = torch.randn(4, 3, D.img_resolution, D.img_resolution, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return D(img, None)


def rewrite_metadata(path: Path, **changes: str | None) -> None:
    """Edit a safetensors file's string metadata in place (None deletes a key)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    meta = header.setdefault("__metadata__", {})
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    new_header = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + size:])


def rewrite_header(path: Path, edit) -> None:
    """Edit a safetensors file's JSON header in place with ``edit(header)``; the tensor bytes stay."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    edit(header)
    new_header = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + size:])


def first_tensor(header: dict) -> dict:
    return next(info for key, info in header.items() if key != "__metadata__")


@pytest.fixture
def nets():
    return make_tiny_G(1).eval(), make_tiny_G(2).eval(), make_tiny_D(3).eval()


@pytest.fixture
def bundle_path(tmp_path, nets):
    G, G_ema, D = nets
    return save_bundle(
        tmp_path / "b.safetensors", {"G": G, "G_ema": G_ema, "D": D},
        provenance={"source": "unit-test"}, training={"kimg": 12, "augment_p": 0.25},
        state_tensors={"opt.G.exp_avg": torch.arange(6.0)},
    )


# ---------------------------------------------------------------------------------------------- bundles

def test_bundle_round_trip_rebuilds_networks_from_the_header(bundle_path, nets):
    G, G_ema, D = nets
    bundle = load_bundle(bundle_path, with_state=True)
    assert set(bundle.networks) == {"G", "G_ema", "D"}
    assert torch.equal(g_out(bundle.networks["G"]), g_out(G))
    assert torch.equal(g_out(bundle.networks["G_ema"]), g_out(G_ema))
    assert torch.equal(d_out(bundle.networks["D"]), d_out(D))
    assert bundle.generator is bundle.networks["G_ema"]
    assert bundle.specs["G"].init_kwargs == G.init_kwargs
    assert bundle.provenance == {"source": "unit-test"}
    assert bundle.training == {"kimg": 12, "augment_p": 0.25}
    assert torch.equal(bundle.state_tensors["opt.G.exp_avg"], torch.arange(6.0))
    for name, net in bundle.networks.items():  # loaded networks are ready for inference
        assert not net.training and not any(p.requires_grad for p in net.parameters()), name
    for key, value in G.state_dict().items():  # buffers too (w_avg, noise_const)
        assert torch.equal(bundle.networks["G"].state_dict()[key], value), key


def test_bundle_subset_and_missing_network(bundle_path):
    only_g = load_bundle(bundle_path, names=("G",))
    assert set(only_g.networks) == {"G"} and only_g.generator is only_g.networks["G"]
    assert load_bundle(bundle_path, names=("G",)).state_tensors == {}
    with pytest.raises(FewshotError, match="no network 'X'"):
        load_bundle(bundle_path, names=("X",))
    d_only = save_bundle(bundle_path.with_name("d.safetensors"), {"D": make_tiny_D()})
    with pytest.raises(FewshotError, match="no generator"):
        _ = load_bundle(d_only).generator


def test_read_header_reads_no_tensor_data(bundle_path, nets, monkeypatch):
    G = nets[0]
    header_size = struct.unpack("<Q", bundle_path.read_bytes()[:8])[0]
    # Overwrite every tensor byte: the header must still read the same.
    raw = bytearray(bundle_path.read_bytes())
    raw[8 + header_size:] = b"\xff" * (len(raw) - 8 - header_size)
    bundle_path.write_bytes(bytes(raw))
    import safetensors
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("read_header touched tensor data")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    header = read_header(bundle_path)
    assert header.format_version == FORMAT_VERSION
    assert header.specs["G"].class_name == "Generator" and header.specs["D"].class_name == "Discriminator"
    assert header.num_params("G") == sum(v.numel() for v in G.state_dict().values())
    assert header.tensor_shapes["G.synthesis.b4.const"] == [64, 4, 4]
    assert header.training == {"kimg": 12, "augment_p": 0.25}


def test_atomic_write_keeps_the_previous_file_on_failure(tmp_path, nets, monkeypatch):
    path = save_bundle(tmp_path / "ckpt.safetensors", {"G": nets[0]})
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError):
        save_bundle(path, {"G": nets[1], "D": nets[2]})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp file left behind
    monkeypatch.undo()
    save_bundle(path, {"G": nets[1]})
    assert torch.equal(g_out(load_bundle(path).generator), g_out(nets[1]))


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_give_one_clear_error(tmp_path, bundle_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint\n")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    cut_bundle = tmp_path / "cut.safetensors"
    cut_bundle.write_bytes(bundle_path.read_bytes()[:-100])
    pkl = make_official_pickle(tmp_path / "snap.pkl", G=make_tiny_G(), D=make_tiny_D(), G_ema=make_tiny_G())
    cut_pickle = tmp_path / "cut.pkl"
    cut_pickle.write_bytes(pkl.read_bytes()[: len(pkl.read_bytes()) // 2])
    torch_zip = tmp_path / "model.pt"
    torch.save({"g_ema": {"w": torch.zeros(2)}}, torch_zip)
    cases = {
        text: "not a checkpoint",
        empty: "not a checkpoint",
        cut_bundle: "truncated",
        cut_pickle: "not a readable network pickle",
        torch_zip: "torch.save archive",
        make_tf_pickle(tmp_path / "tf.pkl"): "TensorFlow",
        tmp_path: "folder",
        tmp_path / "missing.pkl": "no such checkpoint",
    }
    for path, message in cases.items():
        with pytest.raises(FewshotError, match=message):
            load_checkpoint(path)
    with pytest.raises(FewshotError, match="truncated"):
        read_header(cut_bundle)
    with pytest.raises(FewshotError, match="not a safetensors file"):
        read_header(text)


@pytest.mark.parametrize("changes,message", [
    ({"format_version": "99"}, "format version '99' is not supported"),
    ({"format_version": "one"}, "not supported"),
    ({"networks": "{not json"}, "metadata is damaged"),
    ({"networks": json.dumps({"G": {"class": "Generator"}})}, "metadata is damaged"),
    ({"networks": json.dumps({"G": {"class": "Unet", "init_kwargs": {}}})}, "unknown network class"),
    ({"format": None}, "not a fewshot checkpoint bundle"),
    # Found by fuzz/fuzz_bundle.py's reader review: metadata of the wrong JSON type once escaped as
    # TypeError / AttributeError / OverflowError.
    ({"format_version": ["1"]}, "not supported"),
    ({"format_version": float("inf")}, "not supported"),
    ({"networks": json.dumps(["G"])}, "metadata is damaged"),
    ({"networks": json.dumps({"G": {"class": ["Generator"], "init_kwargs": {}}})}, "metadata is damaged"),
    ({"provenance": json.dumps([1, 2])}, "metadata is damaged"),
    ({"training": "5"}, "metadata is damaged"),
])
def test_damaged_or_foreign_metadata(bundle_path, changes, message):
    rewrite_metadata(bundle_path, **changes)
    with pytest.raises(FewshotError, match=message):
        load_checkpoint(bundle_path)


def test_weights_that_do_not_fit_the_stored_architecture(bundle_path, nets):
    spec = {"G": {"class": "Generator", "init_kwargs": {**nets[0].init_kwargs, "w_dim": 16}}}
    rewrite_metadata(bundle_path, networks=json.dumps(spec))
    with pytest.raises(FewshotError, match="weights do not fit"):
        load_bundle(bundle_path)
    spec = {"G": {"class": "Generator", "init_kwargs": {**nets[0].init_kwargs, "img_resolution": 33}}}
    rewrite_metadata(bundle_path, networks=json.dumps(spec))
    with pytest.raises(FewshotError, match="cannot build Generator"):
        load_bundle(bundle_path)


@pytest.mark.parametrize("edit", [
    lambda h: first_tensor(h).update(data_offsets=[0, float("inf")]),  # fuzz: "1e400" -> OverflowError
    lambda h: first_tensor(h).update(shape="abc"),  # `fewshot info` multiplied the letters
    lambda h: first_tensor(h).update(shape=7),
    lambda h: first_tensor(h).update(shape=[4, -1]),
    lambda h: first_tensor(h).update(shape=[2.5]),
])
def test_a_damaged_tensor_table_is_one_error(bundle_path, edit):
    rewrite_header(bundle_path, edit)
    with pytest.raises(FewshotError, match="damaged tensor table"):
        read_header(bundle_path)


def test_a_header_nested_too_deep_for_json_is_one_error(tmp_path):
    path = tmp_path / "deep.safetensors"
    header = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(FewshotError, match="header is not JSON"):
        read_header(path)


@pytest.mark.parametrize("change,message", [
    # Each of these was a fuzz/fuzz_bundle.py finding: the stored constructor arguments went straight to the
    # constructor, which tried to allocate what they claim.
    ({"w_dim": 2**62}, "more than its file can hold"),  # was RuntimeError: storage size overflowed
    ({"mapping_kwargs": {"num_layers": 10**12}}, "more than its file can hold"),  # was MemoryError (a list)
    ({"synthesis_kwargs": {"channel_base": 2**40, "channel_max": 2**20}}, "more than its file can hold"),
    ({"img_resolution": float("inf")}, "cannot convert float infinity"),  # was OverflowError
])
def test_stored_arguments_cannot_make_the_loader_allocate_what_they_claim(bundle_path, nets, change, message):
    spec = {"G": {"class": "Generator", "init_kwargs": {**nets[0].init_kwargs, **change}}}
    rewrite_metadata(bundle_path, networks=json.dumps(spec))
    with pytest.raises(FewshotError, match=f"cannot build Generator from the stored arguments: .*{message}"):
        load_bundle(bundle_path)


# ---------------------------------------------------------------------------------------------- official pickles

@pytest.mark.parametrize("protocol", [3, 4])
def test_official_snapshot_imports_with_identical_outputs(tmp_path, protocol):
    G, G_ema, D = make_tiny_G(1).eval(), make_tiny_G(2).eval(), make_tiny_D(3).eval()
    src = make_official_pickle(tmp_path / "network-snapshot-000100.pkl", G=G, D=D, G_ema=G_ema, augment_p=0.375,
                               protocol=protocol)
    bundle = load_checkpoint(src)
    assert set(bundle.networks) == {"G", "D", "G_ema"}
    assert torch.equal(g_out(bundle.networks["G"]), g_out(G))
    assert torch.equal(g_out(bundle.networks["G_ema"]), g_out(G_ema))
    assert torch.equal(d_out(bundle.networks["D"]), d_out(D))
    assert bundle.training["augment_p"] == pytest.approx(0.375)
    assert bundle.training["training_set_kwargs"]["path"] == "~/datasets/tiny.zip"

    dst = convert_pickle(src, tmp_path / "snap.safetensors")
    converted = load_bundle(dst)
    assert torch.equal(g_out(converted.networks["G_ema"]), g_out(G_ema))
    assert torch.equal(d_out(converted.networks["D"]), d_out(D))
    assert converted.training["augment_p"] == pytest.approx(0.375)
    assert converted.provenance["source"] == src.name
    assert converted.provenance["source_sha256"] == sha256_file(src)
    assert "converted_at" in converted.provenance
    assert converted.specs["G"].init_kwargs == G.init_kwargs


def test_fixture_names_exactly_the_globals_of_an_official_snapshot(tmp_path):
    import pickletools

    src = make_official_pickle(tmp_path / "snap.pkl", G=make_tiny_G(), D=make_tiny_D(), G_ema=make_tiny_G(),
                               augment_p=0.5)
    names = {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(src.read_bytes()) if op.name == "GLOBAL"}
    assert names == {
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch.storage._load_from_bytes", "numpy.core.multiarray.scalar", "numpy.dtype", "dnnlib.util.EasyDict",
        "torch_utils.persistence._reconstruct_persistent_obj", "builtins.set",
    }
    assert not {"dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence"} & set(sys.modules)


def test_published_network_file_and_numpy_scalars(tmp_path):
    G_ema = make_tiny_G(4, synthesis_kwargs={"channel_base": 512, "channel_max": 64, "conv_clamp": 256}).eval()
    src = make_official_pickle(
        tmp_path / "published.pkl", G_ema=G_ema, snapshot=False,
        training_set_kwargs={"max_size": np.int64(100), "xflip": np.bool_(True), "ratio": np.float32(0.5)},
    )
    bundle = load_checkpoint(src)
    assert set(bundle.networks) == {"G_ema"}
    assert torch.equal(g_out(bundle.generator), g_out(G_ema))
    assert bundle.specs["G_ema"].init_kwargs["synthesis_kwargs"]["conv_clamp"] == 256
    dst = convert_pickle(src, tmp_path / "published.safetensors")
    assert read_header(dst).training["training_set_kwargs"] == {"max_size": 100, "xflip": True, "ratio": 0.5}


def test_frozen_discriminator_layers_import(tmp_path):
    D = make_tiny_D(5, block_kwargs={"freeze_layers": 6}).eval()
    src = make_official_pickle(tmp_path / "freezed.pkl", G=make_tiny_G(), D=D, G_ema=make_tiny_G())
    imported = load_checkpoint(src, names=("D",)).networks["D"]
    assert torch.equal(d_out(imported), d_out(D))
    buffers = {name for name, _ in imported.named_buffers()}
    assert {"b32.fromrgb.weight", "b32.skip.weight", "b16.conv0.bias", "b16.conv1.weight"} <= buffers
    assert "b16.skip.weight" not in buffers
    assert imported.init_kwargs["block_kwargs"] == {"freeze_layers": 6}


@pytest.mark.parametrize("g_arch,d_arch", [("orig", "skip"), ("resnet", "orig")])
def test_other_architectures_and_labels_import(tmp_path, g_arch, d_arch):
    G = make_tiny_G(7, c_dim=4, synthesis_kwargs={"channel_base": 512, "channel_max": 64, "architecture": g_arch})
    D = make_tiny_D(8, c_dim=4, architecture=d_arch, mapping_kwargs={"num_layers": 2})
    src = make_official_pickle(tmp_path / "cond.pkl", G=G.eval(), D=D.eval(), G_ema=G)
    bundle = load_checkpoint(src)
    z, c = torch.randn(4, 32), torch.eye(4)
    img = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(bundle.generator(z, c, noise_mode="const"), G(z, c, noise_mode="const"))
        assert torch.equal(bundle.networks["D"](img, c), D(img, c))
    assert "mapping.embed.weight" in bundle.generator.state_dict()
    assert "mapping.fc1.weight" in bundle.networks["D"].state_dict()


def test_published_tf_converted_constructor_kwargs(tmp_path):
    # NVIDIA's published ffhq.pkl, metfaces.pkl, afhq*.pkl were converted from TensorFlow by legacy.py,
    # which records every mapping/synthesis/block/epilogue option explicitly.
    G = make_tiny_G(
        9,
        mapping_kwargs=dict(num_layers=2, embed_features=None, layer_features=None, activation="lrelu",
                            lr_multiplier=0.01, w_avg_beta=0.995),
        synthesis_kwargs=dict(channel_base=512, channel_max=64, num_fp16_res=0, conv_clamp=None, architecture="skip",
                              resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu"),
    ).eval()
    D = make_tiny_D(
        10, architecture="resnet", num_fp16_res=0, conv_clamp=None, cmap_dim=None,
        block_kwargs=dict(activation="lrelu", resample_filter=[1, 3, 3, 1], freeze_layers=0),
        mapping_kwargs=dict(num_layers=0, embed_features=None, layer_features=None, activation="lrelu",
                            lr_multiplier=0.1),
        epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=1, activation="lrelu"),
    ).eval()
    bundle = load_checkpoint(make_official_pickle(tmp_path / "ffhq-like.pkl", G=G, D=D, G_ema=G))
    assert torch.equal(g_out(bundle.generator), g_out(G))
    assert torch.equal(d_out(bundle.networks["D"]), d_out(D))


def test_positional_constructor_args_are_named(tmp_path):
    G = make_tiny_G(6).eval()
    record = to_persistent(G, init_kwargs={k: v for k, v in G.init_kwargs.items() if k.endswith("_kwargs")})
    record.state["_init_args"] = (32, 0, 32, 32, 3)
    src = dump_official(tmp_path / "positional.pkl", {"G_ema": record})
    bundle = load_checkpoint(src)
    assert bundle.specs["G_ema"].init_kwargs == G.init_kwargs
    assert torch.equal(g_out(bundle.generator), g_out(G))


@pytest.mark.parametrize("hidden", [False, True])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, hidden):
    marker = tmp_path / "pwned"
    src = make_malicious_pickle(tmp_path / "evil.pkl", marker, G=make_tiny_G() if hidden else None)
    with pytest.raises(FewshotError, match=r"posix\.system") as info:
        load_checkpoint(src)
    assert "allow-list" in str(info.value)
    with pytest.raises(FewshotError):
        convert_pickle(src, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


class _Shell:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _legacy_torch_blob(obj):
    """What a storage pickles to in an official snapshot: a legacy ``torch.save`` archive, as bytes."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


class _HiddenBlob:
    """Pickles as ``torch.storage._load_from_bytes(blob)``, the one allowed global that reads nested bytes."""

    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.blob,))


def test_pickle_hiding_code_in_a_torch_blob_is_refused_in_fewshots_words(tmp_path):
    marker = tmp_path / "pwned"
    record = to_persistent(make_tiny_G().eval(), init_kwargs=make_tiny_G().init_kwargs)
    record.state["_payload"] = _HiddenBlob(_legacy_torch_blob({"w": _Shell(f"touch '{marker}'")}))
    src = dump_official(tmp_path / "blob.pkl", {"G_ema": record})
    with pytest.raises(FewshotError) as info:
        load_checkpoint(src)
    error = info.value
    # torch's own refusal runs to 7 lines and advises weights_only=False; fewshot says one line of its own.
    assert "posix.system" in error.message and "nothing from the file was executed" in error.message
    assert "\n" not in str(error) and "weights_only" not in str(error) and "weights only" not in str(error).lower()
    assert not marker.exists()

    record.state["_payload"] = _HiddenBlob(b"\x80\x02 not a torch archive")
    src = dump_official(tmp_path / "damaged.pkl", {"G_ema": record})
    with pytest.raises(FewshotError, match="corrupt tensor data in pickle") as info:
        load_checkpoint(src)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_weights_files_with_code_are_refused_in_fewshots_words(tmp_path):
    """The frozen networks' weight files are torch.save archives too: same refusal, same words."""
    from fewshot.extractors import read_state_dict

    marker = tmp_path / "pwned"
    evil = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Shell(f"touch '{marker}'")}, evil)
    junk = tmp_path / "vgg16-397923af.pth"
    junk.write_bytes(b"not weights at all")
    for read in (read_state_dict, lambda path: read_state_dict(path, "vgg16")):
        with pytest.raises(FewshotError, match=r"refusing to load .*posix\.system") as info:
            read(evil)
        assert str(evil) in info.value.message and "\n" not in str(info.value)
        assert "weights_only" not in str(info.value)
        with pytest.raises(FewshotError, match="cannot read") as info:
            read(junk)
        assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()


def test_pickles_that_are_not_networks(tmp_path):
    cases = {
        "list.pkl": ([1, 2, 3], "expected a dict of networks"),
        "nothing.pkl": ({"training_set_kwargs": None}, "no G, D or G_ema"),
        "wrong.pkl": ({"G": 5}, "not a persistent network object"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(FewshotError, match=message):
            load_checkpoint(dump_official(tmp_path / name, data))
    other = to_persistent(torch.nn.Linear(2, 2), class_name="AugmentPipe")
    with pytest.raises(FewshotError, match="not a StyleGAN2 or StyleGAN3 network"):
        load_checkpoint(dump_official(tmp_path / "aug.pkl", {"G": other}))


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save's legacy format starts with this number pickled


def legacy_preamble() -> bytes:
    """The magic, protocol and system-info pickles a legacy torch.save record starts with."""
    import pickle

    return b"".join(pickle.dumps(part, protocol=2) for part in (
        LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}))


def legacy_storage_record(claimed: int, stored: int, keys: tuple[str, ...] = ("0",)) -> bytes:
    """A torch.save record of one float32 storage, as official pickles embed them: magic, protocol and
    system-info pickles, the storage's persistent id claiming ``claimed`` elements, its keys, its bytes."""
    import io
    import pickle

    buf = io.BytesIO(legacy_preamble())
    buf.seek(0, io.SEEK_END)

    class StoragePickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", claimed, None) if obj == "the storage" else None

    StoragePickler(buf, protocol=2).dump("the storage")
    pickle.dump(list(keys), buf, protocol=2)
    buf.write(struct.pack("<q", stored) + np.arange(stored, dtype=np.float32).tobytes())
    return buf.getvalue()


class _StorageFromBytes:
    """Pickles as ``torch.storage._load_from_bytes(record)``, as a tensor's storage does in a snapshot."""

    def __init__(self, record: bytes) -> None:
        self.record = record

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.record,))


def test_a_storage_record_is_read_and_its_claims_are_checked_first(tmp_path):
    import pickle

    from fewshot.official_pickle import safe_load

    storage = safe_load(pickle.dumps({"s": _StorageFromBytes(legacy_storage_record(4, 4))}, protocol=3))["s"]
    assert storage.tolist() == [0.0, 1.0, 2.0, 3.0]  # the record format is right, so the cases below are real
    # Found by fuzz/fuzz_pickle.py: torch allocates the claimed size before it reads a byte (here 4 TiB).
    with pytest.raises(FewshotError, match="claims 4,398,046,511,104"):
        safe_load(pickle.dumps(_StorageFromBytes(legacy_storage_record(2**40, 4)), protocol=3))
    # Found by fuzz/fuzz_pickle.py: the record's own pickles are read with the same bounds (a BYTEARRAY8
    # claiming 1 TiB was allocated there).
    with pytest.raises(FewshotError, match="corrupt tensor data in pickle .*truncated"):
        safe_load(pickle.dumps(_StorageFromBytes(legacy_preamble() + b"\x80\x05\x96" + struct.pack("<Q", 2**40)
                                                 + b"abc."), protocol=3))
    # Found by fuzz/fuzz_pickle.py: a key list naming no storage was an AssertionError inside torch.load.
    with pytest.raises(FewshotError, match="corrupt tensor data in pickle"):
        safe_load(pickle.dumps(_StorageFromBytes(legacy_storage_record(4, 4, keys=("1",))), protocol=3))


class _TensorRecord:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, {}, metadata)``."""

    def __init__(self, storage: _StorageFromBytes, size: tuple[int, ...], metadata) -> None:
        self.args = (storage, 0, size, (1,) * len(size), False, collections.OrderedDict(), metadata)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def test_a_damaged_tensor_record_is_one_error():
    import pickle

    from fewshot.official_pickle import safe_load

    storage = _StorageFromBytes(legacy_storage_record(4, 4))
    good = safe_load(pickle.dumps(_TensorRecord(storage, (4,), None), protocol=3))
    assert good.tolist() == [0.0, 1.0, 2.0, 3.0]  # the record is right, so the case below is real
    # Found by fuzz/fuzz_pickle.py: metadata that is not a dict was an AssertionError inside torch.
    with pytest.raises(FewshotError, match="corrupt tensor record in pickle .*expected dict"):
        safe_load(pickle.dumps(_TensorRecord(storage, (4,), True), protocol=3))


def test_a_pickle_memo_index_does_not_size_memory(tmp_path):
    """Found by fuzz/fuzz_pickle.py (the process was OOM-killed): the C unpickler sizes its memo table from
    the index a LONG_BINPUT names and zeroes it; 2**27 - 1 asked for 2 GiB from a 10-byte file."""
    import resource

    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x03N" + b"r" + struct.pack("<I", 2**27 - 1) + b".")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FewshotError, match="expected a dict of networks"):
        load_checkpoint(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 256  # MiB (ru_maxrss: KiB)


@pytest.mark.parametrize("data,message", [
    # Found by fuzz/fuzz_pickle.py: lengths claimed by opcodes were read (allocated) before being checked.
    (b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc", "not a readable network pickle"),  # BINBYTES8
    (b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"abc.", "truncated"),  # BYTEARRAY8
    # The pure-Python unpickler the memo fix needs fails differently on these: OverflowError, struct.error.
    (b"\x80\x05\x96" + struct.pack("<Q", 2**64 - 1) + b"abc.", "maximum size"),
    (b"\x80\x03j\x01", "not a readable network pickle"),  # LONG_BINGET cut short
])
def test_damaged_pickle_opcodes_are_one_error(tmp_path, data, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(data)
    with pytest.raises(FewshotError, match=message):
        load_checkpoint(path)


def test_a_numpy_dtype_state_from_the_file_never_reaches_numpy(tmp_path):
    """Found by fuzz/fuzz_pickle.py (a segfault): BUILD passed the file's state tuple to numpy's
    dtype.__setstate__, which trusts its sizes. Only the byte order of a plain number type is taken now;
    this state (item size 8 for float64) is harmless to numpy, so the refusal shows it never got there."""
    raw = dump_official(tmp_path / "ok.pkl", {"G_ema": np.float64(1.5)}).read_bytes()
    plain_state = b"J\xff\xff\xff\xffJ\xff\xff\xff\xff"  # the (..., -1, -1, ...) item size and alignment
    assert raw.count(plain_state) == 1
    path = tmp_path / "odd.pkl"
    path.write_bytes(raw.replace(plain_state, b"K\x08K\x08"))
    with pytest.raises(FewshotError, match="numpy dtype with an unusual layout"):
        load_checkpoint(path)
    with pytest.raises(FewshotError, match="not a persistent network object"):  # the plain one still reads
        load_checkpoint(tmp_path / "ok.pkl")


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_torch_zip_detected_by_magic(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a", "b")
    assert checkpoint.detect_format(path) == "torch-zip"


def test_a_bundle_whose_header_length_starts_with_a_pickle_byte_is_still_a_bundle(tmp_path):
    """1 bundle in 256 has a header length whose low byte is 0x80, a pickle's PROTO opcode (a run's
    final.safetensors once failed to load as "unsupported pickle protocol: 156")."""
    G = make_tiny_G()
    for pad in range(512):
        path = tmp_path / f"G{pad}.safetensors"
        save_bundle(path, {"G": G}, provenance={"note": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
        path.unlink()
    else:
        pytest.fail("no padding gave a header length with low byte 0x80")
    assert checkpoint.detect_format(path) == "safetensors"
    loaded = load_checkpoint(path)
    for key, value in G.state_dict().items():
        assert torch.equal(loaded.networks["G"].state_dict()[key], value), key
    for protocol in (2, 3, 4, 5):  # and real pickles of every protocol stay pickles
        pickled = tmp_path / f"p{protocol}.pkl"
        pickled.write_bytes(__import__("pickle").dumps({"a": 1}, protocol=protocol))
        assert checkpoint.detect_format(pickled) == "pickle"
