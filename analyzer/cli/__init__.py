"""The `mqtt-keepalive` command: parse options, call `analyze()`, render, map to an exit code.

Glue only; no analysis happens here. `common` holds the typer `app`, the shared option definitions
and settings resolution; each command lives in its own module: `analyze_cmd` (analyze, sessions),
`check_cmd` (the CI gate), `rules_cmd` (rules list|validate|profiles, explain), `config_cmd` (config show).
"""

from __future__ import annotations

import os
import sys

from analyzer._version import __version__
from analyzer.cli import analyze_cmd, check_cmd, config_cmd, live_cmd, rules_cmd  # noqa: F401 - register
from analyzer.cli.common import app, error

ISSUES_URL = "see README.md, Reporting bugs"

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: a bug becomes exit 4 with a short note, never a traceback with locals."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        error(f"internal error ({type(exc).__name__}: {exc}); this is a bug in mqtt-keepalive "
              f"{__version__}: please report it on the project's issue tracker ({ISSUES_URL}) "
              "with the command line; MQTT_KEEPALIVE_DEBUG=1 shows the traceback")
        if os.environ.get("MQTT_KEEPALIVE_DEBUG") == "1":
            raise
        sys.exit(4)
