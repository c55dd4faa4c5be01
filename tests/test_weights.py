"""fewshot.weights: resolution order, verification, offline errors, import, download over loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_hub import LoopbackServer, _cli, hub_env, loopback_server, write_registry  # noqa: F401

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

    own.write_bytes(b"bit rot")  # verify re-hashes, reports, removes the bad cached copy, exits non-zero
    code, out = _cli("weights", "verify", "tinynet")
    assert code != 0 and "mismatch" in out and not own.exists()
