"""DMARC aggregate (RFC 7489 appendix C, RFC 9990) and failure (RFC 6591) reports and SMTP TLS
reports (RFC 8460): read from the mail that carries them, stored once each, summarised, and
watched for our own sources failing DMARC (``own_mail_failing_dmarc``)."""
