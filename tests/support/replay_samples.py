"""Files made in code for the pipeline replay, in the shared corpus's categories (dsn, arf, mime,
exif, ses), so the replay runs on a clone without the corpus. Each file names the outcome it
must end in: processed, refused (with the refusal's reason) or dead (with the error's name).

Messages (.eml, .txt, .http) go into the pipeline as they are; any other file goes in as the
one attachment of a generated mail, as the replay does with the corpus's files.
"""

from __future__ import annotations

import io
import json
import zipfile
from base64 import encodebytes
from dataclasses import dataclass
from datetime import UTC, datetime

from tests.support.report_samples import SAMPLES
from waypost.apps.journeys.samples import Shot, make_photo


@dataclass(frozen=True)
class GeneratedFile:
    file: str  # a path as the manifest writes it: category/name.suffix
    category: str
    data: bytes
    expected: str  # processed | refused | dead
    reason: str = ""  # what the recorded reason starts with
    size_px: tuple[int, int] | None = None  # a photo's size, as Pillow reads it

    def record(self) -> dict[str, object]:
        record: dict[str, object] = {"file": self.file, "category": self.category, "expected": self.expected,
                                     "reason": self.reason}
        if self.size_px:
            record["pillow_ground_truth"] = {"size_px": list(self.size_px)}
        return record


def _mail(headers: str, body: str) -> bytes:
    return (headers + "\n" + body).replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _photo(label: str, latitude: float, longitude: float, hour: int) -> bytes:
    return make_photo(Shot(latitude, longitude, datetime(2026, 2, 14, hour, 30, tzinfo=UTC), label), size=(96, 72))


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("day-1.jpg", _photo("zipped", 38.7, -9.1, 9))
    return buffer.getvalue()


def _mime_messages() -> list[GeneratedFile]:
    photo = encodebytes(_photo("inline", 38.71, -9.14, 10)).decode()
    many_parts = "".join(f"--mp\nContent-Type: text/plain\n\npart {i}\n" for i in range(260)) + "--mp--\n"
    return [
        GeneratedFile("mime/plain-text.eml", "mime", _mail(
            "From: Rosa Lima <rosa@example.org>\nTo: journeys@waypost.test\nSubject: no photos today\n"
            "Date: Sat, 14 Feb 2026 18:00:00 +0000\nMessage-ID: <plain-1@example.org>\n", "Just saying hello.\n"),
            "processed"),
        GeneratedFile("mime/alternative.eml", "mime", _mail(
            "From: <tomas@example.net>\nTo: journeys@waypost.test\nSubject: =?utf-8?q?Viagem_=C3=A0_praia?=\n"
            "MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=alt\n",
            "--alt\nContent-Type: text/plain; charset=utf-8\n\nola\n"
            "--alt\nContent-Type: text/html; charset=utf-8\n\n<p>ola</p>\n--alt--\n"), "processed"),
        GeneratedFile("mime/photo-inline.eml", "mime", _mail(
            "From: Uli <uli@example.com>\nTo: journeys@waypost.test\nSubject: Lisbon\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=mix\n",
            "--mix\nContent-Type: text/plain\n\none photo\n"
            "--mix\nContent-Type: image/jpeg; name=IMG_2001.jpg\n"
            "Content-Disposition: attachment; filename=IMG_2001.jpg\n"
            f"Content-Transfer-Encoding: base64\n\n{photo}--mix--\n"), "processed"),
        GeneratedFile("mime/winmail.eml", "mime", _mail(
            "From: Vera <vera@example.org>\nTo: journeys@waypost.test\nSubject: from Outlook\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=tnef\n",
            "--tnef\nContent-Type: text/plain\n\nsee attached\n"
            "--tnef\nContent-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\n"
            "eJ8+IgEAAQaQCAAEAAAAAAABAAEAAQeQBgAIAAAA5AQAAAAAAADoAAEIgAcAGAAAAElQTS5NaWNyb3NvZnQgTWFpbC5Ob3Rl\n"
            "--tnef--\n"), "processed"),
        GeneratedFile("mime/no-from.eml", "mime", _mail(
            "To: journeys@waypost.test\nSubject: who am I\n", "No sender.\n"), "refused", "no-single-from-address"),
        GeneratedFile("mime/two-senders.eml", "mime", _mail(
            "From: wim@example.org, xena@example.net\nTo: journeys@waypost.test\nSubject: the two of us\n", "Hi.\n"),
            "refused", "no-single-from-address"),
        GeneratedFile("mime/no-header.txt", "mime", b"\r\njust a body, no header section at all\r\n",
                      "dead", "MalformedMessage"),
        GeneratedFile("mime/too-many-parts.eml", "mime", _mail(
            "From: Yara <yara@example.com>\nTo: journeys@waypost.test\nSubject: parts\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=mp\n", many_parts), "dead", "MimeLimitExceeded"),
    ]


def _ses_notification() -> bytes:
    notification = {
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-02-14T10:00:00.000Z",
                   "feedbackId": "0100018d-made-up-feedback-000000", "reportingMTA": "dns; mta.example.com",
                   "bouncedRecipients": [{"emailAddress": "zed@example.com", "action": "failed",
                                          "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"timestamp": "2026-02-14T09:59:58.000Z", "source": "journeys@waypost.test",
                 "messageId": "0100018d-made-up-message-000000", "destination": ["zed@example.com"]},
    }
    return json.dumps(notification, indent=2).encode()


def generated_files() -> list[GeneratedFile]:
    files = []
    for sample in SAMPLES:  # bounces and auto-replies are "dsn" in the corpus, complaints "arf"
        category = "arf" if sample.family == "arf" else "dsn"
        # sent to the journeys mailbox, each is a program's mail: never answered (RFC 3834)
        files.append(GeneratedFile(f"{category}/{sample.name.replace('/', '-')}.eml", category, sample.raw,
                                   "refused", "automatic-mail: "))
    files += _mime_messages()
    for number, (latitude, longitude) in enumerate([(38.70, -9.13), (38.69, -9.21)]):
        files.append(GeneratedFile(f"exif/trip-{number}.jpg", "exif", _photo(f"trip {number}", latitude, longitude,
                                                                             9 + number), "processed",
                                   size_px=(96, 72)))
    files += [
        GeneratedFile("mime/photos.zip", "mime", _zip(), "processed"),
        GeneratedFile("mime/winmail.dat", "mime", b"\x78\x9f\x3e\x22" + bytes(60), "processed"),
        GeneratedFile("ses/bounce-notification.json", "ses", _ses_notification(), "processed"),
        # an SNS delivery as the HTTP request that carries it: no mail at all
        GeneratedFile("ses/sns-notification.http", "ses",
                      b"POST /sns HTTP/1.1\r\nHost: waypost.test\r\nx-amz-sns-message-type: Notification\r\n\r\n"
                      + _ses_notification(), "dead", "MalformedMessage"),
    ]
    return files
