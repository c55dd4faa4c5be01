"""What every harness shares: the contract check, a sandbox, memory bounds, and the two engines.

The engines: atheris (coverage-guided libFuzzer, ``pip install -e '.[fuzz]'``) when it imports, else a plain
seeded mutator (:func:`run_random`), which is also what the default test suite uses so the harness code
cannot rot without atheris.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from fewshot.errors import FewshotError

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "fuzz" / "out"  # ignored by git: seeds, grown corpora, findings
SEEDS_DIR = OUT_DIR / "seeds"
DEFAULT_SECONDS = float(os.environ.get("FEWSHOT_FUZZ_SECONDS", "60"))
# Memory a single input may make the process use beyond what it held after start-up. A reader that sizes an
# allocation from a number in the file (a tensor shape, an image size) must check it against the file first.
DEFAULT_MEMORY_MB = int(os.environ.get("FEWSHOT_FUZZ_MEMORY_MB", "1024"))
MAX_INPUT_BYTES = 64 * 1024


class Finding(Exception):
    """An input broke the contract in a way that does not show as a stray exception (e.g. a swallowed OOM)."""


def _memory_failure_in(exc: BaseException) -> BaseException | None:
    """A MemoryError or an allocator failure anywhere in ``exc``'s chain (``raise ... from None`` keeps it
    in ``__context__``): a reader that tried to allocate what a file claimed, then reported it politely."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, MemoryError):
            return node
        if isinstance(node, RuntimeError) and "allocate" in str(node).lower():
            return node
        node = node.__cause__ or node.__context__
    return None


def contract(call: Callable[[], object], one_line: bool = True) -> str:
    """Run ``call``: "ok" when it returns, "rejected" on a one-line FewshotError; anything else is a finding.

    ``one_line=False`` when the input itself holds a line break that a message may quote back.
    """
    try:
        call()
    except FewshotError as exc:
        failure = _memory_failure_in(exc)
        if failure is not None:
            raise Finding(f"a huge allocation was attempted and reported as: {exc}") from failure
        if one_line and ("\n" in exc.message or "\n" in (exc.hint or "")):
            raise Finding(f"the error does not fit the one line the CLI shows: {exc.message!r}") from exc
        return "rejected"
    return "ok"


# ------------------------------------------------------------------------------------------------ sandbox


def _no_network(*args: object, **kwargs: object) -> None:
    raise Finding("a harness tried to use the network")


@contextlib.contextmanager
def sandbox(root: Path) -> Iterator[Path]:
    """Caches in ``root``, downloads off, no sockets, ``root`` as the working folder; all undone on exit."""
    root.mkdir(parents=True, exist_ok=True)
    # huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, when first imported: import it before they change,
    # or the rest of the process (a test session) would stay offline.
    import huggingface_hub.constants  # noqa: F401

    env = {
        "FEWSHOT_HOME": str(root / "home"), "HF_HOME": str(root / "hf"), "FEWSHOT_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    removed = ("FEWSHOT_CHECKPOINT_REGISTRY", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "XDG_CACHE_HOME")
    saved_env = {k: os.environ.get(k) for k in (*env, *removed)}
    saved_socket = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection)
    cwd = os.getcwd()
    os.environ.update(env)
    for key in removed:
        os.environ.pop(key, None)
    socket.socket.connect = socket.socket.connect_ex = _no_network  # type: ignore[method-assign]
    socket.getaddrinfo = socket.create_connection = _no_network  # type: ignore[assignment]
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(cwd)
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection = saved_socket
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (emptied when it exists)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ------------------------------------------------------------------------------------------------ mutator

_TOKENS = (
    b"0", b"-1", b"1e400", b"-0", b"NaN", b"18446744073709551615", b"9223372036854775807", b"4294967296",
    b"\x00", b"\xff\xff\xff\xff", b"[]", b"{}", b'""', b"null", b"true", b"/", b"..", b"@", b"hf://", b"%00",
)


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes] = (), max_len: int = MAX_INPUT_BYTES,
           tokens: Sequence[bytes] = ()) -> bytes:
    """One to four random edits of ``data``: bit flips, byte writes, inserts, deletes, copies, tokens that
    parsers find interesting (and a harness's own), a digit run swapped for an extreme number, a splice."""
    buf = bytearray(data)
    tokens = (*_TOKENS, *tokens)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 4 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start:start + rng.randint(1, 32)]
        elif op == 5:
            buf[pos:pos] = rng.choice(tokens)
        elif op == 6:
            digits = [i for i in range(len(buf)) if 48 <= buf[i] <= 57]
            if digits:
                start = end = rng.choice(digits)
                while end < len(buf) and 48 <= buf[end] <= 57:
                    end += 1
                buf[start:end] = rng.choice(_TOKENS[:8])
        elif op == 7 and pool:
            other = rng.choice(pool)
            buf = buf[:pos] + other[rng.randrange(len(other) + 1):]
        elif op == 8:
            del buf[pos:]
    return bytes(buf[:max_len])


@dataclass
class Stats:
    """What a run did: executions, wall time, how inputs ended, and the findings (input name, error)."""

    executions: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    findings: list[tuple[str, str]] = field(default_factory=list)


def run_random(
    target: Callable[[bytes], str], seeds: Sequence[bytes], *, iterations: int | None = None,
    seconds: float | None = None, rng_seed: int = 0, findings_dir: Path | None = None, stop_on_finding: bool = True,
    tokens: Sequence[bytes] = (),
) -> Stats:
    """Every seed once, then mutants of random seeds until ``iterations`` or ``seconds`` run out.

    A finding raises at once (``stop_on_finding``, for tests) or is saved under ``findings_dir``.
    """
    rng = random.Random(rng_seed)
    stats = Stats()
    start = time.monotonic()
    queue = list(seeds)
    while True:
        if queue:
            data = queue.pop(0)
        elif (iterations is not None and stats.executions >= iterations) or (
            seconds is not None and time.monotonic() - start >= seconds
        ) or (iterations is None and seconds is None):
            break
        else:
            data = mutate(rng.choice(seeds), rng, seeds, tokens=tokens)
        stats.executions += 1
        try:
            outcome = target(data)
        except Exception as exc:  # noqa: BLE001 - every other exception is what we are looking for
            if stop_on_finding:
                raise
            name = "crash-" + hashlib.sha1(data).hexdigest()
            if findings_dir is not None:
                findings_dir.mkdir(parents=True, exist_ok=True)
                (findings_dir / name).write_bytes(data)
            stats.findings.append((name, f"{type(exc).__name__}: {exc}"))
            outcome = "finding"
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
    stats.seconds = time.monotonic() - start
    return stats


# ------------------------------------------------------------------------------------------------ entry point


def _vm_and_rss_mb() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmSize"].split()[0]) // 1024, int(fields["VmRSS"].split()[0]) // 1024


def _limit_address_space(headroom_mb: int) -> int:
    """Cap the address space at what is mapped now plus ``headroom_mb``: a claimed multi-gigabyte tensor then
    fails to allocate (and :func:`contract` flags it) instead of exhausting a shared machine. Returns the RSS."""
    vm_mb, rss_mb = _vm_and_rss_mb()
    limit = (vm_mb + headroom_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return rss_mb


def load_seeds(name: str) -> list[bytes]:
    """The seed files of a harness, written first by make_corpus when missing (in a child process, so that
    nothing it imports escapes atheris's instrumentation here)."""
    folder = SEEDS_DIR / name
    if not folder.is_dir():
        subprocess.run([sys.executable, "-m", "fuzz.make_corpus", str(SEEDS_DIR)], check=True, cwd=REPO)
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]


def _write_dictionary(tokens: Sequence[bytes], path: Path) -> Path:
    """A libFuzzer dictionary: tokens the mutator inserts whole (formats' keywords it would rarely guess)."""
    lines = ['"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in t) + '"'
             for t in tokens]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(harness: ModuleType, argv: Sequence[str] | None = None) -> int:
    """``python -m fuzz.fuzz_<name> [--seconds S] [--engine atheris|random] [libFuzzer flags...]``."""
    parser = argparse.ArgumentParser(prog=f"fuzz.fuzz_{harness.NAME}", description=harness.__doc__)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="how long to fuzz (default %(default)s)")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="memory one input may add")
    parser.add_argument("--timeout", type=int, default=20, help="seconds one input may take (atheris)")
    parser.add_argument("--seed", type=int, default=1, help="mutation seed (libFuzzer: 0 picks one)")
    args, extra = parser.parse_known_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            print("atheris is not installed (pip install -e '.[fuzz]'): using the plain mutator", file=sys.stderr)
            engine = "random"
    print(f"fuzz engine: {engine}", file=sys.stderr, flush=True)
    work = OUT_DIR / harness.NAME
    corpus, findings = work / "corpus", work / "findings"
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    seeds = load_seeds(harness.NAME)
    # Not a temp folder: libFuzzer ends the process with exit(), which skips Python's clean-up; the next
    # run empties it instead.
    root = fresh_dir(work / "sandbox")
    try:
        with sandbox(root):
            if engine == "atheris":
                import atheris

                with _instrumented(atheris, harness.INSTRUMENT, getattr(harness, "TRACE_COMPARISONS", True)):
                    harness.load()
            else:
                harness.load()
            harness.prepare(root)
            _quiet_torch()
            for data in seeds:  # warm every path once before measuring the baseline
                harness.target(data)
            rss_mb = _limit_address_space(args.memory_mb)
            if engine == "random":
                stats = run_random(harness.target, seeds, seconds=args.seconds, rng_seed=args.seed,
                                   findings_dir=findings, stop_on_finding=False,
                                   tokens=getattr(harness, "DICTIONARY", ()))
                print(f"Done {stats.executions} runs in {int(stats.seconds)} second(s)", file=sys.stderr)
                print(f"stat::number_of_executed_units: {stats.executions}", file=sys.stderr)
                print(f"stat::average_exec_per_sec: {int(stats.executions / max(stats.seconds, 1e-9))}", file=sys.stderr)
                print(f"stat::findings: {len(stats.findings)}", file=sys.stderr)
                for name, error in stats.findings:
                    print(f"finding {findings / name}: {error}", file=sys.stderr)
                return 1 if stats.findings else 0
            flags = [
                f"-max_total_time={max(int(args.seconds), 1)}", f"-timeout={args.timeout}",
                f"-rss_limit_mb={rss_mb + args.memory_mb}", f"-max_len={MAX_INPUT_BYTES}", f"-seed={args.seed}",
                "-print_final_stats=1", f"-artifact_prefix={findings}/",
            ]
            if getattr(harness, "DICTIONARY", ()):
                flags.append(f"-dict={_write_dictionary(harness.DICTIONARY, work / 'dictionary.txt')}")
            flags += [*extra, str(corpus), str(SEEDS_DIR / harness.NAME)]
            atheris.Setup([sys.argv[0], *flags], lambda data: (harness.target(data), None)[1])
            atheris.Fuzz()
            return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _instrumented(atheris: ModuleType, include: Sequence[str], trace_comparisons: bool) -> contextlib.AbstractContextManager:
    """atheris's import hook: coverage of ``include``, and of the values compared there unless turned off."""
    if trace_comparisons:
        return atheris.instrument_imports(include=list(include))
    return atheris.import_hook.HookManager(set(include), set(), True, trace_dataflow=False)


def _quiet_torch() -> None:
    """One intra-op thread: inputs are tiny and the machine is shared (as in tests/conftest.py)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
