"""Waypost: email photos in, a journey on a map back."""

__version__ = "0.1.0"

# where settings, the database, blobs and the outbox live unless --data-dir / WAYPOST_DATA_DIR say
DEFAULT_DATA_DIR = "data"
