"""Rule packs and broker profiles: data that parameterises the checks."""

from analyzer.ruleset.loader import load_ruleset
from analyzer.ruleset.model import BrokerProfile, Rule, RuleSet

__all__ = ["BrokerProfile", "Rule", "RuleSet", "load_ruleset"]
