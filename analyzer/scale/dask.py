"""`--dask ADDRESS`: the per-capture analysis on an existing Dask distributed cluster.

The engine expands the inputs and groups rotated files as always; each group then becomes one task
(`engine._analyze_group`) on the cluster, and the results are gathered in input order, so the
report is the one `--jobs 1` gives. Workers need this package installed (the same version) and must
see the captures: on shared storage at the same path (relative paths are sent as absolute ones,
the report still shows them as given), or as fsspec URLs (`s3://bucket/fleet/`, `file:///srv/cap/`)
that each worker opens itself; a remote object is copied to the worker's temporary directory for
the time of its analysis. The client never reads capture data, only lists URL directories.

Dask is an optional extra (`pip install 'mqtt-keepalive[dask]'`); without it `--dask` is exit 2.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analyzer.engine import Options, Result, _analyze_group, _unusable
from analyzer.errors import ConfigError, InputError
from analyzer.model import CaptureSummary
from analyzer.sources.files import _kind, named_like_capture
from analyzer.sources.rotation import _in_time_order

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = "15s"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
EXTRA = "pip install 'mqtt-keepalive[dask]'"


def is_url(path: str) -> bool:
    """`s3://...`, `file:///...`: a path to open through fsspec, not the local file system."""
    return bool(_URL.match(path))


# -- on the client ---------------------------------------------------------------------------------


def capture_paths(paths: list[str], unusable: list[CaptureSummary],
                  local: Callable[[list[str], list[CaptureSummary]], list[str]]) -> list[str]:
    """The engine's input expansion (`local`), with fsspec URLs listed through fsspec: a URL
    directory becomes the captures under it (recognised by their first bytes, sorted), a glob its
    matches. Stdin cannot be sent to a cluster."""
    out: list[str] = []
    for path in paths:
        if path == "-":
            raise ConfigError("--dask cannot analyse standard input: give capture files")
        if not is_url(path):
            out += local([path], unusable)
            continue
        try:
            found = _expand_url(path)
        except InputError as exc:
            unusable.append(_unusable(path, str(exc)))
            continue
        if not found:
            unusable.append(_unusable(path, f"{path}: no capture files here"))
        out += found
    return out


def _expand_url(url: str) -> list[str]:
    fsspec = _fsspec()
    try:
        fs, root = fsspec.core.url_to_fs(url)
        if any(c in root for c in "*?["):
            names = sorted(fs.glob(root))
        elif fs.isdir(root):
            names = sorted(p for p in fs.find(root) if _looks_like_capture(fs, p))
            return [_url(fs, url, p) for p in names]
        elif fs.exists(root):
            return [url]
        else:
            raise InputError(f"{url}: no such file or directory")
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{url}: {exc}") from None
    return [_url(fs, url, p) for p in names if not fs.isdir(p)]


def _url(fs: Any, given: str, path: str) -> str:
    """A listed path as a URL in the spelling the user gave (`file:///x`, `s3://b/x`)."""
    scheme = given.split("://", 1)[0]
    stripped = path.lstrip("/") if scheme != "file" else path
    return f"{scheme}://{stripped}"


def _looks_like_capture(fs: Any, path: str) -> bool:
    """As for local directories: recognised by content or name. A compressed file counts (the
    worker checks what is inside and reports it)."""
    if named_like_capture(path.rsplit("/", 1)[-1]):
        return True
    try:
        with fs.open(path, "rb") as fh:
            return _kind(fh.read(8)) is not None
    except OSError:
        return True


def run_groups(address: str, groups: list[list[str]], options: Options,
               done: Callable[[int], None] | None = None) -> list[list[Result]]:
    """Analyse each group as one task on the cluster at `address`; results in the order of
    `groups`, whatever order the tasks finish in. `done(i)` is told as group i finishes."""
    distributed = _distributed()
    tasks = [[(p, _where(p)) for p in group] for group in groups]
    try:
        client: Client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"--dask {address}: cannot connect to the Dask scheduler ({exc})") from None
    with client:
        if not tasks:
            return []
        futures = client.map(analyze_task, tasks, options=options, pure=False)
        if done is not None:
            index = {f.key: i for i, f in enumerate(futures)}
            for future in distributed.as_completed(futures, loop=client.loop):
                done(index[future.key])
        return client.gather(futures)


def _where(path: str) -> str:
    """Where a worker opens `path`: URLs as they are, local paths made absolute (a worker's
    working directory is not the client's)."""
    return path if is_url(path) else os.path.abspath(path)


# -- on a worker -----------------------------------------------------------------------------------


def analyze_task(group: list[tuple[str, str]], options: Options) -> list[Result]:
    """One rotation group on a worker: `(path as given, where to open it)` pairs. Opens URLs
    through fsspec, runs the engine's group analysis, and names every capture as it was given."""
    scratch: str | None = None
    local: dict[str, str] = {}
    failed: list[Result] = []
    try:
        for given, where in group:
            if not is_url(where):
                local[where] = given
                continue
            fsspec = _fsspec()
            from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

            fs, path = fsspec.core.url_to_fs(where)
            if isinstance(fs, LocalFileSystem):
                local[path] = given
                continue
            scratch = scratch or tempfile.mkdtemp(prefix="mqtt-keepalive-")
            copy = os.path.join(scratch, str(len(local) + len(failed)), os.path.basename(path))
            os.makedirs(os.path.dirname(copy))
            try:
                with fs.open(path, "rb") as src, open(copy, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, ValueError) as exc:  # unreadable files sort first, as locally
                failed.append((_unusable(given, f"cannot read: {exc}"), [], []))
                continue
            local[copy] = given
        ordered = _in_time_order(list(local))
        return failed + _renamed(_analyze_group(ordered, options), local)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _renamed(results: list[Result], names: dict[str, str]) -> list[Result]:
    """Put the paths as given back in summaries, warnings, sessions and findings."""
    from dataclasses import replace

    changed = {k: v for k, v in names.items() if k != v}
    if not changed:
        return results
    pattern = re.compile("|".join(re.escape(k) for k in sorted(changed, key=len, reverse=True)))

    def name(text: str) -> str:
        return pattern.sub(lambda m: changed[m.group()], text)

    out: list[Result] = []
    for summary, sessions, findings in results:
        summary = replace(summary, path=name(summary.path),
                          warnings=tuple(name(w) for w in summary.warnings),
                          error=None if summary.error is None else name(summary.error))
        sessions = [replace(s, capture=name(s.capture)) for s in sessions]
        findings = [replace(f, capture=name(f.capture)) for f in findings]
        out.append((summary, sessions, findings))
    return out


# -- optional imports ------------------------------------------------------------------------------


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--dask needs Dask distributed: {EXTRA}") from None
    return distributed


def _fsspec() -> Any:
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:
        raise InputError(f"URLs need fsspec: {EXTRA}") from None
    return fsspec
