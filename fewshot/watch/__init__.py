"""Watching a run: TensorBoard events, the report page, the timelapse, the table of runs.

Everything here reads (or, for the events, also writes) a run folder; nothing changes how a run trains. The
training loop calls :mod:`fewshot.watch.hooks` at each tick and snapshot; the commands are in
:mod:`fewshot.cli.watch`.
"""
