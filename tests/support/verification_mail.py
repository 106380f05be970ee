"""Verification mail as it arrives, written for these tests: an SES identity verification (its
facts: sender no-reply-aws@amazon.com, the subject naming the region, one plain-text part with a
link to email-verification.<region>.amazonaws.com that expires in 24 hours) and a registrar's
confirmation whose link is only in the HTML part's href."""

from __future__ import annotations

from email.message import EmailMessage

SES_SENDER = "no-reply-aws@amazon.com"
SES_LINK = ("https://email-verification.eu-west-1.amazonaws.com/?Context=111122223333"
            "&X-Amz-Date=20261207T040000Z&Identity.IdentityName=verify%40waypost.test"
            "&X-Amz-Algorithm=AWS4-HMAC-SHA256&Identity.IdentityType=EmailAddress"
            "&X-Amz-Credential=AKIAEXAMPLE%2F20261207%2Feu-west-1%2Fses%2Faws4_request"
            "&Operation=ConfirmVerification&Namespace=Bacon&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0")
REGISTRAR_LINK = "https://registrar.example/confirm?token=4f9c2a&domain=waypost.test"


def ses_verification(to: str, link: str = SES_LINK) -> bytes:
    message = EmailMessage()
    message["From"] = f"Amazon Web Services <{SES_SENDER}>"
    message["To"] = to
    message["Subject"] = "Amazon Web Services \u2013 Email Address Verification Request in region Europe (Ireland)"
    message["Message-ID"] = "<0102018c-verify-1@eu-west-1.amazonses.com>"
    message.set_content(
        "Dear Amazon Web Services Customer,\n\n"
        "Someone asked to use this address with Amazon SES in region Europe (Ireland). If that was you,\n"
        "confirm that you may use it by opening this URL:\n\n"
        f"{link}\n\n"
        "Unless the address is confirmed with this URL the request is not processed. The URL expires\n"
        "24 hours after the request was made.\n\n"
        "If you did not ask for this, ignore this message.\n\nSincerely,\nThe Amazon Web Services Team.\n")
    return message.as_bytes().replace(b"\n", b"\r\n")


def registrar_confirmation(to: str, link: str = REGISTRAR_LINK) -> bytes:
    message = EmailMessage()
    message["From"] = "Example Registrar <no-reply@registrar.example>"
    message["To"] = to
    message["Subject"] = "Action needed for waypost.test"
    message["Message-ID"] = "<confirm-4f9c2a@registrar.example>"
    message.set_content("Please confirm the contact address for waypost.test in your account.\n"
                        "Questions? http://help.registrar.example/contact\n")
    message.add_alternative(
        "<html><body><p>Please confirm the contact address for waypost.test.</p>"
        f'<p><a href="{link.replace("&", "&amp;")}">Confirm this address</a></p>'
        '<p><a href="https://registrar.example/help">Help</a></p></body></html>', subtype="html")
    return message.as_bytes().replace(b"\n", b"\r\n")
