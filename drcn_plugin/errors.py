"""The exception types front ends turn into a one-line message for the user."""


class DRCNError(Exception):
    """A user-facing problem (bad option, unreadable file, missing weights, ...)."""


class Cancelled(DRCNError):
    """The caller asked the engine to stop between tiles."""


class BadImageError(DRCNError):
    """An input image that cannot be decoded, or cannot be written in the asked format."""


class OutputExistsError(DRCNError):
    """The output file exists and replacing it was not asked for."""


class InputConflictError(DRCNError):
    """An output would land on an input, or inside a place reserved for inputs."""


class ModelLoadError(DRCNError):
    """Weights that are missing, unreadable, of the wrong shape, or not finite."""


class NotEnoughMemoryError(DRCNError):
    """The job needs more memory than the machine has available."""


class DiskFullError(DRCNError):
    """The file system ran out of space while writing; nothing was written."""
