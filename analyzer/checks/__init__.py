"""The checks: pure functions from the timeline's observations to findings.

`Judge` routes each observation to the checks that apply to it; which rules exist, how severe they
are and their parameters come from the rule pack (`analyzer.ruleset`), never from here.
"""

from __future__ import annotations

from analyzer.checks.base import NS
from analyzer.checks.broker_timing import broker_enforcement
from analyzer.checks.client_timing import client_silence
from analyzer.checks.cadence import ping_cadence
from analyzer.checks.pings import malformed_ping, ping_outcome, unsolicited_pingresp
from analyzer.checks.session_facts import session_facts
from analyzer.model import Finding
from analyzer.ruleset.model import RuleSet
from analyzer.session.observations import MalformedPing, PingOutcome, Silence, UnsolicitedPingresp
from analyzer.session.timeline import Observation, SessionTimeline

FINAL_WHILE_OPEN = frozenset({"KA101", "KA102", "KA103", "KA105", "KA201", "KA203", "KA106"})
"""Rules whose verdict on an open interval is final once its deadline has passed."""

_NEVER = 1 << 62
"""No silence ended by a packet matters when Keep Alive is unknown or 0."""


class Judge:
    """Applies the rule set to observations as a session produces them."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._floors: dict[int, int] = {}
        self._ping_floors: dict[int, int] = {}

    def observations(self, observed: list[Observation], tl: SessionTimeline) -> list[Finding]:
        out: list[Finding] = []
        for obs in observed:
            if isinstance(obs, Silence):
                out += client_silence(obs, tl, self.ruleset)
                out += broker_enforcement(obs, tl, self.ruleset)
            elif isinstance(obs, PingOutcome):
                out += ping_outcome(obs, tl, self.ruleset)
            elif isinstance(obs, MalformedPing):
                out += malformed_ping(obs, tl, self.ruleset)
            elif isinstance(obs, UnsolicitedPingresp):
                out += unsolicited_pingresp(obs, tl, self.ruleset)
        return out

    def silence_floor_ns(self, keep_alive_s: int | None) -> int:
        """The longest silence ended by a client packet that no check objects to, for a given K.

        KA101/KA103/KA105/KA902 start above K + tolerance and KA201 above the end of the broker
        profile's window + tolerance; other checks look only at silences ended by a close. The timeline skips
        building observations for shorter silences, which are nearly all of them.
        """
        if not keep_alive_s:
            return _NEVER
        floor = self._floors.get(keep_alive_s)
        if floor is None:
            shortest = float(keep_alive_s)
            k_enf = self.ruleset.profile.enforced_keep_alive(keep_alive_s)
            if k_enf is not None:
                shortest = min(shortest, self.ruleset.profile.window_s(k_enf)[1])
            floor = self._floors[keep_alive_s] = int((shortest + self.ruleset.tolerance_s) * NS)
        return floor

    def ping_floor_ns(self, keep_alive_s: int | None) -> int:
        """The longest PINGREQ->PINGRESP latency that no check objects to, for a given K.

        An answered ping can only break KA203 (answer later than `wait_k` x K), KA204 (later than
        its threshold) or KA106 (the client waited past `close_within_k` x K); the timeline skips
        building observations for pings answered sooner than all of them. Rules missing from the
        pack do not count; disabled ones still do (a floor only ever needs to be low enough).
        """
        key = -1 if keep_alive_s is None else keep_alive_s
        floor = self._ping_floors.get(key)
        if floor is None:
            rules, tol = self.ruleset.rules, self.ruleset.tolerance_s
            limits: list[float] = []
            if "KA204" in rules:
                limits.append(rules["KA204"].params["threshold_s"])
            if keep_alive_s:
                if "KA203" in rules:
                    limits.append(rules["KA203"].params["wait_k"] * keep_alive_s)
                if "KA106" in rules:
                    limits.append(rules["KA106"].params["close_within_k"] * keep_alive_s)
            floor = int((min(limits) + tol) * NS) - 1 if limits else _NEVER
            self._ping_floors[key] = floor
        return floor

    def pending(self, tl: SessionTimeline, now_frame: int, now_ns: int) -> list[Finding]:
        """Findings that are already certain while an interval is still open (live mode).

        Only rules that nothing later can withdraw: a silence only grows, and an unanswered PINGREQ
        stays unanswered until it is answered late (still a violation) or the connection ends. The
        caller must not ask while a capture gap is suspected in the client's direction, since a
        packet hidden there would turn the verdict into KA902.
        """
        found = self.observations(tl.provisional(now_frame, now_ns), tl)
        return [f for f in found if f.rule_id in FINAL_WHILE_OPEN]

    def finished(self, tl: SessionTimeline) -> list[Finding]:
        return session_facts(tl, self.ruleset) + ping_cadence(tl, self.ruleset)


__all__ = ["Judge"]
