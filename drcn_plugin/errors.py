"""The one exception type front ends turn into a one-line message for the user."""


class DRCNError(Exception):
    """A user-facing problem (bad option, unreadable file, missing weights, ...)."""


class Cancelled(DRCNError):
    """The caller asked the engine to stop between tiles."""


class MissingDependencyError(DRCNError):
    """An optional extra is not installed; the message says what to install."""
