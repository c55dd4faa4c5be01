"""fewshot.hub: references -> local bundles, with loopback servers instead of the network.

The server binds 127.0.0.1 only, answers a bounded number of requests and shuts itself down after
a deadline, so a failing test can never leave it running or reach outside the machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import make_tiny_D, make_tiny_G

from fewshot.errors import FewshotError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
MAX_REQUESTS = 200
DEADLINE_S = 120.0


@dataclass
class LoopbackServer:
    """Serves ``files`` (URL path -> bytes) plainly and under the Hub's ``/{repo}/resolve/{rev}/{file}`` route."""

    files: dict[str, bytes] = field(default_factory=dict)
    hub_files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo_id, filename) -> bytes
    cut_first_gets: int = 0  # this many GETs stop after half the body (a dropped connection)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    url: str = ""

    def gets(self, path: str) -> list[str | None]:
        return [rng for method, p, rng in self.requests if method == "GET" and p == path]


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    state = LoopbackServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _lookup(self) -> tuple[bytes | None, dict[str, str]]:
            path = self.path.split("?")[0]
            match = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if match:
                body = state.hub_files.get((match.group(2), match.group(4)))
                if body is None:
                    return None, {"X-Error-Code": "EntryNotFound"}
                etag = hashlib.sha256(body).hexdigest()
                return body, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"'}
            return state.files.get(path), {}

        def _respond(self, with_body: bool) -> None:
            with lock:
                state.requests.append((self.command, self.path.split("?")[0], self.headers.get("Range")))
                too_many = len(state.requests) > MAX_REQUESTS
                cut = False
                if with_body and state.cut_first_gets > 0:
                    state.cut_first_gets -= 1
                    cut = True
            body, headers = self._lookup()
            if too_many or body is None:
                self.send_response(503 if too_many else 404)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
                start, status = int(m.group(1)), 206
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            payload = body[start:]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not with_body:
                return
            if cut:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            self._respond(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._respond(False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    watchdog = threading.Timer(DEADLINE_S, server.shutdown)  # stops itself even if the test hangs
    watchdog.daemon = True
    watchdog.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every cache under tmp_path; no offline flags, proxies or endpoint from the outer environment."""
    for var in ("FEWSHOT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "FEWSHOT_CHECKPOINT_REGISTRY", "FEWSHOT_WEIGHTS_REGISTRY", "HF_TOKEN",
                "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "fewshot_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # The compiled CPU ops build under FEWSHOT_HOME: in this fresh one every sample grid would rebuild them
    # (about a minute). What these tests check does not depend on the ops; tests/test_ops.py covers them.
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    return tmp_path


def tiny_bundle_bytes(tmp_path: Path, training: dict | None = None, name: str = "tiny.safetensors") -> tuple[Path, bytes]:
    from fewshot.checkpoint import save_bundle

    path = tmp_path / name
    G = make_tiny_G(0).eval()
    save_bundle(path, {"G": G, "G_ema": G, "D": make_tiny_D(0)}, provenance={"note": "test"}, training=training)
    return path, path.read_bytes()


def tiny_pickle_bytes(tmp_path: Path) -> bytes:
    from official_format import make_official_pickle

    G = make_tiny_G(1).eval()
    path = make_official_pickle(tmp_path / "snap.pkl", G=G, D=make_tiny_D(1), G_ema=G, augment_p=0.25)
    return path.read_bytes()


def write_registry(path: Path, entries: dict[str, dict]) -> Path:
    lines = []
    for name, table in entries.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- plain URLs ---------------------------------------------------------------------------------------


def test_url_download_interrupted_midway_then_resumed(hub_env: Path, loopback_server: LoopbackServer) -> None:
    from fewshot.hub import download_url, url_cache_path

    _, body = tiny_bundle_bytes(hub_env)
    loopback_server.files["/nets/tiny.safetensors"] = body
    loopback_server.cut_first_gets = 1
    url = loopback_server.url + "/nets/tiny.safetensors"

    with pytest.raises(FewshotError, match="interrupted") as info:
        download_url(url, attempts=1, progress=False)
    assert "again to resume" in (info.value.hint or "")
    dest = url_cache_path(url)
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists() and part.stat().st_size == len(body) // 2

    path = download_url(url, sha256=hashlib.sha256(body).hexdigest(), progress=False)
    assert path == dest and path.read_bytes() == body and not part.exists()
    assert loopback_server.gets("/nets/tiny.safetensors") == [None, f"bytes={len(body) // 2}-"]


def test_url_download_retries_within_one_call(hub_env: Path, loopback_server: LoopbackServer) -> None:
    from fewshot.hub import download_url

    _, body = tiny_bundle_bytes(hub_env)
    loopback_server.files["/a/tiny.safetensors"] = body
    loopback_server.cut_first_gets = 2  # 1/2 then 1/4 more arrive, the third request finishes
    path = download_url(loopback_server.url + "/a/tiny.safetensors", progress=False)
    assert path.read_bytes() == body
    ranges = loopback_server.gets("/a/tiny.safetensors")
    assert ranges[0] is None and len(ranges) == 3 and all(r and r.startswith("bytes=") for r in ranges[1:])


def test_corrupted_download_is_rejected_and_removed(hub_env: Path, loopback_server: LoopbackServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.hub import resolve_checkpoint, url_cache_path

    _, body = tiny_bundle_bytes(hub_env)
    good = hashlib.sha256(body).hexdigest()
    corrupted = body[:-10] + b"\0" * 10
    loopback_server.files["/c/tiny.safetensors"] = corrupted
    url = loopback_server.url + "/c/tiny.safetensors"
    registry = write_registry(hub_env / "reg.toml", {"tinynet": {"url": url, "sha256": good, "resolution": 32}})
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_REGISTRY", str(registry))
    with pytest.raises(FewshotError, match="sha256 mismatch"):
        resolve_checkpoint("tinynet")
    dest = url_cache_path(url)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()

    # Served correctly now: accepted. Then the cached copy is damaged on disk: noticed, removed, refetched.
    loopback_server.files["/c/tiny.safetensors"] = body
    assert resolve_checkpoint("tinynet") == dest
    dest.write_bytes(corrupted)
    assert resolve_checkpoint("tinynet") == dest and dest.read_bytes() == body
    assert len(loopback_server.gets("/c/tiny.safetensors")) == 3


def test_registry_name_resolves_then_works_offline(hub_env: Path, loopback_server: LoopbackServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.checkpoint import load_bundle
    from fewshot.hub import checkpoint_registry, resolve_checkpoint

    _, body = tiny_bundle_bytes(hub_env)
    loopback_server.files["/r/ffhq-tiny.safetensors"] = body
    url = loopback_server.url + "/r/ffhq-tiny.safetensors"
    # The override replaces the built-in ffhq256 entry: the real name resolves against the loopback server.
    registry = write_registry(hub_env / "reg.toml", {"ffhq256": {"url": url, "resolution": 32, "config": "paper256"}})
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_REGISTRY", str(registry))
    assert checkpoint_registry()["ffhq256"].url == url and "metfaces" in checkpoint_registry()

    path = resolve_checkpoint("ffhq256")
    assert path.read_bytes() == body and load_bundle(path).generator.img_resolution == 32
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    assert resolve_checkpoint("ffhq256") == path
    assert len(loopback_server.requests) == 1

    with pytest.raises(FewshotError, match="downloads are off") as info:
        resolve_checkpoint("afhqdog")  # a real entry never downloaded: the error says where the file goes
    assert "afhqdog.pkl" in (info.value.hint or "")


def test_official_pickle_downloaded_is_converted_once_and_found_offline(
    hub_env: Path, loopback_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewshot.checkpoint import load_bundle, read_header
    from fewshot.hub import resolve_checkpoint

    pkl = tiny_pickle_bytes(hub_env)
    loopback_server.files["/p/network-snapshot-000100.pkl"] = pkl
    url = loopback_server.url + "/p/network-snapshot-000100.pkl"

    path = resolve_checkpoint(url)
    digest = hashlib.sha256(pkl).hexdigest()
    assert path.name == f"{digest}.safetensors" and path.parent.name == "converted"
    header = read_header(path)
    assert header.provenance["source_sha256"] == digest and header.training["augment_p"] == pytest.approx(0.25)
    assert set(load_bundle(path).networks) == {"G", "G_ema", "D"}
    stamp = path.stat().st_mtime_ns

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import fewshot.checkpoint as checkpoint_module

    def no_second_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(checkpoint_module, "convert_pickle", no_second_conversion)
    assert resolve_checkpoint(url) == path and path.stat().st_mtime_ns == stamp
    assert len(loopback_server.gets("/p/network-snapshot-000100.pkl")) == 1


def test_local_paths_and_bad_references(hub_env: Path) -> None:
    from fewshot.hub import resolve_checkpoint

    bundle, _ = tiny_bundle_bytes(hub_env)
    assert resolve_checkpoint(str(bundle)) == bundle
    pkl = hub_env / "user" / "snap.pkl"
    pkl.parent.mkdir()
    pkl.write_bytes(tiny_pickle_bytes(hub_env))
    converted = resolve_checkpoint(str(pkl))
    assert converted.parent.name == "converted" and resolve_checkpoint(str(pkl)) == converted
    assert sorted(p.name for p in pkl.parent.iterdir()) == ["snap.pkl"]  # nothing written beside the user's file
    junk = hub_env / "notes.txt"
    junk.write_text("not a network")
    with pytest.raises(FewshotError, match="not a checkpoint"):
        resolve_checkpoint(str(junk))
    with pytest.raises(FewshotError, match="unknown checkpoint reference") as info:
        resolve_checkpoint("ffhq-256")
    assert "ffhq256" in (info.value.hint or "")
    with pytest.raises(FewshotError, match="no such checkpoint file") as info:
        resolve_checkpoint(str(hub_env / "nowhere" / "missing.safetensors"))
    assert info.value.hint is None  # no folder, nothing to suggest
    stopped = hub_env / "runs" / "00003-stopped"  # stopped before its end: snapshots, no final.safetensors
    (stopped / "checkpoints").mkdir(parents=True)
    (stopped / "checkpoints" / "snapshot-000000512.safetensors").write_bytes(b"")
    with pytest.raises(FewshotError, match="no such checkpoint file") as info:
        resolve_checkpoint(str(stopped / "final.safetensors"))
    assert "snapshot-000000512.safetensors" in info.value.hint and "a run folder works too" in info.value.hint
    with pytest.raises(FewshotError, match="incomplete hf://"):
        resolve_checkpoint("hf://org/repo")


def test_references_from_any_command_line_bytes_are_one_error(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by fuzz/fuzz_hub.py: argv decodes undecodable bytes to surrogate escapes, which made hashing a
    URL raise UnicodeEncodeError, and ``~name`` of no user made pathlib raise RuntimeError."""
    from fewshot.hub import resolve_checkpoint

    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    url = b"https://example.com/n\xe9t.pkl".decode("utf-8", "surrogateescape")
    with pytest.raises(FewshotError, match="not in the cache .*downloads are off"):
        resolve_checkpoint(url)
    for ref in ("~no-such-user-fewshot/net.pkl", "~a\x00b/net.pkl"):
        with pytest.raises(FewshotError, match="no such checkpoint file"):
            resolve_checkpoint(ref)
    # Found by fuzz/fuzz_hub.py: a name too long for the file system (ENAMETOOLONG) escaped pathlib's is_file().
    with pytest.raises(FewshotError, match="unknown checkpoint reference"):
        resolve_checkpoint("hf" + "\udcff" * 300 + ":")
    with pytest.raises(FewshotError, match="no such checkpoint file"):
        resolve_checkpoint("x" * 5000 + ".pkl")


def test_a_url_cache_file_stays_inside_its_folder(tmp_path: Path) -> None:
    """Found by fuzz/fuzz_hub.py's invariant: a URL ending in ``/..`` or ``/.`` named the URL's cache
    folder's parent (or the folder itself) as the file to download into."""
    from fewshot.hub import url_cache_path

    for url in ("https://host/a/..", "https://host/a/.", "https://host/..?x=1"):
        path = url_cache_path(url, tmp_path)
        assert path.parent.parent == tmp_path and path.name == "download", (url, path)
    assert url_cache_path("https://host/a/net.pkl?dl=1", tmp_path).name == "net.pkl"


# --- hf:// ----------------------------------------------------------------------------------------------


def test_hf_reference_downloads_through_hub_routes(hub_env: Path, loopback_server: LoopbackServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.hub import parse_hf_ref, resolve_checkpoint

    _, body = tiny_bundle_bytes(hub_env)
    loopback_server.hub_files[("someone/tiny-gan", "nets/tiny.safetensors")] = body
    monkeypatch.setenv("HF_ENDPOINT", loopback_server.url)

    ref = f"hf://someone/tiny-gan/nets/tiny.safetensors@{COMMIT}"
    assert parse_hf_ref(ref).revision == COMMIT and parse_hf_ref(ref).filename == "nets/tiny.safetensors"
    path = resolve_checkpoint(ref)
    assert path.read_bytes() == body
    assert str(hub_env / "hf_home" / "hub" / "models--someone--tiny-gan" / "snapshots" / COMMIT) in str(path)
    assert any(p == f"/someone/tiny-gan/resolve/{COMMIT}/nets/tiny.safetensors" for _, p, _ in loopback_server.requests)

    with pytest.raises(FewshotError):
        resolve_checkpoint("hf://someone/tiny-gan/missing.pkl")


def test_hf_offline_uses_prepopulated_cache_with_pinned_revisions(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.hub import resolve_checkpoint

    _, body = tiny_bundle_bytes(hub_env)
    repo = hub_env / "hf_home" / "hub" / "models--org--gan"
    blob = repo / "blobs" / hashlib.sha256(body).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(body)
    snapshot = repo / "snapshots" / COMMIT / "G.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would fail loudly if anything were fetched

    assert resolve_checkpoint(f"hf://org/gan/G.safetensors@{COMMIT}").read_bytes() == body
    assert resolve_checkpoint("hf://org/gan/G.safetensors").read_bytes() == body  # main -> refs/main
    other = "fedcba9876543210fedcba9876543210fedcba98"
    with pytest.raises(FewshotError, match="not in the Hugging Face cache") as info:
        resolve_checkpoint(f"hf://org/gan/G.safetensors@{other}")
    assert "fewshot download" in (info.value.hint or "")


# --- failed fetches ---------------------------------------------------------------------------------------
# An unresolvable name: `.invalid` is reserved (RFC 2606) and never resolves, so no test reaches outside.
UNRESOLVABLE = "http://nonexistent.invalid"
# A bound on a retry loop, not a benchmark: huggingface_hub's own loop takes ~25 s, one failed lookup
# well under a second; the probe's lookup is cut off at 4 s even where a resolver never answers.
FAILS_FAST_S = 5.0


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_checkpoint_name_error_names_file_url_cache_and_remedies(hub_env: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.hub import FetchError, checkpoint_registry, resolve_checkpoint, url_cache_path

    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    entry = checkpoint_registry()["ffhq256"]
    cache = url_cache_path(entry.url)
    with pytest.raises(FetchError) as info:
        resolve_checkpoint("ffhq256", flag="--base PATH")
    error = info.value
    assert error.message.count("\n") == 0 and "ffhq-res256-mirror-paper256-noaug.pkl" in error.message
    assert entry.url in error.message and str(cache) in error.message and "downloads are off" in error.message
    hint = error.hint or ""
    assert "`fewshot download ffhq256`" in hint and "$FEWSHOT_HOME" in hint and "~/.cache/fewshot" in hint
    assert str(cache.relative_to(hub_env / "fewshot_home")) in hint  # the same place in the other machine's cache
    assert hint.endswith("pass it as --base PATH")
    with pytest.raises(FetchError) as info:  # without a flag: the reference itself is what to replace
        resolve_checkpoint("ffhq256")
    assert "--base" not in (info.value.hint or "") and "in place of 'ffhq256'" in (info.value.hint or "")


def test_unresolvable_or_closed_host_fails_fast_with_the_file_and_cache_named(hub_env: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.hub import FetchError, resolve_checkpoint, url_cache_path

    unresolvable = f"{UNRESOLVABLE}/nets/far-away.pkl"
    closed = f"http://127.0.0.1:{_closed_port()}/nets/nobody-home.pkl"
    registry = write_registry(hub_env / "reg.toml", {"faraway": {"url": unresolvable}, "closed": {"url": closed}})
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_REGISTRY", str(registry))
    for name, url, reason in (("faraway", unresolvable, "host nonexistent.invalid does not resolve"),
                              ("closed", closed, "no connection to 127.0.0.1")):
        start = time.monotonic()
        with pytest.raises(FetchError) as info:
            resolve_checkpoint(name)
        assert time.monotonic() - start < FAILS_FAST_S
        message = info.value.message
        assert reason in message and url in message and str(url_cache_path(url)) in message
        assert f"`fewshot download {name}`" in (info.value.hint or "")
        assert not url_cache_path(url).with_name(url_cache_path(url).name + ".part").exists()


def test_http_error_is_one_fetch_error_naming_url_and_cache(hub_env: Path, loopback_server: LoopbackServer) -> None:
    from fewshot.hub import FetchError, resolve_checkpoint, url_cache_path

    url = loopback_server.url + "/gone/net.pkl"
    with pytest.raises(FetchError) as info:
        resolve_checkpoint(url, flag="--base PATH")
    assert f"{url} answered HTTP 404" in info.value.message and str(url_cache_path(url)) in info.value.message
    assert f"`fewshot download {url}`" in (info.value.hint or "") and "--base PATH" in (info.value.hint or "")
    assert len(loopback_server.gets("/gone/net.pkl")) == 1  # an answer is not retried


def test_hf_reference_to_an_unresolvable_endpoint_fails_fast_without_retrying(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging

    from fewshot.hub import FetchError, resolve_checkpoint

    monkeypatch.setenv("HF_ENDPOINT", UNRESOLVABLE)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        resolve_checkpoint("hf://org/gan/G.safetensors")
    elapsed = time.monotonic() - start
    captured = capfd.readouterr()
    assert "Retrying" not in caplog.text + captured.out + captured.err  # huggingface_hub's loop never ran
    assert elapsed < FAILS_FAST_S
    message, hint = info.value.message, info.value.hint or ""
    assert "G.safetensors" in message and f"{UNRESOLVABLE}/org/gan/resolve/main/G.safetensors" in message
    assert str(hub_env / "hf_home" / "hub" / "models--org--gan") in message and "does not resolve" in message
    assert "`fewshot download hf://org/gan/G.safetensors`" in hint and "models--org--gan" in hint

    # The same unreachable endpoint with the file in the cache: the cache answers, at once.
    _, body = tiny_bundle_bytes(hub_env)
    snapshot = hub_env / "hf_home" / "hub" / "models--org--gan" / "snapshots" / COMMIT / "G.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(body)
    (snapshot.parents[2] / "refs").mkdir()
    (snapshot.parents[2] / "refs" / "main").write_text(COMMIT)
    start = time.monotonic()
    assert resolve_checkpoint("hf://org/gan/G.safetensors").read_bytes() == body
    assert time.monotonic() - start < FAILS_FAST_S


def test_host_probe_asks_the_proxy_when_one_is_set(hub_env: Path, loopback_server: LoopbackServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.hub import unreachable_reason

    assert unreachable_reason(loopback_server.url + "/x") is None
    assert "does not resolve" in (unreachable_reason(f"{UNRESOLVABLE}/x") or "")
    monkeypatch.setenv("http_proxy", loopback_server.url)  # behind a proxy, the proxy resolves names
    assert unreachable_reason(f"{UNRESOLVABLE}/x") is None
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_closed_port()}")
    assert "no connection to 127.0.0.1" in (unreachable_reason(f"{UNRESOLVABLE}/x") or "")
    monkeypatch.setenv("NO_PROXY", "nonexistent.invalid")
    monkeypatch.setenv("no_proxy", "nonexistent.invalid")
    assert "does not resolve" in (unreachable_reason(f"{UNRESOLVABLE}/x") or "")


def test_suggesting_adds_the_callers_option_to_fetch_errors_only() -> None:
    from fewshot.hub import FetchError, suggesting

    error = FetchError("weights 'tinynet' (t.pth)", url="http://x/t.pth", cache=Path("/c/t.pth"),
                       failure="downloads are off", remedies=["run `fewshot weights import tinynet FILE`"], name="tinynet")
    with pytest.raises(FetchError) as info, suggesting("--reg-weights FILE"):
        raise error
    assert info.value.hint == "run `fewshot weights import tinynet FILE`; or pass --reg-weights FILE"
    assert info.value.message == error.message == (
        "weights 'tinynet' (t.pth): not in the cache (/c/t.pth), and downloads are off")
    with pytest.raises(FetchError) as info, suggesting({"tinynet": "--tiny-weights FILE"}):
        raise error
    assert (info.value.hint or "").endswith("or pass --tiny-weights FILE")
    with pytest.raises(FetchError) as info, suggesting({"other": "--other FILE"}):
        raise error
    assert info.value is error  # an error about another name passes unchanged
    with pytest.raises(FewshotError, match="unrelated") as plain, suggesting("--reg-weights FILE"):
        raise FewshotError("unrelated")
    assert plain.value.hint is None


# --- CLI ------------------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, (SystemExit, FewshotError)):
        raise result.exception
    return result.exit_code, result.output


def test_cli_download_and_info_accept_references(hub_env: Path, loopback_server: LoopbackServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pkl = tiny_pickle_bytes(hub_env)
    loopback_server.files["/x/snap.pkl"] = pkl
    registry = write_registry(hub_env / "reg.toml", {"tinysnap": {"url": loopback_server.url + "/x/snap.pkl"}})
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_REGISTRY", str(registry))

    code, out = _cli("download", "tinysnap")
    assert code == 0 and out.splitlines()[0].endswith(".safetensors") and "converted from the official pickle" in out
    code, out = _cli("info", "tinysnap", "--json")
    assert code == 0 and json.loads(out)["format"].startswith("fewshot bundle")
    code, out = _cli("download", "--list")
    assert code == 0 and "tinysnap" in out and "ffhq256" in out


# --- push -----------------------------------------------------------------------------------------------


def _front_matter(card: str) -> dict:
    head = card.split("---\n")[1]
    return {line.split(": ", 1)[0]: json.loads(line.split(": ", 1)[1]) for line in head.strip().splitlines()}


def test_push_dry_run_writes_card_config_grid_and_bundle(hub_env: Path) -> None:
    from PIL import Image

    run = hub_env / "runs" / "00000-obama"
    run.mkdir(parents=True)
    training = {"base": "ffhq256", "preset": "ada", "data_size": 100, "metrics": {"fid5k_train": 41.5}}
    tiny_bundle_bytes(run, training=training, name="best.safetensors")
    (run / "config.json").write_text(json.dumps({"preset": "ada", "data": {"size": 100}}))
    (run / "metrics.jsonl").write_text('{"kimg": 10, "results": {"kid": 0.012}}\n')

    out = hub_env / "upload"
    code, text = _cli("push", str(run), "--repo", "me/obama-gan", "--dry-run", str(out), "--seeds", "0-5")
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "best.safetensors", "config.json", "samples.png"]
    front = _front_matter((out / "README.md").read_text())
    assert front["license"] == "other" and front["license_name"] == "nvidia-source-code-license-nc"
    assert front["fewshot_base"] == "ffhq256" and front["fewshot_preset"] == "ada" and front["fewshot_data_size"] == 100
    assert front["fewshot_metrics"] == {"fid5k_train": 41.5, "kid": 0.012}
    assert front["library_name"] == "fewshot"
    config = json.loads((out / "config.json").read_text())
    assert config["networks"]["G_ema"]["init_kwargs"]["img_resolution"] == 32
    assert Image.open(out / "samples.png").size == (4 * 32, 2 * 32)

    code, text = _cli("push", str(run), "--repo", "me/obama-gan", "--dry-run", str(out))
    assert code != 0  # refuses to write into a non-empty folder
    code, text = _cli("push", str(run), "--repo", "not-a-repo", "--dry-run", str(hub_env / "o2"))
    assert code != 0


def _run_folder_as_training_writes_it(root: Path, images: int, base: str | None) -> Path:
    """The layout fewshot.train.loop writes: config.toml, snapshots carrying the images record, and an
    exported final.safetensors that carries the config only; provenance names the run and its base."""
    from fewshot.checkpoint import save_bundle
    from fewshot.config import TrainConfig

    run = root / "runs" / "00003-flowers"
    (run / "checkpoints").mkdir(parents=True)
    cfg = TrainConfig(data=str(root / "flowers"), base=base, preset="reg-ada")
    (run / "config.toml").write_text(cfg.to_toml())
    G = make_tiny_G(0).eval()
    nets, provenance = {"G": G, "G_ema": G, "D": make_tiny_D(0)}, {"run": run.name, "base": base}
    for nimg, count in ((40, images - 1), (80, images)):  # the newest snapshot's record is the one that counts
        save_bundle(run / "checkpoints" / f"snapshot-{nimg:09d}.safetensors", nets, provenance=provenance,
                    training={"config": cfg.to_dict(), "data": {"images": count, "sha256": "ab" * 32}})
    save_bundle(run / "final.safetensors", nets, provenance=provenance, training={"config": cfg.to_dict(), "kimg": 0.08})
    return run


def test_model_card_takes_images_resolution_base_and_licence_from_the_run(hub_env: Path) -> None:
    from fewshot.hub import checkpoint_registry, find_push_source, model_card_fields, render_model_card

    run = _run_folder_as_training_writes_it(hub_env, images=37, base="ffhq256")
    entry = checkpoint_registry()["ffhq256"]
    for target in (run, run / "final.safetensors", run / "checkpoints" / "snapshot-000000080.safetensors"):
        source = find_push_source(target)
        assert source.run_dir == run
        fields = model_card_fields(source)
        assert (fields["data_size"], fields["resolution"], fields["base"]) == (37, 32, "ffhq256")
        card = render_model_card("me/flowers", fields, [source.bundle.name, "config.json", "samples.png"])
        front = _front_matter(card)
        assert front["fewshot_data_size"] == 37 and front["fewshot_resolution"] == 32
        assert front["fewshot_base"] == "ffhq256" and front["fewshot_preset"] == "reg-ada"
        assert front["license_name"] == entry.licence and front["license_link"] == entry.licence_url
        assert "| training images | 37 |" in card and "| resolution | 32x32 |" in card
        assert f"Inherited from the base model: {entry.licence}" in card and "unknown" not in card

    scratch = _run_folder_as_training_writes_it(hub_env / "scratch", images=12, base=None)
    fields = model_card_fields(find_push_source(scratch))
    card = render_model_card("me/scratch", fields, ["final.safetensors"])
    assert "| base model | none (trained from scratch) |" in card and "| training images | 12 |" in card
    assert "--license" in card
    fields = model_card_fields(find_push_source(scratch), licence="cc-by-4.0", data_size=10)
    card = render_model_card("me/scratch", fields, ["final.safetensors"])
    assert _front_matter(card)["license"] == "cc-by-4.0" and "| training images | 10 |" in card
    assert "Inherited" not in card  # a licence given on the command line is not the base's


def test_push_to_an_unreachable_hub_is_one_clear_error(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's HTTP client raises its own transport errors (not OSError): they become one line."""
    import huggingface_hub

    from fewshot.hub import push_to_hub

    class ConnectError(Exception):  # the name httpx (and huggingface_hub's httpx2) give a refused connection
        pass

    class UnreachableApi:
        def __init__(self, **kwargs: object) -> None:
            pass

        def create_repo(self, repo_id: str, **kwargs: object) -> str:
            raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "HfApi", UnreachableApi)
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    bundle, _ = tiny_bundle_bytes(hub_env)
    with pytest.raises(FewshotError, match=r"cannot reach the Hub at http://hub.invalid: \[Errno -2\]") as info:
        push_to_hub(bundle, "me/gan", seeds=[1])
    assert "--dry-run" in info.value.hint

    class Bug(Exception):
        pass

    UnreachableApi.create_repo = lambda self, repo_id, **kwargs: (_ for _ in ()).throw(Bug("a bug"))
    with pytest.raises(Bug):  # anything else is not dressed up as a network problem
        push_to_hub(bundle, "me/gan", seeds=[1])


def test_push_uploads_through_hfapi(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    class RecordingApi:
        def __init__(self, **kwargs: object) -> None:
            calls.append(("init", dict(kwargs)))

        def create_repo(self, repo_id: str, **kwargs: object) -> str:
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs: object) -> None:
            folder = Path(str(kwargs["folder_path"]))
            calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in folder.iterdir())}))
            shutil.copy(folder / "README.md", hub_env / "uploaded_card.md")

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    bundle, _ = tiny_bundle_bytes(hub_env, training={"base": "hf://someone/base-gan/G.pkl"})
    code, text = _cli("push", str(bundle), "--repo", "me/gan", "--private", "--seeds", "1")
    assert code == 0, text
    names = [c[0] for c in calls]
    assert names == ["init", "create_repo", "upload_folder"]
    assert calls[1][1]["private"] is True and calls[1][1]["repo_id"] == "me/gan"
    assert calls[2][1]["repo_id"] == "me/gan"
    assert calls[2][1]["files"] == ["README.md", "config.json", "samples.png", "tiny.safetensors"]
    assert _front_matter((hub_env / "uploaded_card.md").read_text())["base_model"] == "someone/base-gan"

    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    code, text = _cli("push", str(bundle), "--repo", "me/gan")
    assert code != 0 and len(calls) == 3


# --- StyleGAN3 bases ----------------------------------------------------------------------------------

STYLEGAN3_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
# The 12 networks of NVlabs/stylegan3's README ("StyleGAN3 pre-trained models"): config, data set, resolution.
STYLEGAN3_FILES = [(cfg, data, res) for cfg in "tr" for data, res in
                   [("ffhq", 1024), ("ffhqu", 1024), ("ffhqu", 256), ("metfaces", 1024), ("metfacesu", 1024),
                    ("afhqv2", 512)]]


def test_stylegan3_entries_parse_and_resolve_from_a_prepopulated_cache(hub_env: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every published StyleGAN3 pickle has an entry with its real NGC address; one, placed in the cache as a
    download would leave it, resolves offline to a converted bundle that rebuilds the StyleGAN3 generator."""
    import torch
    from official_format import make_official_pickle
    from test_stylegan3 import TINY_R, make_tiny

    from fewshot.checkpoint import read_header
    from fewshot.hub import checkpoint_registry, resolve_checkpoint, url_cache_path
    from fewshot.loading import load_generator

    registry = checkpoint_registry()
    for cfg, data, res in STYLEGAN3_FILES:
        entry = registry[f"stylegan3-{cfg}-{data}-{res}"]
        assert entry.url == f"{STYLEGAN3_NGC}stylegan3-{cfg}-{data}-{res}x{res}.pkl"
        assert entry.resolution == res and entry.kind == "ngc" and entry.config == f"stylegan3-{cfg}"
        assert entry.licence == "nvidia-source-code-license-nc" and "stylegan3" in (entry.licence_url or "")
        assert entry.filename == f"stylegan3-{cfg}-{data}-{res}x{res}.pkl" and entry.description
    assert sum(name.startswith("stylegan3-") for name in registry) == len(STYLEGAN3_FILES)

    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    entry = registry["stylegan3-r-afhqv2-512"]
    cache = url_cache_path(entry.url)
    cache.parent.mkdir(parents=True, exist_ok=True)
    G = make_tiny(TINY_R, seed=3)
    make_official_pickle(cache, G=G, G_ema=G, D=make_tiny_D(0), augment_p=0.0)
    path = resolve_checkpoint("stylegan3-r-afhqv2-512")
    assert read_header(path).specs["G_ema"].class_name == "StyleGAN3Generator"
    loaded = load_generator("stylegan3-r-afhqv2-512")
    z = torch.randn(2, G.z_dim)
    assert loaded(z).equal(G(z))
