"""`config show`: each setting's effective value and where it came from."""

from __future__ import annotations

import typer

from analyzer import config
from analyzer.cli.common import (
    AllowEmpty,
    AssumeKeepAlive,
    CsvTable,
    ExitZero,
    FailOn,
    FailOnOpt,
    Format,
    Jobs,
    EXTRAS,
    Dask,
    Html,
    Junit,
    Output,
    OutputFormat,
    Ports,
    Profile,
    Quiet,
    Rules,
    Table,
    TlsKeylog,
    app,
    settings,
)

config_app = typer.Typer(help="Settings from the command line, environment and project file.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show", epilog=EXTRAS)
def config_show(
    ctx: typer.Context,
    rules: Rules = "default",
    profile: Profile = None,
    port: Ports = [1883, 8883],  # noqa: B006 - typer reads the default from here
    assume_keep_alive: AssumeKeepAlive = None,
    fail_on: FailOnOpt = FailOn.error,
    junit: Junit = None,
    html: Html = None,
    dask: Dask = None,
    fmt: Format = OutputFormat.table,
    output: Output = None,
    table: Table = CsvTable.findings,
    allow_empty: AllowEmpty = False,
    exit_zero: ExitZero = False,
    jobs: Jobs = None,
    quiet: Quiet = False,
    tls_keylog: TlsKeylog = [],  # noqa: B006
) -> None:
    """The settings check would use with these options: value and source of each (command line >
    MQTT_KEEPALIVE_<NAME> > project file > default)."""
    resolved = settings(ctx, rules=rules, profile=profile, port=port,
                        assume_keep_alive=assume_keep_alive, fail_on=fail_on, junit=junit, html=html, dask=dask, fmt=fmt,
                        output=output, table=table, allow_empty=allow_empty, exit_zero=exit_zero,
                        jobs=jobs, quiet=quiet, tls_keylog=tls_keylog, columnar=False)
    if resolved.file:
        typer.echo(f"project file: {resolved.file.path}")
    else:
        typer.echo(f"project file: none (no {config.FILE_NAME}, no pyproject.toml with a "
                   "tool.mqtt-keepalive table, here or above)")
    rows = [(name.replace("_", "-"), _shown(name, resolved[name]), resolved.sources[name])
            for name in config.SETTINGS]
    width = max(len(row[1]) for row in rows)
    for key, value, source in rows:
        typer.echo(f"{key:<18} {value:<{width}}  {source}")


def _shown(name: str, value: object) -> str:
    if name == "jobs" and value is None:
        return f"{config.default_jobs()} (one per core)"
    if name == "columnar" and value is None:
        from analyzer.engine import COLUMNAR_MIN_BYTES

        return f"auto (captures of {COLUMNAR_MIN_BYTES >> 20} MiB or more)"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)
