"""The command line as a user meets it: `fewshot convert`, `fewshot info`, errors, --help, --version.

Every call runs `python -m fewshot` in a subprocess, so exit codes, stderr and imports are real.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_D, make_tiny_G
from official_format import make_malicious_pickle, make_official_pickle

from fewshot import __version__
from fewshot.checkpoint import load_bundle, save_bundle, sha256_file


def run_cli(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEWSHOT_HOME": str(home / "fewshot-home"), "FEWSHOT_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fewshot", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    G, G_ema, D = make_tiny_G(1), make_tiny_G(2), make_tiny_D(3)
    path = make_official_pickle(folder / "network-snapshot-000040.pkl", G=G, D=D, G_ema=G_ema, augment_p=0.125)
    return path, G_ema.eval()


def test_convert_then_info(snapshot, tmp_path):
    src, G_ema = snapshot
    dst = tmp_path / "snap.safetensors"
    done = run_cli("convert", str(src), str(dst), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    z = torch.randn(2, 32)
    with torch.no_grad():
        expected = G_ema(z, None, noise_mode="const")
        got = load_bundle(dst).generator(z, None, noise_mode="const")
    assert torch.equal(got, expected)

    again = run_cli("convert", str(src), str(dst), home=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr and "--overwrite" in again.stderr

    # info reads only the header: spoil every tensor byte and it still answers.
    raw = bytearray(dst.read_bytes())
    header_size = struct.unpack("<Q", raw[:8])[0]
    raw[8 + header_size:] = bytes(len(raw) - 8 - header_size)
    dst.write_bytes(bytes(raw))
    params = {name: sum(v.numel() for v in net.state_dict().values())
              for name, net in (("G_ema", G_ema), ("D", make_tiny_D(3)))}

    text = run_cli("info", str(dst), home=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "Generator" in text.stdout and "Discriminator" in text.stdout and "32x32x3" in text.stdout
    assert f"{params['G_ema']:,}" in text.stdout
    assert sha256_file(src) in text.stdout
    assert "augment p: 0.1250" in text.stdout

    as_json = run_cli("info", "--json", str(dst), home=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    info = json.loads(as_json.stdout)
    assert set(info["networks"]) == {"G", "D", "G_ema"}
    assert info["networks"]["G_ema"]["params"] == params["G_ema"]
    assert info["networks"]["D"]["params"] == params["D"]
    assert info["networks"]["G_ema"]["init_kwargs"]["img_resolution"] == 32
    assert info["provenance"]["source"] == src.name
    assert info["provenance"]["source_sha256"] == sha256_file(src)
    assert info["training"]["augment_p"] == pytest.approx(0.125)

    direct = run_cli("info", "--json", str(src), home=tmp_path)  # an official pickle, read safely
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["networks"]["G_ema"]["params"] == params["G_ema"]


def test_malicious_pickle_is_refused_through_the_cli(tmp_path):
    marker = tmp_path / "pwned"
    evil = make_malicious_pickle(tmp_path / "evil.pkl", marker, G=make_tiny_G())
    out = tmp_path / "out.safetensors"
    done = run_cli("convert", str(evil), str(out), home=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and "posix.system" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not marker.exists() and not out.exists()

    debug = run_cli("--debug", "convert", str(evil), str(out), home=tmp_path)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "posix.system" in debug.stderr
    assert not marker.exists()


def test_bad_input_is_one_line(tmp_path):
    notes = tmp_path / "notes.safetensors"
    notes.write_text("not a checkpoint at all\n")
    done = run_cli("info", str(notes), home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error:") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # the error, and at most one hint line

    usage = run_cli("info", home=tmp_path)  # a usage error gets click's message and exit code 2
    assert usage.returncode == 2
    assert "Missing argument" in usage.stderr and "Traceback" not in usage.stderr
    assert "MissingParameter" not in usage.stderr


def test_a_path_the_system_refuses_is_one_short_line(tmp_path):
    # Found by fuzz/fuzz_hub.py: a reference too long to be a file name (ENAMETOOLONG) escaped pathlib's
    # is_file() as an OSError; in the commands that test paths first, the message quoted all 5,000 characters.
    long_name = "x" * 5000
    for args in (("info", long_name), ("sample", long_name), ("convert", long_name, str(tmp_path / "out.safetensors"))):
        done = run_cli(*args, home=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines[0].startswith("error:") and "Traceback" not in done.stderr and len(lines) <= 2, done.stderr
        assert "x" * 200 not in done.stderr and "(5,0" in done.stderr, done.stderr  # the name shortened, its length said


def test_help_and_bundle_info_do_not_import_torch(tmp_path):
    bundle = save_bundle(tmp_path / "tiny.safetensors", {"G": make_tiny_G()})
    probe = textwrap.dedent("""
        import contextlib, io, sys
        from fewshot.cli import main
        for argv in (["--help"], ["convert", "--help"], ["info", "--help"], ["info", sys.argv[1]]):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                try:
                    main(argv)
                except SystemExit as exc:
                    assert exc.code in (0, None), (argv, exc.code)
            print("=====", " ".join(argv))
            print(buf.getvalue())
        heavy = sorted(m for m in ("torch", "numpy", "safetensors", "huggingface_hub") if m in sys.modules)
        print("HEAVY:", ",".join(heavy))
    """)
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    done = subprocess.run([sys.executable, "-c", probe, str(bundle)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    top = done.stdout.split("===== convert --help")[0]
    for command in ("convert", "info"):
        assert command in top
    assert "Examples" in top and "Checkpoints" in top
    assert "Example" in done.stdout.split("===== convert --help")[1]
    assert "Generator" in done.stdout.split("===== info " + str(bundle))[1]  # the header was read
    assert "HEAVY: \n" in done.stdout or done.stdout.rstrip().endswith("HEAVY:"), done.stdout[-300:]


def test_version(tmp_path):
    done = run_cli("--version", home=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"fewshot {__version__}"


def test_deterministic_flag_reaches_the_config_and_cannot_change_on_resume(tmp_path):
    """--deterministic is a recipe flag: the dry run shows it in the resolved config; a resume refuses it."""
    done = run_cli("train", "--preset", "demo", "--deterministic", "--dry-run", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deterministic = true" in done.stdout
    tiny = ["--set", "channel_base=256", "--set", "channel_max=32", "--set", "batch=4", "--set", "max_images=8",
            "--kimg", "0.004", "--tick-kimg", "0.004", "--quiet", "--outdir", str(tmp_path / "runs")]
    assert run_cli("train", "--preset", "demo", *tiny, home=tmp_path).returncode == 0
    refused = run_cli("train", "--resume", "latest", "--deterministic", *tiny, home=tmp_path)
    assert refused.returncode == 1 and "deterministic false -> true" in refused.stderr
