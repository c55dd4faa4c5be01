"""fewshot.weights: resolution order, verification, offline errors, import, download over loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hub import (  # noqa: F401
    FAILS_FAST_S,
    UNRESOLVABLE,
    LoopbackServer,
    _cli,
    hub_env,
    loopback_server,
    tiny_bundle_bytes,
    write_registry,
)

from fewshot.errors import FewshotError

PAYLOAD = b"pretend these are frozen network weights\n" * 100
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]
FILENAME = f"tinynet-{PREFIX}.pth"


@pytest.fixture
def tiny_registry(hub_env: Path, loopback_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A torchvision-style entry (hash prefix in the name) served by the loopback server."""
    loopback_server.files[f"/models/{FILENAME}"] = PAYLOAD
    path = write_registry(hub_env / "weights.toml", {
        "tinynet": {"filename": FILENAME, "url": f"{loopback_server.url}/models/{FILENAME}", "sha256_prefix": PREFIX,
                    "library_caches": ["torch_hub"]},
        "tinyface": {"filename": "tinyface.pt", "url": f"{loopback_server.url}/models/tinyface.pt",
                     "library_caches": ["torch_checkpoints"]},
    })
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(path))
    return hub_env


def test_builtin_registry_has_every_documented_name() -> None:
    from fewshot.weights import weights_registry

    entries = weights_registry()
    assert {"inception-v3-fid", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
            "clip-rn50", "clip-vit-b32", "facenet-vggface2"} <= set(entries)
    for entry in entries.values():
        assert entry.url.startswith("https://") and entry.filename in entry.url
        if entry.sha256:  # full hashes only where the source publishes them (OpenAI's URL path)
            assert len(entry.sha256) == 64 and entry.sha256 in entry.url
        if entry.sha256_prefix:
            assert f"-{entry.sha256_prefix}." in entry.filename
    assert entries["facenet-vggface2"].sha256 is None and entries["facenet-vggface2"].sha256_prefix is None


def test_offline_missing_error_names_file_place_and_import_command(hub_env: Path,  # noqa: F811
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.weights import resolve_weights

    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    with pytest.raises(FewshotError) as info:
        resolve_weights("inception-v3-fid")
    text = str(info.value)
    assert "inception-v3-fid" in text and "pt_inception-2015-12-05-6726825d.pth" in text
    assert "fewshot weights import inception-v3-fid" in text and "FEWSHOT_WEIGHTS_INCEPTION_V3_FID" in text
    assert str(hub_env / "fewshot_home" / "weights") in text
    own = hub_env / "fewshot_home" / "weights" / "pt_inception-2015-12-05-6726825d.pth"
    torch_hub = hub_env / "torch_home" / "hub" / "checkpoints" / own.name
    message, hint = info.value.message, info.value.hint or ""
    assert str(own) in message and str(torch_hub) in message and "mseitzer/pytorch-fid/releases" in message
    assert f"`fewshot weights fetch inception-v3-fid` and copy the file it prints to {own}" in hint
    assert "$FEWSHOT_HOME" in hint and "~/.cache/fewshot" in hint
    with pytest.raises(FewshotError, match="unknown weights"):
        resolve_weights("resnet9000")


def test_resolution_order_and_verification(tiny_registry: Path, loopback_server: LoopbackServer,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.weights import resolve_weights

    root = tiny_registry
    torch_hub_copy = root / "torch_home" / "hub" / "checkpoints" / FILENAME
    torch_hub_copy.parent.mkdir(parents=True)
    torch_hub_copy.write_bytes(PAYLOAD)
    assert resolve_weights("tinynet") == torch_hub_copy  # library cache before any download

    own = root / "fewshot_home" / "weights" / FILENAME
    own.parent.mkdir(parents=True)
    own.write_bytes(PAYLOAD)
    assert resolve_weights("tinynet") == own  # fewshot's cache before library caches

    env_copy = root / "elsewhere.pth"
    env_copy.write_bytes(PAYLOAD)
    monkeypatch.setenv("FEWSHOT_WEIGHTS_TINYNET", str(env_copy))
    assert resolve_weights("tinynet") == env_copy  # environment before caches

    explicit = root / "explicit.pth"
    explicit.write_bytes(PAYLOAD)
    assert resolve_weights("tinynet", explicit) == explicit  # explicit path first of all

    bad = root / "bad.pth"
    bad.write_bytes(b"something else")
    with pytest.raises(FewshotError, match="sha256"):
        resolve_weights("tinynet", bad)
    monkeypatch.setenv("FEWSHOT_WEIGHTS_TINYNET", str(bad))
    with pytest.raises(FewshotError, match="sha256"):
        resolve_weights("tinynet")
    assert bad.exists()  # never delete a file fewshot does not own
    assert loopback_server.requests == []

    # facenet-style: $TORCH_HOME/checkpoints, no published hash (accepted, reported unverified)
    face = root / "torch_home" / "checkpoints" / "tinyface.pt"
    face.parent.mkdir(parents=True)
    face.write_bytes(b"face weights")
    assert resolve_weights("tinyface") == face


def test_bad_file_in_own_cache_is_removed_then_downloaded(tiny_registry: Path,
                                                          loopback_server: LoopbackServer) -> None:  # noqa: F811
    from fewshot.weights import resolve_weights

    own = tiny_registry / "fewshot_home" / "weights" / FILENAME
    own.parent.mkdir(parents=True)
    own.write_bytes(b"truncated")
    path = resolve_weights("tinynet")
    assert path == own and own.read_bytes() == PAYLOAD
    assert len(loopback_server.gets(f"/models/{FILENAME}")) == 1


def test_corrupted_download_refused(tiny_registry: Path, loopback_server: LoopbackServer,  # noqa: F811
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.weights import resolve_weights

    loopback_server.files[f"/models/{FILENAME}"] = PAYLOAD[:-1] + b"?"
    with pytest.raises(FewshotError, match="sha256 mismatch"):
        resolve_weights("tinynet")
    assert not list((tiny_registry / "fewshot_home" / "weights").glob("tinynet*"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FewshotError, match="downloads are off"):
        resolve_weights("tinynet")


def test_unresolvable_weights_host_fails_fast_with_file_url_cache_and_remedies(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from fewshot.hub import FetchError
    from fewshot.weights import resolve_weights

    url = f"{UNRESOLVABLE}/models/{FILENAME}"
    registry = write_registry(hub_env / "weights.toml", {"tinynet": {"filename": FILENAME, "url": url,
                                                                     "sha256_prefix": PREFIX}})
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        resolve_weights("tinynet", flag="--reg-weights FILE")
    assert time.monotonic() - start < FAILS_FAST_S  # a bound on retries: one failed lookup, not a loop
    own = hub_env / "fewshot_home" / "weights" / FILENAME
    message, hint = info.value.message, info.value.hint or ""
    assert message.startswith(f"weights 'tinynet' ({FILENAME}): not in the cache ({own})")
    assert url in message and "host nonexistent.invalid does not resolve" in message
    assert "`fewshot weights fetch tinynet`" in hint and "`fewshot weights import tinynet FILE`" in hint
    assert "FEWSHOT_WEIGHTS_TINYNET=/path/to/" + FILENAME in hint and hint.endswith("; or pass --reg-weights FILE")
    assert not own.exists() and not own.with_name(own.name + ".part").exists()


def _offline_empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    for name in ("RESNET18", "VGG16", "INCEPTION_V3_FID"):
        monkeypatch.delenv(f"FEWSHOT_WEIGHTS_{name}", raising=False)


def test_callers_of_the_weights_registry_offer_their_own_option(hub_env: Path,  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Reg-DGM, DISP and `fewshot metrics` each add the option they take for a weights file to the hint."""
    import torch

    from fewshot.disp.bank import build_prior_bank
    from fewshot.hub import FetchError
    from fewshot.regularizers.reg_dgm import build_reg_dgm

    _offline_empty_cache(monkeypatch)
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(FetchError) as info:
        build_reg_dgm(model="resnet18", lam=1.0, real_images=images)
    assert "resnet18-f37072fd.pth" in info.value.message and (info.value.hint or "").endswith("pass --reg-weights FILE")
    with pytest.raises(FetchError) as info:
        build_prior_bank(images, "vgg16")
    assert "vgg16-397923af.pth" in info.value.message
    assert (info.value.hint or "").endswith("pass --set disp_weights=FILE")

    from PIL import Image

    from fewshot.disp.bank import PriorBank
    from fewshot.disp.priors import image_priors

    data = hub_env / "reals"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(data / f"{i}.png")
    bank = PriorBank(torch.zeros(2, 4096), "vgg16", "0" * 64, num_images=2, mirrored=False)
    with pytest.raises(FetchError) as info:  # `fewshot sample --prior IMAGE` on a DISP bundle
        image_priors([data / "0.png"], bank, 32)
    assert (info.value.hint or "").endswith("pass --prior-weights FILE")

    bundle, _ = tiny_bundle_bytes(hub_env)
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    for metric, filename, flag in (("fid", "pt_inception-2015-12-05-6726825d.pth", "--inception-weights FILE"),
                                   ("pr", "vgg16-397923af.pth", "--vgg-weights FILE")):
        result = CliRunner().invoke(app, ["metrics", str(bundle), "--data", str(data), "--metrics", metric, "-q"])
        assert isinstance(result.exception, FetchError), result.output  # what the entry point renders in 2 lines
        assert filename in result.exception.message and (result.exception.hint or "").endswith(f"pass {flag}")


def test_cli_fetch_offline_is_one_error_line_and_one_hint(hub_env: Path) -> None:  # noqa: F811
    env = {**os.environ, "FEWSHOT_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("FEWSHOT_WEIGHTS_RESNET18", None)
    done = subprocess.run([sys.executable, "-m", "fewshot", "weights", "fetch", "resnet18"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), done.stderr
    own = hub_env / "fewshot_home" / "weights" / "resnet18-f37072fd.pth"
    assert "resnet18-f37072fd.pth" in lines[0] and str(own) in lines[0] and "downloads are off" in lines[0]
    assert "`fewshot weights fetch resnet18`" in lines[1] and "`fewshot weights import resnet18 FILE`" in lines[1]
    assert "FEWSHOT_WEIGHTS_RESNET18=" in lines[1]


def test_cli_import_fetch_verify_list(tiny_registry: Path) -> None:
    good = tiny_registry / "download.pth"
    good.write_bytes(PAYLOAD)
    bad = tiny_registry / "other.pth"
    bad.write_bytes(b"nope")

    code, out = _cli("weights", "import", "tinynet", str(bad))
    assert code != 0
    code, out = _cli("weights", "import", "tinynet", str(good))
    assert code == 0 and "imported" in out
    own = tiny_registry / "fewshot_home" / "weights" / FILENAME
    assert own.read_bytes() == PAYLOAD

    code, out = _cli("weights", "fetch", "tinynet")
    assert code == 0 and out.strip() == str(own)
    code, out = _cli("weights", "verify", "tinynet")
    assert code == 0 and "ok" in out
    code, out = _cli("weights", "list")
    assert code == 0 and "tinynet" in out and "inception-v3-fid" in out
    assert f"checked against the sha256 prefix {PREFIX} in its file name" in out
    assert "not checked: no published hash" in out  # tinyface, like facenet-vggface2
    assert "verified by" not in out

    own.write_bytes(b"bit rot")  # verify re-hashes, reports, removes the bad cached copy, exits non-zero
    code, out = _cli("weights", "verify", "tinynet")
    assert code != 0 and "mismatch" in out and not own.exists()
