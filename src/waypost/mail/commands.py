"""Commands a person writes to Waypost: in the Subject, or as the first line of the body above
any quoted text. Case and punctuation do not matter, and a few natural synonyms are read.

Quotes and signatures are left out by a small reader of our own rather than a reply-parsing
library (mail-parser-reply and the like): a command is one short line written *above*
everything else, so only the first non-blank line of the text part is read, and a line that
starts a quote (``>``) or a signature (``--``) ends the search. What comes below (attributions
such as "On … wrote:", Outlook's "From:/Sent:" block, the quoted mail) is never reached, so
their many languages and layouts need no table here. A sentence that merely mentions a word
("please stop sending me the big photos") is no command: the whole line must be one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Verb(StrEnum):
    HELP = "help"
    LIST = "list"
    RENAME = "rename"
    NEW_LINK = "new link"
    REVOKE_LINK = "revoke link"
    DELETE = "delete"
    STOP = "stop"
    START = "start"
    EXPORT = "export"
    ERASE = "delete my data"
    YES = "yes"  # the answer to "delete my data"'s confirmation, in its thread
    HIDE = "hide home"  # in a journey's thread, with a photo number or a place name


@dataclass(frozen=True)
class Command:
    verb: Verb
    argument: str = ""  # the new title, for rename; the photo or place, for hide home


# every phrase, after normalising (lower case, punctuation gone, single spaces)
PHRASES: dict[str, Verb] = {
    **dict.fromkeys(("help", "commands", "menu", "info", "how does this work"), Verb.HELP),
    **dict.fromkeys(("list", "my journeys", "journeys", "list journeys", "list my journeys"), Verb.LIST),
    **dict.fromkeys(("new link", "rotate link", "renew link", "reset link", "new share link"), Verb.NEW_LINK),
    **dict.fromkeys(("revoke link", "revoke", "turn off link", "disable link", "remove link", "stop sharing",
                     "unshare"), Verb.REVOKE_LINK),
    **dict.fromkeys(("delete", "delete journey", "delete this journey", "delete this", "remove journey"),
                    Verb.DELETE),
    **dict.fromkeys(("stop", "unsubscribe", "stop all", "stop mail", "stop all mail", "remove me", "opt out",
                     "optout", "leave"), Verb.STOP),
    **dict.fromkeys(("start", "subscribe", "resume", "unstop", "start again", "opt in"), Verb.START),
    **dict.fromkeys(("export", "export my data", "my data", "send my data", "download my data", "get my data",
                     "data export"), Verb.EXPORT),
    **dict.fromkeys(("delete my data", "forget me", "erase me", "delete everything", "erase my data",
                     "delete all my data", "erase everything", "delete me", "remove my data"), Verb.ERASE),
    **dict.fromkeys(("yes", "yes delete", "yes erase", "yes delete my data", "yes delete everything",
                     "yes erase me", "yes forget me", "confirm", "confirmed", "i confirm"), Verb.YES),
}
POLITE = re.compile(r"^(?:please )?(.*?)(?: please| thanks| thank you)?$")
# reply and forward prefixes of common mail clients (en, de, nl, fr, sv, …), any number of them
SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg|sv|antw|tr|rif)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
RENAME = re.compile(r"^\s*(?:please\s+)?(?:rename|retitle)\b[\s:,.-]*(?:to\b[\s:,.-]*)?(?P<title>.*?)\s*$",
                    re.IGNORECASE)
# "hide home photo 3", "Hide my home: Belém", "please hide home"
HIDE = re.compile(r"^\s*(?:please\s+)?hide\s+(?:my\s+)?home\b[\s:,.-]*(?P<where>.*?)[\s.!]*$", re.IGNORECASE)
QUOTES = "\"'“”‘’«»„"
TITLE_MAX = 200


def normalise(line: str) -> str:
    """Lower case, punctuation and extra spaces gone: ``Stop!`` and ``  STOP. `` read ``stop``."""
    words = re.sub(r"[^\w]+", " ", line.lower()).split()
    return " ".join(words)


def read_line(line: str) -> Command | None:
    """The command one line holds, or None."""
    rename = RENAME.match(line)
    if rename is not None:
        title = rename.group("title").strip().strip(QUOTES).strip()[:TITLE_MAX]
        return Command(Verb.RENAME, title) if title else None
    hide = HIDE.match(line)
    if hide is not None:
        return Command(Verb.HIDE, hide.group("where").strip().strip(QUOTES).strip()[:TITLE_MAX])
    match = POLITE.match(normalise(line))
    phrase = match.group(1) if match else ""
    verb = PHRASES.get(phrase)
    return Command(verb) if verb is not None else None


def first_line(text: str) -> str:
    """The first non-blank line of a body, or "" when it starts with a quote or a signature."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith((">", "--", "__")):
            return ""
        return stripped
    return ""


def read_command(subject: str, text: str) -> Command | None:
    """The command of a mail: the Subject's (reply prefixes left out) wins, then the body's
    first line. None: the mail holds none."""
    return read_line(SUBJECT_PREFIX.sub("", subject or "")) or read_line(first_line(text or ""))
