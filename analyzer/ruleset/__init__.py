"""Rule packs and broker profiles: data that parameterises the checks."""

from analyzer.ruleset.loader import builtin_ids, load_profile, load_ruleset
from analyzer.ruleset.model import BrokerProfile, Rule, RuleSet, Suppression

__all__ = ["BrokerProfile", "Rule", "RuleSet", "Suppression", "builtin_ids", "load_profile",
           "load_ruleset"]
