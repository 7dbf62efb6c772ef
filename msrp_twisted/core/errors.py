"""Error types of the sans-IO core.

Two families matter to callers: a FramingError means the byte stream can no
longer be delimited (close the connection); a MessageError means one frame was
delimited but is invalid (answer it, typically 400, and keep the connection).
"""


class MSRPError(Exception):
    """Base class of every error the core raises on its own."""


class URIError(MSRPError, ValueError):
    """An MSRP URI or path that does not follow RFC 4975 section 9."""


class HeaderError(MSRPError, ValueError):
    """A header value that cannot be parsed into its typed form."""


class FramingError(MSRPError):
    """The stream cannot be framed any more; the connection must be closed."""


class MessageError(MSRPError):
    """A delimited message that is invalid.

    Carries what a reply needs: the transaction id, whether the frame was a
    request, its method, and the status code to answer with (400 by default).
    """

    def __init__(self, reason, tid=None, method=None, is_request=True, code=400, headers=None):
        super().__init__(reason)
        self.reason = reason
        self.tid = tid
        self.method = method
        self.is_request = is_request
        self.code = code
        # Header (name, value) pairs parsed before the error, when any: a
        # reply needs the From-Path to be addressed.
        self.headers = headers


class SerializationError(MSRPError, ValueError):
    """Refusal to build a message that would not be valid on the wire."""
