"""One exception tree, named by who is at fault; each maps to an exit code in the CLI.

Malformed traffic is never an exception that escapes: the framer turns it into a `FramingError`
event and the checks into a finding. "Need more bytes" is a normal return value, not an error.
"""

from __future__ import annotations


class AnalyzerError(Exception):
    """Root of every error this package raises on purpose; never raised bare."""

    exit_code = 2


class UsageError(AnalyzerError):
    """Contradictory or invalid command-line options."""


class ConfigError(AnalyzerError):
    """A settings, environment or project-config problem."""


class RuleSetError(ConfigError):
    """A rule pack or broker profile that cannot be used (names the file and key)."""


class InputError(AnalyzerError):
    """One capture is unreadable or of an unknown format; the run goes on with the others."""


class DecodeError(AnalyzerError):
    """Malformed MQTT or TCP bytes; caught inside the framer and turned into an event."""
