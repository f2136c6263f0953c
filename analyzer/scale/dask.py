"""`--dask ADDRESS`: the per-capture analysis on an existing Dask distributed cluster.

The engine expands the inputs and groups rotated files as always; each group then becomes one task
(`engine._analyze_group`) on the cluster, or, when it is large and there are workers to spare,
several tasks, each analysing the connections `analyzer.split` deals to it (`shard_task`), merged
on the client. The results are gathered in input order, so the report is the one `--jobs 1`
gives. Workers need this package installed (the same version) and must see the captures: on
shared storage at the same path (relative paths are sent as absolute ones, the report still shows
them as given), or as fsspec URLs (`s3://bucket/fleet/`, `file:///srv/cap/`) that each worker
opens itself; a remote object is copied to the worker's temporary directory for the time of its
analysis. The client never reads capture data, only lists URL directories and sizes local files.

Dask is an optional extra (`pip install 'mqtt-keepalive[dask]'`); without it `--dask` is exit 2.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from analyzer import engine, split
from analyzer.engine import Options, Result, _analyze_group, _unusable
from analyzer.errors import ConfigError, InputError
from analyzer.model import CaptureSummary
from analyzer.sources.files import named_like_capture, starts_like_capture
from analyzer.sources.rotation import _in_time_order

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = "15s"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
EXTRA = "pip install 'mqtt-keepalive[dask]'"
MAX_SHARDS = 16
"""Tasks one large capture is dealt out among at most: each reads the whole capture."""


def is_url(path: str) -> bool:
    """`s3://...`, `file:///...`: a path to open through fsspec, not the local file system."""
    return bool(_URL.match(path))


# -- on the client ---------------------------------------------------------------------------------


def capture_paths(paths: list[str], unusable: list[CaptureSummary],
                  local: Callable[[list[str], list[CaptureSummary]], list[str]]) -> list[str]:
    """The engine's input expansion (`local`), with fsspec URLs listed through fsspec: a URL
    directory becomes the captures under it (as locally: by their first bytes or their names,
    sorted), a glob its matches. Stdin cannot be sent to a cluster."""
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
    """As for local directories: named like a capture, or recognised by content (inside a
    compressed file too). One that cannot be read counts (the worker reports it)."""
    if named_like_capture(path.rsplit("/", 1)[-1]):
        return True
    try:
        with fs.open(path, "rb") as fh:
            return starts_like_capture(fh)
    except OSError:
        return True


def run_groups(address: str, groups: list[list[str]], options: Options,
               done: Callable[[int], None] | None = None) -> Iterator[list[Result]]:
    """Analyse each group on the cluster at `address`; results in the order of `groups`, whatever
    order the tasks finish in, each as soon as it and those before it are in (and no longer held
    here once taken: a fleet's results do not pile up in the client). `done(i)` is told as group
    i finishes.

    A group is one task, except a large capture (or rotation) when the cluster has more worker
    processes than there are large groups: as with `--jobs`, its connections are dealt out among
    its share of the workers (`shard_task`), and the client merges the parts (`analyzer.split`);
    if the merge might not be one analysis's result, the group is analysed again as one task."""
    distributed = _distributed()
    tasks = [[(p, _where(p)) for p in group] for group in groups]
    try:
        client: Client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"--dask {address}: cannot connect to the Dask scheduler ({exc})") from None
    with client:
        if not tasks:
            return
        large = [_splits(group, options) for group in groups]
        # each task of a share reads the whole capture: no more tasks than worker processes
        count = min(MAX_SHARDS, len(client.nthreads()) // max(1, sum(large)))
        split_at = {i for i, is_large in enumerate(large) if is_large and count > 1}
        futures = [
            [client.submit(shard_task, task, options, index, count, pure=False)
             for index in range(count)]
            if i in split_at else [client.submit(analyze_task, task, options, pure=False)]
            for i, task in enumerate(tasks)
        ]
        group_of = {f.key: i for i, group_futures in enumerate(futures) for f in group_futures}
        left = [len(group_futures) for group_futures in futures]
        results: dict[int, list[Result]] = {}
        taken = 0
        finished = distributed.as_completed([f for fs in futures for f in fs], loop=client.loop)
        for future in finished:
            i = group_of[future.key]
            left[i] -= 1
            if left[i]:
                continue
            if i not in split_at:
                result = futures[i][0].result()
            else:
                split_at.discard(i)
                result = _merged(futures[i])
                if result is None:  # analysed again as one task, collected like the others
                    again = client.submit(analyze_task, tasks[i], options, pure=False)
                    futures[i], group_of[again.key], left[i] = [again], i, 1
                    finished.add(again)
                    continue
            results[i], futures[i] = result, []  # (the cluster may forget it)
            if done is not None:
                done(i)
            while taken in results:
                yield results.pop(taken)
                taken += 1
        missing = [groups[i][0] for i in range(taken, len(groups))]
        if missing:  # never silently: a check must not pass on fewer captures than it was given
            raise RuntimeError(f"--dask: no result for {', '.join(missing)}")


def _merged(shards: list[Any]) -> list[Result] | None:
    """The parts the shard tasks of one group sent, landed in local files and merged (None: the
    merge might not be one analysis's result)."""
    landed: list[list[split._Part]] = []
    try:
        for shard in shards:
            landed.append(split.landed(shard.result()))
    except BaseException:
        split.discard(landed)
        raise
    return split.merge_shards(landed)


def _splits(group: list[str], options: Options) -> bool:
    """Is this group large enough to be dealt out among several tasks (as `--jobs` would)? Only
    paths that the client sees too (shared storage): a URL is one task, as its copy is."""
    if options.packet_hook is not None or any(is_url(p) for p in group):
        return False
    return sum(engine._size(p) for p in group) >= engine.SPLIT_MIN_BYTES


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


def shard_task(group: list[tuple[str, str]], options: Options, index: int,
               count: int) -> list[split._Part]:
    """Share `index` of `count` of a large capture (or rotation) on shared storage: the
    connections `analyzer.split` deals to it, its record files sent back with it as bytes, every
    capture named as it was given."""
    names = {where: given for given, where in group}
    parts = split._run_shard(_in_time_order(list(names)), options, index, count)
    name = _renaming(names)
    if name is None:
        return split.portable(parts)
    renamed = [replace(part, summary=_renamed_summary(part.summary, name),
                       returned_sessions=[_renamed_record(s, name) for s in part.returned_sessions],
                       returned_findings=[_renamed_record(f, name) for f in part.returned_findings])
               for part in parts]
    return split.portable(renamed, lambda record: _renamed_record(record, name))


def _renamed(results: list[Result], names: dict[str, str]) -> list[Result]:
    """Put the paths as given back in summaries, warnings, sessions and findings."""
    name = _renaming(names)
    if name is None:
        return results
    return [(_renamed_summary(summary, name), [_renamed_record(s, name) for s in sessions],
             [_renamed_record(f, name) for f in findings])
            for summary, sessions, findings in results]


def _renamed_record(record: Any, name: Callable[[str], str]) -> Any:
    """A session or finding with its capture's path as given."""
    return replace(record, capture=name(record.capture))


def _renaming(names: dict[str, str]) -> Callable[[str], str] | None:
    """A function putting the paths as given (`names`: by where they were opened) back in a
    text; None if every path was opened as given."""
    changed = {k: v for k, v in names.items() if k != v}
    if not changed:
        return None
    pattern = re.compile("|".join(re.escape(k) for k in sorted(changed, key=len, reverse=True)))

    def name(text: str) -> str:
        return pattern.sub(lambda m: changed[m.group()], text)

    return name


def _renamed_summary(summary: CaptureSummary, name: Callable[[str], str]) -> CaptureSummary:
    return replace(summary, path=name(summary.path), warnings=tuple(name(w) for w in summary.warnings),
                   error=None if summary.error is None else name(summary.error))


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
