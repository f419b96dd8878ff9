"""The one error type devhost raises for a configuration the user must fix."""


class HostError(Exception):
    """A start-up problem (missing setting, bad host.json, unsupported binding); the message names it."""
