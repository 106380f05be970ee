"""Why a photo could not be placed or timed, in words its sender can act on.

The likely cause is read from what the photo still carries: a file name that messaging
apps give their re-encoded copies, no camera details at all (stripped on the way), or a
camera that simply recorded no position. The advice on how to resend lives in the reply
templates; this module only names the cause.
"""

from __future__ import annotations

import re

from waypost.apps.journeys.exif import PhotoMetadata

# File names that messaging apps give the copies they re-encode (and strip of location).
_MESSENGERS = (
    (re.compile(r"^(IMG|VID)-\d{8}-WA\d+", re.IGNORECASE), "WhatsApp"),
    (re.compile(r"^WhatsApp Image ", re.IGNORECASE), "WhatsApp"),
    (re.compile(r"^photo_\d{4}-\d\d-\d\d", re.IGNORECASE), "Telegram"),
    (re.compile(r"^signal-\d{4}-\d\d-\d\d", re.IGNORECASE), "Signal"),
    (re.compile(r"^received_\d{6,}", re.IGNORECASE), "Facebook Messenger"),
)
_SCREENSHOT = re.compile(r"^(screenshot|screen shot|bildschirmfoto|capture d.écran)", re.IGNORECASE)


def messenger_of(filename: str | None) -> str | None:
    if not filename:
        return None
    return next((app for pattern, app in _MESSENGERS if pattern.search(filename)), None)


def missing_location(filename: str | None, meta: PhotoMetadata) -> str:
    """'no location: …' with the most likely reason."""
    app = messenger_of(filename)
    if app:
        return f"no location: it was sent through {app}, which removes it"
    if filename and _SCREENSHOT.search(filename):
        return "no location: it is a screenshot, which never has one"
    damaged = next((p for p in meta.problems if p.startswith("GPS") and "time" not in p), None)
    if damaged:
        return f"no location: the one in the photo is unusable ({damaged})"
    if not meta.make and not meta.model and meta.taken_local is None:
        return ("no location: the photo carries no camera details at all, so it was probably "
                "shared through an app or resized, which removes them")
    return "no location: the camera did not record one (is location access on for the camera app?)"


def missing_time(filename: str | None, meta: PhotoMetadata) -> str:
    app = messenger_of(filename)
    if app:
        return f"no time: it was sent through {app}, which removes it"
    return "no time: the photo does not say when it was taken (edited or exported copies often lose it)"
