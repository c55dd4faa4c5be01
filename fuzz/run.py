"""Run the harnesses one after another, each for a fixed time, and print a markdown summary.

``python -m fuzz.run [--seconds S] [--engine auto|atheris|random] [bundle pickle hub images]`` (``make fuzz``).
Each harness runs in its own process (libFuzzer owns the process it runs in); its log goes to
``fuzz/out/<harness>/log.txt`` and any input that broke the contract to ``fuzz/out/<harness>/findings/``.
Exits non-zero when a harness found something or did not finish.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from fuzz.common import DEFAULT_SECONDS, OUT_DIR, REPO, SEEDS_DIR

HARNESSES = ("bundle", "pickle", "hub", "images")
ARTIFACTS = ("crash-", "oom-", "timeout-", "leak-")  # what libFuzzer (or the plain engine) writes per finding


@dataclass
class Result:
    name: str
    engine: str
    executions: int | None
    seconds: float
    corpus_added: int | None
    peak_rss_mb: int | None
    findings: list[str]
    returncode: int

    @property
    def exec_per_s(self) -> float | None:
        return self.executions / self.seconds if self.executions is not None and self.seconds > 0 else None


def _stat(log: str, key: str) -> int | None:
    match = re.search(rf"stat::{key}:\s*(\d+)", log)
    return int(match.group(1)) if match else None


def run_harness(name: str, seconds: float, engine: str, extra: list[str]) -> Result:
    findings_dir = OUT_DIR / name / "findings"
    before = set(os.listdir(findings_dir)) if findings_dir.is_dir() else set()
    cmd = [sys.executable, "-m", f"fuzz.fuzz_{name}", f"--seconds={seconds:g}", f"--engine={engine}", *extra]
    start = time.monotonic()
    # Start-up (imports, seeds) and libFuzzer's final pass come on top of the fuzzing time.
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, errors="replace", timeout=seconds + 600)
    wall = time.monotonic() - start
    log = proc.stdout + proc.stderr
    (OUT_DIR / name).mkdir(parents=True, exist_ok=True)
    (OUT_DIR / name / "log.txt").write_text(log)
    after = set(os.listdir(findings_dir)) if findings_dir.is_dir() else set()
    findings = sorted(f for f in after - before if f.startswith(ARTIFACTS))
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    engine_line = re.search(r"^fuzz engine: (\w+)", log, re.M)
    used = engine_line.group(1) if engine_line else "?"
    executions = _stat(log, "number_of_executed_units")
    fuzz_seconds = float(done.group(2)) if done else min(wall, seconds)
    if executions is None and done:
        executions = int(done.group(1))
    return Result(name, used, executions, fuzz_seconds, _stat(log, "new_units_added"), _stat(log, "peak_rss_mb"),
                  findings, proc.returncode)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def summary(results: list[Result]) -> str:
    lines = [
        "| harness | engine | executions | time (s) | exec/s | new corpus units | peak RSS (MB) | findings |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rate = f"{r.exec_per_s:,.0f}" if r.exec_per_s is not None else "?"
        found = ", ".join(r.findings) if r.findings else ("0" if r.returncode == 0 else f"exit {r.returncode}")
        lines.append(
            f"| {r.name} | {r.engine} | {r.executions if r.executions is not None else '?':,} | {r.seconds:.0f} | {rate} "
            f"| {r.corpus_added if r.corpus_added is not None else '-'} | {r.peak_rss_mb or '-'} | {found} |"
        )
    lines.append("")
    lines.append(f"Machine: {machine()}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("harnesses", nargs="*", metavar="HARNESS", help=f"some of {', '.join(HARNESSES)} (default: all)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per harness (default %(default)s, "
                        "or FEWSHOT_FUZZ_SECONDS)")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    args, extra = parser.parse_known_args(argv)
    unknown = [h for h in args.harnesses if h not in HARNESSES]
    if unknown:
        parser.error(f"unknown harness {unknown[0]!r}; choose from {', '.join(HARNESSES)}")
    subprocess.run([sys.executable, "-m", "fuzz.make_corpus", str(SEEDS_DIR)], check=True, cwd=REPO)
    results = []
    for name in args.harnesses or HARNESSES:
        print(f"fuzzing {name} for {args.seconds:g} s ...", flush=True)
        result = run_harness(name, args.seconds, args.engine, extra)
        results.append(result)
        if result.findings or result.returncode:
            print(f"  {name}: exit {result.returncode}, findings {result.findings}; log: "
                  f"{(OUT_DIR / name / 'log.txt').relative_to(REPO)}", flush=True)
    print()
    print(summary(results))
    return 0 if all(not r.findings and r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
