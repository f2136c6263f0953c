"""`rules list|validate|profiles`, `explain RULE` and `config show`: what the gate judges with."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer

from analyzer import config
from analyzer.cli.common import Profile, Rules, app, error, fail, load_rules, settings
from analyzer.errors import AnalyzerError, RuleSetError
from analyzer.explain import explanation, param_meaning
from analyzer.ruleset import BrokerProfile, Rule, builtin_ids, load_profile, load_ruleset

rules_app = typer.Typer(help="The rules in force and the broker profiles.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("list")
def rules_list(ctx: typer.Context, rules: Rules = "default", profile: Profile = None) -> None:
    """Rules of the active pack (ids, names, sides, severities, parameters) and its profile."""
    s = settings(ctx, rules=rules, profile=profile)
    ruleset = load_rules(s["rules"], s["profile"])
    typer.echo(f"pack: {' -> '.join(ruleset.packs)}; tolerance {ruleset.tolerance_s:g} s; "
               f"{len(ruleset.suppressions)} suppression(s)")
    typer.echo(f"profile: {profile_line(ruleset.profile, 0)}")
    typer.echo(f"  {ruleset.profile.description}")
    typer.echo("")
    rows = [("id", "name", "side", "severity", "enabled", "parameters")]
    rows += [_rule_row(r) for _, r in sorted(ruleset.rules.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[5])
    for sup in ruleset.suppressions:
        typer.echo(f"suppressed: {sup.rule_id} for client ids {sup.client_id!r} until "
                   f"{sup.expires.isoformat()} ({sup.reason})")


def _rule_row(rule: Rule) -> tuple[str, str, str, str, str, str]:
    params = ", ".join(f"{k}={v:g}" for k, v in sorted(rule.params.items())) or "-"
    return (rule.rule_id, rule.name, rule.side, rule.severity.label,
            "yes" if rule.enabled else "no", params)


@rules_app.command("validate")
def rules_validate(files: Annotated[list[Path], typer.Argument(
        help="Rule packs, broker profiles or settings files (mqtt-keepalive.toml, pyproject.toml).",
        show_default=False)]) -> None:
    """Check files without running anything: exit 0 when all are valid, 2 otherwise."""
    bad = 0
    for path in files:
        try:
            typer.echo(f"{path}: valid {_validate(path)}")
        except AnalyzerError as exc:
            error(str(exc))
            bad += 1
    raise typer.Exit(2 if bad else 0)


def _validate(path: Path) -> str:
    """What `path` is, once it loaded: its top-level tables say which kind of file it is."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RuleSetError(f"{path}: not valid TOML: {exc}") from None
    if "broker" in data:
        return f"broker profile {load_profile(str(path)).profile_id}"
    if data.keys() & {"pack", "rule", "suppress", "params"}:
        ruleset = load_ruleset(_as_path(path))
        return (f"rule pack {' -> '.join(ruleset.packs)} ({len(ruleset.rules)} rules, profile "
                f"{ruleset.profile.profile_id}, {len(ruleset.suppressions)} suppression(s))")
    if path.name in ("pyproject.toml", config.FILE_NAME):
        found = config.find_file(path.parent)
        if found is None or found.path.resolve() != path.resolve():
            return "project file (no [tool.mqtt-keepalive] table)"
        return f"settings file ({len(config.file_values(found))} setting(s))"
    raise RuleSetError(f"{path}: neither a rule pack ([pack], [[rule]]) nor a broker profile "
                       "([broker])")


def _as_path(path: Path) -> str:
    """The loader takes a bare name as a built-in id: make it look like a path."""
    text = str(path)
    return text if "/" in text or text.endswith(".toml") else f"./{text}"


@rules_app.command("profiles")
def rules_profiles() -> None:
    """The built-in broker profiles, one line each."""
    for profile_id in builtin_ids("brokers"):
        try:
            typer.echo(profile_line(load_profile(profile_id)))
        except AnalyzerError as exc:
            fail(exc)


def profile_line(p: BrokerProfile, width: int = 15) -> str:
    timer = "timer from CONNACK" if p.timer_start == "connack" else "timer from CONNECT"
    return (f"{p.profile_id:<{width}} x{p.multiplier:<4g} close on time in {window_formula(p)}; "
            f"{limits_text(p)}; {timer}")


def window_formula(p: BrokerProfile) -> str:
    """The on-time close window in client silence, in terms of K (the enforced Keep Alive)."""
    deadline = f"{p.multiplier:g}K"
    if p.deadline_max_s is not None:
        deadline = f"min({deadline}, {p.deadline_max_s:g})"
    early = _terms(p.early_s, p.early_k)
    late = _terms(p.late_s, p.late_k)
    if late and p.late_max_s is not None:
        late = f"min({late}, {p.late_max_s:g})"
    low = f"{deadline} - {_paren(early)}" if early else deadline
    high = f"{deadline} + {_paren(late)}" if late else deadline
    return f"[{low}, {high}] s"


def _terms(seconds: float, per_k: float) -> str:
    parts = ([f"{seconds:g}"] if seconds else []) + ([f"{per_k:g}K"] if per_k else [])
    return " + ".join(parts)


def _paren(term: str) -> str:
    return f"({term})" if " + " in term else term


def limits_text(p: BrokerProfile) -> str:
    if p.min_keep_alive_s is None and p.max_keep_alive_s is None:
        limits = "K limits: none"
    else:
        low = "" if p.min_keep_alive_s is None else str(p.min_keep_alive_s)
        high = "" if p.max_keep_alive_s is None else str(p.max_keep_alive_s)
        limits = f"K limits: {low}..{high} s (above: {p.above_max})"
    zero = {"disabled": "not enforced", "reject": "refused",
            "max": f"enforced as {p.max_keep_alive_s} s"}[p.zero_keep_alive]
    return f"{limits}; K = 0 {zero}"


@app.command("explain")
def explain_command(rule: Annotated[str, typer.Argument(
        help="A rule id (KA102) or name (client-deadline-exceeded).", show_default=False)]) -> None:
    """What a rule checks, why, its spec references, parameters and an example."""
    rules = load_rules("default", None).rules
    by_name = {r.name: r for r in rules.values()}
    found = rules.get(rule.upper()) or by_name.get(rule.lower())
    text = explanation(found.rule_id) if found else None
    if found is None or text is None:
        error(f"unknown rule {rule!r}; known: {', '.join(sorted(rules))}")
        raise typer.Exit(2)
    off = "" if found.enabled else " (disabled in the default pack)"
    typer.echo(f"{found.rule_id} {found.name}\n")
    typer.echo(f"side: {found.side}; default severity: {found.severity.label}{off}")
    typer.echo(f"spec: {', '.join(found.spec) or '- (not a spec requirement)'}")
    for name, value in sorted(found.params.items()):
        typer.echo(f"parameter {name} = {value:g}: {param_meaning(found.rule_id, name)}")
    for title, body in (("What it checks", text.checks), ("Why", text.why),
                        ("Example", text.example)):
        typer.echo(f"\n{title}:\n  {body}")
