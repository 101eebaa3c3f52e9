"""User-facing errors. Each message names the problem and how to fix it; the CLI prints it on
one line and exits with status 2. `assert` stays for our own invariants."""


class LongvidError(Exception):
    """Base class: bad input from the user (config, timeline, weights, output path)."""


class ConfigError(LongvidError):
    """A config file or override is invalid."""


class TimelineError(LongvidError):
    """A prompt timeline is invalid."""


class WeightsError(LongvidError):
    """A weight file is missing, truncated, corrupt or does not match the model."""


class OutputError(LongvidError):
    """An output path cannot be written."""


class ResumeError(LongvidError):
    """A run cannot be resumed: its manifest or saved state is missing, damaged or does not
    match."""
