"""Why a recipient failed: one reason from one vocabulary, and what that reason lets us conclude.

The reason names are those of the sisimai project (so our results can be compared with its
published expectations); the tables and code here are our own. Evidence is weighed in this
order, the first that speaks wins:

1. a provider's own enhanced code that names one cause (Gmail 5.7.26, Microsoft 5.7.515, ...);
2. a phrase in the diagnostic text (provider and MTA wording, most specific first);
3. the enhanced status code (RFC 3463 subject and detail);
4. the SMTP reply code alone (RFC 5321 §4.2.3);
5. the class: 4.x.x (temporary) or 5.x.x (permanent) with nothing more, "undefined".

What each reason does is one row of ``REASONS``: its ``family`` decides the policy
(``dead``: the address is proven not to exist, suppress; ``setup``: about our sending, never
suppress, count toward the setup alarm; ``transient``: score as a soft bounce; ``message``: the
message was refused, record; ``info``: not a failure). ``advice`` tells the operator what to
check. docs/feedback.md shows the same table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from waypost.feedback.phrases import Caseless, PhraseTable

DEAD, SETUP, TRANSIENT, MESSAGE, INFO = "dead", "setup", "transient", "message", "info"


@dataclass(frozen=True)
class ReasonInfo:
    family: str
    advice: str


REASONS: dict[str, ReasonInfo] = {
    # the address is proven dead: only these suppress at once
    "userunknown": ReasonInfo(DEAD, "the mailbox does not exist"),
    "hostunknown": ReasonInfo(DEAD, "the recipient's domain does not exist"),
    "hasmoved": ReasonInfo(DEAD, "the mailbox has moved and left no forwarding address"),
    "notaccept": ReasonInfo(DEAD, "the domain accepts no mail (null MX, RFC 7505, or no mail host)"),
    # about our sending: never the recipient's fault
    "authfailure": ReasonInfo(SETUP, "SPF, DKIM and DMARC alignment of the From domain (Gmail 5.7.26, "
                                     "Microsoft 5.7.509/5.7.515: DMARC must pass)"),
    "blocked": ReasonInfo(SETUP, "the sending IP address is blocked: check blocklists (DNSBL) and the "
                                 "provider's postmaster pages"),
    "badreputation": ReasonInfo(SETUP, "the sending IP or domain reputation (Gmail Postmaster Tools, "
                                       "Microsoft SNDS); slow down and check complaints"),
    "requireptr": ReasonInfo(SETUP, "reverse DNS (PTR) of the sending IP, and that it resolves back"),
    "spamdetected": ReasonInfo(SETUP, "our message was scored as spam: check its content and links"),
    "policyviolation": ReasonInfo(SETUP, "the receiver's policy refused our message: read the diagnostic"),
    "norelaying": ReasonInfo(SETUP, "the relay refused to relay: check the smarthost or SES identity"),
    "securityerror": ReasonInfo(SETUP, "the receiver requires authentication or TLS we did not offer"),
    "toomanyconn": ReasonInfo(SETUP, "we sent too fast or too many at once: lower the sending rate"),
    "speeding": ReasonInfo(SETUP, "we sent too fast: lower the sending rate"),
    "contenterror": ReasonInfo(SETUP, "the message's format was refused: check composition"),
    "rejected": ReasonInfo(SETUP, "our envelope sender (MAIL FROM) was refused: check the bounce domain"),
    "notcompliantrfc": ReasonInfo(SETUP, "our message breaks RFC 5322 (duplicate or malformed headers)"),
    "syntaxerror": ReasonInfo(SETUP, "an SMTP syntax or sequence error on our side"),
    # temporary or about the mailbox's state: scored, suppressed only when it keeps happening
    "mailboxfull": ReasonInfo(TRANSIENT, "the mailbox is full"),
    "suspend": ReasonInfo(TRANSIENT, "the mailbox is disabled or suspended for now"),
    "expired": ReasonInfo(TRANSIENT, "delivery kept failing until the retry time ran out"),
    "filtered": ReasonInfo(TRANSIENT, "the recipient's filter refused it after accepting the address"),
    "systemerror": ReasonInfo(TRANSIENT, "the receiving system failed"),
    "systemfull": ReasonInfo(TRANSIENT, "the receiving system is out of disk space"),
    "networkerror": ReasonInfo(TRANSIENT, "DNS or connection failure on the way"),
    "mailererror": ReasonInfo(TRANSIENT, "the receiving mailer program failed"),
    "onhold": ReasonInfo(TRANSIENT, "the receiver gave no usable reason"),
    "undefined": ReasonInfo(TRANSIENT, "no reason could be read: see the diagnostic"),
    # the message, not the address
    "mesgtoobig": ReasonInfo(MESSAGE, "the message is too large for the receiver"),
    "exceedlimit": ReasonInfo(MESSAGE, "the message exceeds the recipient's size limit"),
    "virusdetected": ReasonInfo(MESSAGE, "a virus scanner refused the message"),
    # not failures
    "vacation": ReasonInfo(INFO, "an auto-reply (RFC 3834)"),
    "delivered": ReasonInfo(INFO, "delivered"),
    "feedback": ReasonInfo(INFO, "a complaint (feedback report)"),
}

# later sisimai versions renamed these; compared as equal
RENAMES = {"emailtoolarge": "mesgtoobig", "ratelimited": "toomanyconn", "speeding": "toomanyconn",
           "exceedlimit": "mesgtoobig"}


def is_hard(reason: str) -> bool:
    """Hard only when the address is proven dead."""
    return REASONS.get(reason, REASONS["undefined"]).family == DEAD


def family(reason: str) -> str:
    return REASONS.get(reason, REASONS["undefined"]).family


def advice(reason: str) -> str:
    return REASONS.get(reason, REASONS["undefined"]).advice


# 1. provider codes that name a single cause
_PROVIDER_CODES: dict[str, str] = {
    "5.7.26": "authfailure",  # Gmail: unauthenticated, DMARC/SPF/DKIM failed
    "4.7.26": "authfailure",
    "5.7.509": "authfailure",  # Microsoft: DMARC reject
    "5.7.515": "authfailure",  # Microsoft: high-volume sender without SPF/DKIM/DMARC
    "4.7.515": "authfailure",
    "5.7.23": "authfailure",  # RFC 7372: SPF validation failed
    "5.7.24": "authfailure",
    "5.7.27": "notaccept",  # RFC 7505 null MX (sender side)
    "5.7.25": "requireptr",  # RFC 7372: reverse DNS validation failed
    "4.7.25": "requireptr",
    "4.7.28": "badreputation",  # Gmail: unusual rate from our IP or domain
    "5.7.28": "badreputation",
    "4.7.650": "badreputation",  # Microsoft: rate limited for IP reputation
    "5.7.708": "badreputation",  # Microsoft: traffic not accepted from this IP
    "5.7.750": "badreputation",
    "5.7.606": "blocked", "5.7.607": "blocked", "5.7.608": "blocked",  # Microsoft: banned sending IP
    "5.7.13": "suspend",  # RFC 3463: user account disabled
    "5.1.10": "notaccept",  # RFC 7505: recipient address has null MX
    "5.1.7": "rejected", "5.1.8": "rejected",  # RFC 3463 §3.2: our *sender* address, whatever the text
}

# Outlook.com (Hotmail) answers a closed or missing account with RFC 5321's generic 550 text
# followed by its own trace in parentheses, "(S2017062302)" or "(-1828233154:2356:-2147467259)":
# bare, the same words prove nothing (RFC 5321 §4.2.3); with the trace, they are that dialect
_OUTLOOK_CONSUMER = r"mailbox unavailable \((?:s\d{6,}|-?\d+:\d+:-?\d+)\)"

# the reporting system asking the sender to check the address it named (InterScan's notice):
# its judgement that the address, not the message or our sending, is wrong
_CHECK_ADDRESS = (r"check (?:if|whether|that) (?:the )?(?:e-?mail |recipient )?address(?:es)? (?:is|are) "
                  r"(?:correct|valid)")


def _starting(words: str) -> str:
    """``words`` after a word boundary, written to start with its first letter: the same as
    ``\\bwords`` but found several times faster, since the regex engine can then skip to that
    letter (a lookbehind checks the boundary once the words are found)."""
    return rf"{words}(?<!\w{words})"


def _whole(word: str) -> str:
    """``\\bword\\b``, written as ``_starting`` does."""
    return rf"{_starting(word)}\b"


# 2. phrases, most specific first; matched against the lower-cased diagnostic. An alternative
# that cannot start with a letter slows the whole pattern down (the engine tries it at every
# position): such are written with ``_starting`` or given an entry of their own.
_PHRASES: tuple[tuple[str, str], ...] = (
    ("spamdetected", r"spam classification|scored as spam"),  # before the long texts that also cite DMARC
    ("authfailure", r"dmarc (?:policy|verification)|does not pass dmarc|unauthenticated (?:e-?mail|senders? from)"
                    r"|spf (?:check|record|validation)|fails? to pass spf|sender is unauthenticated|"
                    r"authentication checks? failed|dkim (?:signature )?(?:fail|invalid)"),
    ("securityerror", r"unauthenticated senders? not allowed|authentication required|authrequired|"
                      r"delivery not authori[sz]ed|must use tls|tls required|encryption required|"
                      r"turn on smtp authentication|relay through this server without authentication"),
    ("requireptr", rf"reverse dns|{_whole('ptr')}|{_whole('rdns')}|ip name lookup failed|unverifyable sending ip|"
                   r"mismatches client ip|no ptr|dns ptr"),
    ("badreputation", r"reputation|deferred due to unexpected volume|user complaints"),
    ("blocked", rf"blacklist|blocklist|{_whole('dnsbl')}|blocked using|client host (?:\[\S+\] )?(?:rejected|blocked)|"
                r"ip (?:address )?(?:\S+ )?(?:is )?(?:blocked|banned|listed)|adresse ip source bloquee|"
                r"not accepting connections|access denied\.{3}|banned sending ip|"
                r"messages from \S+ weren't sent|"
                r"service refuse|\(bl\)|refused to talk to me|spamhaus|"
                # our sending host taken for an open relay, or not allowed to send for its domain
                r"which is an open relay|invalid ip for sending|"
                # Cox's error codes for its IP blocklists (AUP#CXBL, AUP#CDRBL), whatever the text says
                r"aup#c(?:x|dr)bl\b"),
    ("blocked", r"^\W*(?:\w+;\s*)?554 blocked"),
    ("toomanyconn", r"too many (?:connections|recipients|messages|concurrent)|connection rate limit|"
                    r"rate limit(?:ed)? exceeded|throttl"),
    ("norelaying", r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|not configured to relay|"
                   r"no relaying|"
                   r"unable to relay|address is not verified|identities failed the check|relay not allowed|"
                   r"insecure mail relay"),
    ("virusdetected", r"virus|malware|infected"),
    ("spamdetected", rf"{_whole('spam')}|{_whole('ube')}|message content rejected|blacklisted url|mail rejet|junk mail|"
                     r"scored as spam"),
    ("notcompliantrfc", r"duplicate header|multiple addresses in from|not rfc ?5322|rfc 5322 compliant|"
                        r"header (?:is )?(?:malformed|invalid)"),
    # Gmail's refusal of content that "presents a potential security issue": its message policy
    ("policyviolation", r"polic(?:y|ies)(?! domain)|protocol violation|not allowed - dm|"
                        rf"content presents a potential|{_starting('header error')}"),
    # Google Groups (in every language): the group refused our sender
    ("rejected", r"not have permission to post|(?:not|n't) accept mail from (?:this|the) sender|"
                 r"groups\.google\.com/support|sender (?:address )?rejected|sender (?:is )?not allowed|"
                 r"domain of sender address|"
                 r"unroutable sender|purported responsible address|sender (?:address )?(?:domain )?"
                 r"(?:does not exist|unknown|invalid)|mail from .* rejected|"
                 r"not a member of (?:this|the) (?:mailing )?list|"  # a list manager (fml) refused us
                 # qmail's own words for a refusal at MAIL FROM; a From domain refused after DATA
                 r"but sender was rejected|provide a valid from"),
    ("hasmoved", r"has moved|no longer on (?:this )?server|not our customer|mailbox has moved"),
    ("suspend", r"(?:account|mailbox|address|recipient)[\w ]{0,30}(?:disabled|suspended|inactive|frozen|"
                r"discontinued|locked|blocked|deactivated|expired)|is frozen|temporary locked|"
                r"compte du destinataire est bloque|disabled recipient"),
    ("mailboxfull", r"mail ?(?:box|folder) (?:is )?full|quota|mailbox (?:exceeds|exceeded)|"
                    r"insufficient (?:disk|storage) (?:space )?for|"
                    r"not enough (?:disk |storage )?space|mailbox size limit|storage (?:limit|full)"),
    ("systemfull", r"insufficient (?:disk|system) (?:space|storage)|disk full|system (?:is )?full"),
    ("mesgtoobig", r"message (?:is )?too (?:large|big)|size exceeds|exceeds (?:the )?(?:fixed )?"
                   r"(?:maximum|administrative|size)|message length exceeds|line limit exceeded|"
                   r"recipsizelimit|message size"),
    ("notaccept", r"does(?:n't| not) (?:receive|accept) (?:e-?)?mail(?! from)|indicated no smtp service|null mx|"
                  r"couldn't find a mail exchanger|"
                  r"no mail exchanger"),
    ("hostunknown", r"host unknown|unknown host|couldn't find any host|domain (?:is )?not reachable|"
                    r"illegal host|invalid domain|no such domain|domain (?:name )?(?:not found|does not exist)|"
                    r"bad destination system|\.[a-z]+ does not exist$|"
                    r"unrouteable address"),  # Exim: no router could resolve the domain (a permanent failure)
    # gave up retrying: the queue expired (before the network errors that caused it)
    ("expired", r"timed out|retry time|too long in (?:the )?queue|failed \d+ attempts|aborted after [\d.]+ hour|"
                r"could not deliver for the last \d+"),
    ("networkerror", r"dns error|name service error|connection (?:refused|reset)|no route to host|"
                     r"hop count exceeded|routing loop|unable to connect|establish an smtp connection|"
                     r"network error"),
    ("expired", r"retry (?:time|timeout) (?:exceeded|expired)|too long in|been long in|"
                r"message expired|did not accept our requests to connect|has been delayed|"
                r"could not be delivered (?:for|within) \d+|delivery time expired|timed out"),
    ("userunknown", r"user(?:name)? (?:unknown|not (?:found|exist))|unknown (?:user|recipient|local|address)|"
                    r"no such (?:user|mailbox|recipient|address)|(?:mailbox|recipient|address) "
                    r"(?:does not exist|not found|unavailable|invalid|unknown)|does not exist|"
                    r"invalid (?:recipient|address|mailbox)|destinat\w+ invalid|recipnotfound|"
                    r"no mailbox here|not a valid (?:mailbox|user|recipient)|illegal (?:alias|user)|"
                    r"doesn't have a \S+ account|inactive email address|"
                    r"account that you tried to reach does not exist|mailbox not found|"
                    r"recipient name is not recognized|unknown recipient|user not listed in|"
                    r"invalid final delivery userid|" + _CHECK_ADDRESS + "|" + _OUTLOOK_CONSUMER),
    ("mailererror", r"^x-unix;\s*[a-z]|pipe to \|"),  # a local delivery program (or Exim's pipe) failed
    ("systemerror", r"system error|internal error|service (?:currently )?unavailable|transaction failed|"
                    r"could not load|ldap|duplicated message-id|queue file write error"),  # fml's loop alert
    ("mailererror", r"mailer error|x-unix; \d+|mailer \S+ failed|command (?:died|failed)"),
    ("syntaxerror", r"syntax error|improper sequence|command (?:parameter )?not (?:implemented|recognized)|"
                    r"bad sequence|malformed (?:recipient )?address|incorrectly constructed"),
    # au (EZweb)'s notice when the recipient's own reception filter turned us away
    ("filtered", r"message filtered|recipient preferences|filtered|recipients was rejected by a remote mail server"),
    ("onhold", r"on hold"),
    ("userunknown", r"recipient address rejected|address rejected"),  # the weakest: only the refusal
)
# matched against lower-cased text: cheaper than IGNORECASE for ~40 alternations per diagnostic;
# a pattern none of whose alternatives' plain words occur in the text is not searched (``phrases``)
_PHRASE_TABLE = PhraseTable(_PHRASES, re.MULTILINE)

# 3. RFC 3463 codes (subject.detail) that name a cause; the class is added on lookup
_STATUS: dict[str, str] = {
    "1.1": "userunknown", "1.0": "userunknown", "1.3": "userunknown", "1.2": "hostunknown",
    "1.4": "userunknown", "1.5": "userunknown", "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected",
    "1.9": "userunknown",
    "2.1": "suspend", "2.2": "mailboxfull", "2.3": "exceedlimit", "2.4": "mailererror",
    "3.1": "systemfull", "3.2": "systemerror", "3.3": "systemerror", "3.4": "mesgtoobig", "3.5": "systemerror",
    "4.1": "networkerror", "4.2": "networkerror", "4.3": "systemerror", "4.4": "networkerror",
    "4.5": "networkerror", "4.6": "networkerror", "4.7": "expired",
    # no "5.0": x.5.0 is "other or undefined protocol status" (RFC 3463 §3.6), it names no cause
    "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "toomanyconn", "5.4": "syntaxerror",
    "6.0": "contenterror", "6.1": "contenterror", "6.2": "contenterror", "6.3": "contenterror",
    "6.4": "contenterror", "6.5": "contenterror",
    "7.0": "securityerror", "7.1": "blocked", "7.2": "policyviolation", "7.3": "securityerror",
    "7.4": "securityerror", "7.5": "securityerror", "7.6": "securityerror", "7.7": "securityerror",
    "7.8": "authfailure", "7.9": "securityerror",
}
# 4. RFC 5321 §4.2.3 reply codes that name a cause on their own
_REPLY_CODES: dict[str, str] = {
    "450": "onhold", "452": "systemfull", "500": "syntaxerror",
    "501": "syntaxerror", "502": "syntaxerror", "503": "syntaxerror", "504": "syntaxerror",
    "521": "notaccept", "551": "hasmoved", "552": "mailboxfull",
    "556": "notaccept",
}
_REPLY = re.compile(r"(?<![\w.+-])([245]\d\d)(?=[\s\-:;,.)\]'\"]|$)")
# an enhanced status code (RFC 3463) in the remote server's own words
_REMOTE_CODE = re.compile(r"(?<![\w.])[245]\.\d{1,3}\.\d{1,3}(?!\w|\.\d)")


# provider wording that names a missing mailbox outright, whatever the stage or code
_NO_MAILBOX = Caseless(
    r"doesn't have a \S+ account|account that you tried to reach does not exist|invalid recipient|"
    r"recipient name is not recognized|unknown recipient|recipnotfound|no mailbox here by that name|"
    r"user not listed in|invalid final delivery userid|"
    # the receiving host's own local delivery agent, or its own notice, naming the address
    r"mail\.local: unknown user|(?:^|\s)unknown user: \S+@\S+|" + _CHECK_ADDRESS + "|" + _OUTLOOK_CONSUMER)


def names_no_mailbox(text: str, lowered: str | None = None) -> bool:
    """``lowered``: ``phrases.lowered_ascii(text)``, when the caller has it already."""
    return _NO_MAILBOX.found(text, lowered)


def reply_code(diagnostic: str | None) -> str | None:
    """The first SMTP reply code (RFC 5321 §4.2) in the diagnostic, 4xx or 5xx."""
    if not diagnostic:
        return None
    for match in _REPLY.finditer(diagnostic):
        if match.group(1)[0] in "45":
            return match.group(1)
    return None


def by_phrase(text: str | None) -> str | None:
    if not text:
        return None
    return _PHRASE_TABLE.first(text.lower())


_DEAD_PHRASES = frozenset({"userunknown", "hostunknown", "hasmoved"})
_NOT_UNDER_POLICY = _DEAD_PHRASES | {"mailboxfull"}
# whole codes whose meaning depends on the class
_EXACT: dict[str, str] = {"5.4.4": "hostunknown", "4.4.4": "networkerror", "5.2.0": "filtered",
                          "5.2.1": "filtered"}


def by_status(status: str | None) -> str | None:
    if not status:
        return None
    if status in _PROVIDER_CODES or status in _EXACT:
        return _PROVIDER_CODES.get(status) or _EXACT[status]
    _, subject, detail = status.split(".")
    return _STATUS.get(f"{subject}.{detail}")


def classify(status: str | None, diagnostic: str | None, *, reply: str | None = None,
             context: str | None = None) -> str:
    """The reason for one failed recipient. ``status``: the enhanced code (RFC 3463) to act on;
    ``diagnostic``: the remote server's words; ``reply``: its reply code when known apart;
    ``context``: more text of the notice, read for phrases only when the rest says nothing."""
    if status in _PROVIDER_CODES:
        return _PROVIDER_CODES[status]
    diagnostic = " ".join(diagnostic.split()) if diagnostic else diagnostic  # folded lines read as one
    reason = by_phrase(diagnostic)
    subject, detail = status.split(".")[1:] if status else (None, None)
    policy_coded = subject == "7" and (status is None or _REMOTE_CODE.search(diagnostic or "") is not None)
    if reason in _NOT_UNDER_POLICY and policy_coded or reason in _DEAD_PHRASES and subject == "2" and detail != "1":
        # RFC 3463 §3.8: an x.7.x code is a security or policy refusal; a "quota" there is our
        # sending quota, and an "unknown address" beside it proves nothing about the mailbox.
        # That holds when the remote server sent the x.7.x itself: when its words carry no
        # enhanced code ("553 Invalid recipient"), the x.7.x is the reporting MTA's guess, and
        # the remote's words speak. §3.3: x.2.x says the mailbox exists (full, filtered): the
        # code wins there, except x.2.1 "mailbox disabled", which MTAs commonly send for unknown users
        reason = None
    reason = reason or by_status(status)
    if reason is not None:
        return reason
    code = reply or reply_code(diagnostic)
    if code in _REPLY_CODES:  # a bare 550 proves nothing (RFC 5321 §4.2.3: "mailbox unavailable")
        return _REPLY_CODES[code]
    return by_phrase(" ".join(context.split()) if context else None) or _by_class(status, code)


def _by_class(status: str | None, code: str | None) -> str:
    """Only the class is known: a temporary failure that ran out is "expired" for sisimai;
    we call it "onhold" (no cause given) unless the caller says it expired. A notice with no
    code at all gave no usable reason either: "onhold"; "undefined" is a 5.x.x without a cause."""
    klass = (status or code or "")[:1]
    return "undefined" if klass == "5" else "onhold"


# --- SES -------------------------------------------------------------------------------------

# bounceType/bounceSubType (REFERENCE-SES §1a) → reason when the diagnostic says nothing more
_SES_SUBTYPES: dict[tuple[str, str], str] = {
    ("Permanent", "General"): "undefined",
    ("Permanent", "NoEmail"): "userunknown",
    ("Permanent", "Suppressed"): "userunknown",  # on SES's list because it hard-bounced before
    ("Permanent", "OnAccountSuppressionList"): "userunknown",
    ("Transient", "General"): "onhold",
    ("Transient", "MailboxFull"): "mailboxfull",
    ("Transient", "MessageTooLarge"): "mesgtoobig",
    ("Transient", "ContentRejected"): "contenterror",
    ("Transient", "AttachmentRejected"): "virusdetected",
    ("Undetermined", "Undetermined"): "undefined",
}


@lru_cache(maxsize=4096)  # pure; a provider answers many recipients with the same few diagnostics
def classify_ses(bounce_type: str | None, subtype: str | None, status: str | None,
                 diagnostic: str | None) -> str:
    """An SES bounce: the diagnostic speaks first (SES's General hides every cause), then the
    subtype, then the status code."""
    named = _SES_SUBTYPES.get((bounce_type or "", subtype or ""))
    if named not in (None, "undefined", "onhold"):
        return str(named)
    reason = classify(status, diagnostic)
    if reason in ("undefined", "onhold") and named is not None:
        return named
    return reason
