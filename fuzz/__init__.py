"""Bounded fuzz harnesses for fewshot's readers of untrusted input (`make fuzz`; not part of `make test`).

Each ``fuzz_<name>.py`` module feeds bytes to one reader and holds it to one contract: any input ends in a
:class:`fewshot.errors.FewshotError` (which the CLI shows as one line) or in success; never another exception,
a hang, a crash, or a huge allocation. ``make_corpus.py`` builds the seed inputs in code; ``run.py`` runs every
harness for a fixed time under atheris (libFuzzer) and prints a summary.
"""
