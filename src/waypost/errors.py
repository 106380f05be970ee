"""One exception root for processing errors. Configuration errors (``ConfigError``) stay
outside it on purpose, so no handler of processing errors can swallow them."""


class ConfigError(Exception):
    """The configuration cannot be used. Deliberately outside ``WaypostError``: nothing
    that handles processing errors may swallow it."""


class WaypostError(Exception):
    """Root of every error Waypost raises while processing mail or serving requests."""


class StorageError(WaypostError):
    """A blob or database write could not be made durable; the caller must not acknowledge."""


class PermanentError(WaypostError):
    """Retrying cannot help (malformed input, a refused recipient); dead-letter or fail now."""


class TransientError(WaypostError):
    """Retrying later may help (a lock, a throttled provider, a network blip)."""
