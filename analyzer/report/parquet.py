"""`--format parquet -o DIR`: the sessions and findings tables as Parquet files, for fleet queries.

Writes `DIR/sessions.parquet` and `DIR/findings.parquet` (the directory is created), each exactly
the frame of `tables.py`: same columns, order and nullable dtypes (pandas' metadata in the file
restores them on `pandas.read_parquet`). Both files are written even when a table is empty, so a
query over many runs' directories always finds them. Needs pyarrow (`pip install
'mqtt-keepalive[parquet]'`).
"""

from __future__ import annotations

import os

from analyzer.errors import ConfigError
from analyzer.model import Report

TABLES = ("sessions", "findings")


def write_parquet(report: Report, directory: str, tables: tuple[str, ...] = TABLES) -> list[str]:
    """Write the report's `tables` into `directory`; returns the files written. A missing pyarrow
    is a ConfigError (exit 2); a directory that cannot be written raises OSError."""
    try:
        import pyarrow  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ConfigError("--format parquet needs pyarrow: pip install 'mqtt-keepalive[parquet]'") from None
    from analyzer.report.tables import findings_frame, sessions_frame

    os.makedirs(directory, exist_ok=True)
    written = []
    frames = {"sessions": sessions_frame, "findings": findings_frame}
    for name in tables:
        frame = frames[name](report)
        path = os.path.join(directory, f"{name}.parquet")
        frame.to_parquet(path, engine="pyarrow", index=False)
        written.append(path)
    return written
