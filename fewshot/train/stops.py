"""How a run stops without losing work: signals, a terminal that goes away, a reader of stdout that dies.

Every stop a user can cause ends the same way: the current batch finishes, a snapshot is written, and the
process exits with the conventional code (128 + the signal's number):

========================================  ==========  =====
cause                                     signal      exit
========================================  ==========  =====
Ctrl-C (also when it reaches ``tee`` first) SIGINT    130
``kill``, a job scheduler                  SIGTERM     143
the terminal or SSH session closed         SIGHUP      129
stdout/stderr's reader gone (``| head``)   (EPIPE)     141
========================================  ==========  =====

The first Ctrl-C is acknowledged at once; a second one stops at once, without a snapshot. Output that can no
longer be written (EPIPE, EIO on a hung-up terminal) is not an error: the run goes on to its snapshot, and
what it would have printed is appended to ``log.jsonl`` (``{"event": "message", ...}``), where ``fewshot
info`` and a later look find it.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The pseudo-signal of a broken output pipe: Python ignores SIGPIPE and raises BrokenPipeError instead, but the
# shell convention for "the reader went away" is still 128 + SIGPIPE.
SIGPIPE = getattr(signal, "SIGPIPE", 13)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_GONE_ERRNOS = {errno.EPIPE, errno.EIO, errno.ENXIO, errno.EBADF}


def signal_name(signum: int) -> str:
    if signum == SIGPIPE:
        return "a closed output pipe"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_ACKNOWLEDGEMENTS = {signal.SIGINT: "Ctrl-C (SIGINT): ", SIGPIPE: "output closed (its reader is gone): "}
if hasattr(signal, "SIGHUP"):
    _ACKNOWLEDGEMENTS[signal.SIGHUP] = "SIGHUP (terminal closed): "
_SECOND = {signal.SIGINT: "; a second Ctrl-C stops now, without one", signal.SIGTERM: "; a second SIGTERM stops now, without one"}


class StopRequested:
    """SIGINT, SIGTERM and SIGHUP set a flag; the loop finishes the batch, writes a snapshot and stops.

    A second SIGINT or SIGTERM raises KeyboardInterrupt (stop now, no snapshot); a repeated SIGHUP is ignored
    (a closing session may send several)."""

    def __init__(self, acknowledge: Callable[[str], None] | None = None) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._acknowledge = acknowledge

    def __enter__(self) -> StopRequested:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            if signum in (signal.SIGINT, signal.SIGTERM):
                raise KeyboardInterrupt
            return
        self.request(signum)

    def request(self, signum: int) -> None:
        """Stop after this batch (a signal, or the output gone)."""
        if self.signum is not None:
            return
        self.signum = signum
        if self._acknowledge is not None:
            self._acknowledge(_ACKNOWLEDGEMENTS.get(signum, f"{signal_name(signum)}: ") +
                              "stopping after this batch and writing a snapshot" + _SECOND.get(signum, ""))

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


class RunOutput:
    """The run's messages: to the terminal while it is there, and to ``log.jsonl`` once it is not.

    A call never raises for a closed pipe or a hung-up terminal: the first failed write marks that stream gone,
    points its file descriptor at /dev/null (so nothing later, interpreter shutdown included, fails on it),
    asks the run to stop (``on_gone``) and sends the message to stderr if that is still there (``| tee`` killed:
    the terminal still shows it) and to the log. Messages before the run folder exists are kept and written
    when it does."""

    def __init__(self, echo: Callable[[str], None], on_gone: Callable[[int], None] | None = None) -> None:
        self._echo = echo
        self.on_gone = on_gone
        self.gone_fds: set[int] = set()
        self.log_path: Path | None = None
        self._pending: list[dict[str, Any]] = []

    @property
    def gone(self) -> bool:
        return bool(self.gone_fds)

    def __call__(self, message: str) -> None:
        if 1 not in self.gone_fds:
            try:
                self._echo(message)
                return
            except OSError as exc:
                if not _is_gone(exc):
                    raise
                self.mark_gone(1)
        self.err(message)

    def err(self, message: str) -> None:
        """An unbuffered line to stderr (safe from a signal handler: no Python-level buffer to re-enter)."""
        if 2 not in self.gone_fds:
            try:
                os.write(2, (message + "\n").encode(errors="replace"))
            except OSError:
                self.mark_gone(2)
        if self.gone:
            self.record({"event": "message", "text": message})

    def record(self, entry: dict[str, Any]) -> None:
        entry = {"time": round(time.time(), 3), **entry}
        if self.log_path is None:
            self._pending.append(entry)
            return
        try:
            with self.log_path.open("a") as fh:
                for item in (*self._pending, entry):
                    fh.write(json.dumps(item) + "\n")
            self._pending.clear()
        except OSError:
            pass  # the disk is the last place to tell; the snapshot write reports a full disk itself

    def attach(self, log_path: Path) -> None:
        """The run folder exists: messages that could not be shown go to its log from now on."""
        self.log_path = log_path
        if self._pending:
            self.record(self._pending.pop())

    def check(self) -> None:
        """Notice a reader that went away before a write failed (``| head`` after its lines, a closed terminal)."""
        for fd in gone_streams():
            self.mark_gone(fd)

    def mark_gone(self, fd: int) -> None:
        if fd in self.gone_fds:
            return
        first = not self.gone_fds
        self.gone_fds.add(fd)
        _silence(fd)
        if first and self.on_gone is not None:
            self.on_gone(SIGPIPE)


def _is_gone(exc: OSError) -> bool:
    return isinstance(exc, BrokenPipeError) or exc.errno in _GONE_ERRNOS


def gone_streams() -> list[int]:
    """Which of fds 1 and 2 lost their reader (a pipe) or hung up (a terminal): poll's POLLERR/POLLHUP."""
    if not hasattr(select, "poll"):
        return []
    gone = []
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            if stream is None or stream.fileno() != fd:
                continue  # captured or replaced (tests, notebooks): nothing to watch
        except (AttributeError, OSError, ValueError):
            continue
        poller = select.poll()
        poller.register(fd, select.POLLERR | select.POLLHUP)
        try:
            if any(event & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, event in poller.poll(0)):
                gone.append(fd)
        except OSError:
            continue
    return gone


def _silence(fd: int) -> None:
    """Point ``fd`` at /dev/null once its reader is gone: later writes (and the flush at exit) succeed."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        stream.flush()  # what was buffered for the dead reader now drains into /dev/null
    except (OSError, ValueError):
        pass
