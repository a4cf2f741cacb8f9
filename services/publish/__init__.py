"""Publishing your own rows into a channel (`pub-<name>`): the client of the recorder's publish socket."""

from services.publish.client import Publisher, PublishError, Refused, Unreachable

__all__ = ["PublishError", "Publisher", "Refused", "Unreachable"]
