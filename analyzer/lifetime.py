"""Helper processes end with the process they work for.

A forked helper (a process of a split analysis or of a fleet's pool, a report's renderer, the HTML
report's second reading) is of no use once the process that started it is gone, and some would
wait for it forever: a pool's process on its queue of tasks, a renderer on its full queue. A
parent that is killed (SIGKILL, the kernel's out-of-memory killer, a supervisor that signals only
the main process) runs no cleanup of its own, so each helper asks the kernel to signal it when its
parent ends (Linux's PR_SET_PDEATHSIG). Elsewhere nothing is asked: a parent's normal exit, or an
interruption that reaches its whole process group, still ends its helpers there.
"""

from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG = 1
"""prctl's option: a signal for this process when the thread that forked it ends."""


def end_with(owner: int, sig: int = signal.SIGKILL) -> None:
    """In a process started by process `owner` (from its main thread): be sent `sig` when it ends;
    at once if it already has. SIGKILL ends a helper that holds nothing to clean up; one that does
    asks for another signal and handles it."""
    import ctypes  # (here: only helpers need it)

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no prctl: not Linux
        return
    if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0 and os.getppid() != owner and not _alive(owner):
        os.kill(os.getpid(), sig)  # it ended before the request was made: as if after


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now has that number: ours is gone
        return False
    return True
