"""Waypost: email photos in, a journey on a map back."""

__version__ = "0.1.0"
