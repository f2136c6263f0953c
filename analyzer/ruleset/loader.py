"""Load the rule set a run judges with: a rule pack (built-in id or file) and a broker profile.

Built-in packs and profiles ship inside the wheel (`analyzer/_rules`, mapped from the repository's
`rules/`) and are found with `importlib.resources`; in a source checkout the repository's `rules/`
is used. User packs and profiles are files. Any problem is a `RuleSetError` naming the file and the
key, because a CI gate must not run on a pack that silently means something else.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from analyzer.errors import RuleSetError
from analyzer.ruleset.model import BrokerProfile, RuleSet
from analyzer.ruleset.packs import load_pack, read_toml
from analyzer.ruleset.profiles import parse_profile

DEFAULT_PACK = "default"
DEFAULT_PROFILE = "spec"


def rules_root() -> Path:
    """Where the built-in packs are: inside the installed package, or the source checkout's rules/."""
    packaged = resources.files("analyzer") / "_rules"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "rules"


def builtin_ids(kind: str) -> list[str]:
    """Ids of the built-in `packs` or `brokers`."""
    return sorted(p.stem for p in (rules_root() / kind).glob("*.toml"))


def load_ruleset(pack: str = DEFAULT_PACK, profile: str | None = None) -> RuleSet:
    """Load a pack and a broker profile, each a built-in id or a path to a TOML file.

    The profile defaults to the pack's own `profile`, else `spec`.
    """
    root = rules_root()
    loaded = load_pack(_locate(pack, root / "packs", "rule pack"), root / "packs")
    chosen = profile or loaded.profile or DEFAULT_PROFILE
    return RuleSet(rules=loaded.rules, profile=load_profile(chosen), tolerance_s=loaded.tolerance_s,
                   packs=tuple(loaded.chain), suppressions=tuple(loaded.suppressions))


def load_profile(profile: str) -> BrokerProfile:
    path = _locate(profile, rules_root() / "brokers", "broker profile")
    return parse_profile(read_toml(path), path)


def _locate(name: str, folder: Path, what: str) -> Path:
    """A built-in id (`mosquitto-2.0`) or a path (`ci/our-fleet.toml`)."""
    if "/" in name or name.endswith(".toml"):
        return Path(name)
    path = folder / f"{name}.toml"
    if not path.exists():
        known = ", ".join(builtin_ids(folder.name))
        raise RuleSetError(f"{name}: no built-in {what} of that name (built-in: {known}); "
                           "give a path to use your own file")
    return path
