"""Which rules the checks implement, and the parameters each one takes.

A pack may only name rules listed here and only these parameters: anything else is a load error,
because a misspelt rule or parameter in a CI pack would otherwise silently change nothing.
"""

from __future__ import annotations

RULE_PARAMS: dict[str, frozenset[str]] = {
    "KA101": frozenset(),
    "KA102": frozenset(),
    "KA103": frozenset(),
    "KA104": frozenset({"min_count", "near_k"}),
    "KA105": frozenset(),
    "KA106": frozenset({"close_within_k"}),
    "KA107": frozenset({"min_pings"}),
    "KA201": frozenset(),
    "KA202": frozenset({"min_idle_k"}),
    "KA203": frozenset({"wait_k"}),
    "KA204": frozenset({"threshold_s"}),
    "KA205": frozenset(),
    "KA301": frozenset(),
    "KA302": frozenset(),
    "KA303": frozenset(),
    "KA401": frozenset(),
    "KA901": frozenset(),
    "KA902": frozenset(),
}
