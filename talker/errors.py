"""The package's own exception types.

Everything a user can get wrong (audio, arguments, checkpoints) raises a subclass of
:class:`TalkerError` whose message names what is wrong and what is accepted, so the CLI and the
app can show it as one line.
"""


class TalkerError(Exception):
    """Base class of every error the package raises on bad input."""


class AudioError(TalkerError, ValueError):
    """Audio that cannot be used: unreadable, empty, corrupt, non-finite, too long or too short."""


class InputError(TalkerError, ValueError):
    """An argument outside what is accepted (pose mode, emotion, steps, shapes, ...)."""


class CheckpointError(TalkerError, OSError):
    """A speaker checkpoint that cannot be loaded: missing folder, file or component."""


class VideoError(TalkerError, OSError):
    """A video that cannot be written or read."""
