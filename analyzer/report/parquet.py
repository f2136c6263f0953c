"""`--format parquet -o DIR`: the sessions and findings tables as Parquet files, for fleet queries.

Writes `DIR/sessions.parquet` and `DIR/findings.parquet` (the directory is created), each exactly
the frame of `tables.py`: same columns, order and nullable dtypes (pandas' metadata in the file
restores them on `pandas.read_parquet`). Rows are written a chunk at a time, one row group each
(`tables.frames_in_chunks`), so a report spooled on disk is never one DataFrame in memory. Both
files are written even when a table is empty, so a query over many runs' directories always finds
them. Needs pyarrow (`pip install 'mqtt-keepalive[parquet]'`).
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
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError("--format parquet needs pyarrow: pip install 'mqtt-keepalive[parquet]'") from None
    from analyzer.report.tables import frames_in_chunks

    os.makedirs(directory, exist_ok=True)
    written = []
    for name in tables:
        path = os.path.join(directory, f"{name}.parquet")
        writer = None
        try:
            for frame in frames_in_chunks(report, name):  # one row group each
                chunk = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(path, chunk.schema)
                writer.write_table(chunk)
        finally:
            if writer is not None:
                writer.close()
        written.append(path)
    return written
