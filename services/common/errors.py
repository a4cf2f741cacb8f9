"""The exceptions zmqstream raises on purpose.

    PipelineError
    ├── InvalidChannel   a channel path or query that breaks the grammar or a limit
    ├── ProtocolError    a wire message that cannot be decoded (version, type, shape)
    └── ConfigError      a setting from the environment or a flag that makes no sense

Every long-running loop catches PipelineError per message, logs it and carries on.
"""


class PipelineError(Exception):
    """Root of every error zmqstream raises on purpose."""


class InvalidChannel(PipelineError):
    """The channel path (or the query behind it) is malformed or over a limit."""


class ProtocolError(PipelineError):
    """A ZeroMQ message is not one this version of the protocol understands."""


class ConfigError(PipelineError):
    """A setting is out of range or malformed."""
