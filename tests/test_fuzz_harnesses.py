"""The fuzz harnesses of ``make fuzz`` (fuzz/), run for a moment on their seed corpora without atheris.

Seeds named ``ok-*`` must load and ``bad-*`` must be refused with a FewshotError, so a harness that stopped
reaching its reader fails here; then a few hundred seeded mutants must each end in one or the other, the
contract ``make fuzz`` checks at length.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # fuzz/ sits beside the package, not in it
    sys.path.insert(0, str(REPO))

from fuzz import common, make_corpus  # noqa: E402


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the corrupt EXIF of mutated images
@pytest.mark.parametrize("name,mutants", [("bundle", 300), ("pickle", 150), ("hub", 300), ("images", 200)])
def test_harness_on_its_seeds_and_mutants(tmp_path: Path, name: str, mutants: int) -> None:
    harness = importlib.import_module(f"fuzz.fuzz_{name}")
    seeds = make_corpus.SEEDS[name]()
    assert any(s.startswith("ok-") for s in seeds) and any(s.startswith("bad-") for s in seeds)
    with common.sandbox(tmp_path):
        harness.load()
        harness.prepare(tmp_path)
        outcomes = {seed: harness.target(data) for seed, data in seeds.items()}
        assert outcomes == {seed: "ok" if seed.startswith("ok-") else "rejected" for seed in seeds}
        stats = common.run_random(harness.target, list(seeds.values()), iterations=len(seeds) + mutants, rng_seed=0,
                                  tokens=getattr(harness, "DICTIONARY", ()))
    assert stats.executions == len(seeds) + mutants
    assert set(stats.outcomes) <= {"ok", "rejected"} and stats.outcomes.get("rejected", 0) > 0


def test_the_contract_flags_what_a_harness_must_not_let_pass() -> None:
    from fewshot.errors import FewshotError

    assert common.contract(lambda: None) == "ok"
    assert common.contract(lambda: (_ for _ in ()).throw(FewshotError("bad file"))) == "rejected"

    def swallowed_oom() -> None:
        try:
            raise MemoryError
        except MemoryError:
            raise FewshotError("cannot read tensor data") from None

    def two_lines() -> None:
        raise FewshotError("first\nsecond")

    for call in (swallowed_oom, two_lines):
        with pytest.raises(common.Finding):
            common.contract(call)
    with pytest.raises(KeyError):
        common.contract(lambda: {}["missing"])
