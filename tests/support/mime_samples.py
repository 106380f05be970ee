"""Messages made in code in the shapes the shared corpus holds, for the parser's tests on a
machine without the corpus: Outlook's winmail.dat, a zipped DMARC aggregate report, an
inline image referenced by Content-ID, and a set of ordinary and awkward messages for the
replay and chunked-reading tests. Nothing here is copied from the corpus."""

from __future__ import annotations

import base64
import gzip
import io
import quopri
import struct
import zipfile
from email.message import EmailMessage

# A 1x1 PNG, made here: signature, IHDR, IDAT and IEND with their CRCs.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415408d763f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
JPEG_TINY = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"J" * 40 + b"\xff\xd9"


# --- Outlook's TNEF ------------------------------------------------------------------------

TNEF_SIGNATURE = 0x223E9F78  # [MS-OXTNEF] 2.1.3.1, written little-endian


def _tnef_attribute(level: int, attribute: int, data: bytes) -> bytes:
    """One TNEF attribute: level, id, length, data, and the data's 16-bit byte sum."""
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def tnef_stream() -> bytes:
    """A minimal winmail.dat: the signature, a legacy key, then the TNEF version, the OEM
    code page and the message class, as Outlook starts every stream."""
    return (
        struct.pack("<IH", TNEF_SIGNATURE, 0x0001)
        + _tnef_attribute(0x01, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
        + _tnef_attribute(0x01, 0x00069007, struct.pack("<II", 1251, 0))  # attOemCodepage
        + _tnef_attribute(0x01, 0x00078008, b"IPM.Microsoft Mail.Note\0")  # attMessageClass
    )


def outlook_tnef_message() -> bytes:
    """Mail as Outlook (Exchange) sends it when rich text wraps everything in winmail.dat: a
    koi8-r text part and the TNEF part, Content-Disposition first, base64 in 76-column lines."""
    body = base64.encodebytes(tnef_stream()).replace(b"\n", b"\r\n")
    text = quopri.encodestring("шостий\r\n".encode("koi8-r"))
    boundary = b"_000_AM0PR07MB0001EXAMPLE_"
    return b"\r\n".join([
        b'Content-Type: multipart/mixed;\r\n\tboundary="' + boundary + b'"',
        b"From: Oleh Tester <oleh@example.org>",
        b"To: journeys@waypost.test",
        b"Subject: day 6",
        b"Date: Mon, 13 Nov 2017 08:01:13 +0000",
        b"Message-ID: <AM0PR07MB0001EXAMPLE@AM0PR07MB0001.eurprd07.prod.outlook.com>",
        b"X-MS-Has-Attach:",
        b"X-MS-TNEF-Correlator: <AM0PR07MB0001EXAMPLE@AM0PR07MB0001.eurprd07.prod.outlook.com>",
        b"MIME-Version: 1.0",
        b"",
        b"--" + boundary,
        b'Content-Type: text/plain; charset="koi8-r"',
        b"Content-Transfer-Encoding: quoted-printable",
        b"",
        text,
        b"--" + boundary,
        b'Content-Disposition: attachment; filename="winmail.dat"',
        b"Content-Transfer-Encoding: base64",
        b'Content-Type: application/ms-tnef; name="winmail.dat"',
        b"",
        body,
        b"--" + boundary + b"--",
        b"",
    ])


# --- a DMARC aggregate report --------------------------------------------------------------

DMARC_REPORT_NAME = "google.com!example.org!1549756800!1549843199"
_DMARC_XML = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata><org_name>google.com</org_name><report_id>1627703331531660819</report_id>
    <date_range><begin>1549756800</begin><end>1549843199</end></date_range></report_metadata>
  <policy_published><domain>example.org</domain><p>reject</p></policy_published>
  <record><row><source_ip>192.0.2.1</source_ip><count>1</count></row>
    <identifiers><header_from>example.org</header_from></identifiers></record>
</feedback>
"""


def dmarc_report_message(kind: str) -> tuple[bytes, str]:
    """A DMARC aggregate report as the big mailbox providers send it, the XML zipped
    (``kind`` "zip", application/zip) or gzipped ("gzip", application/gzip); returns the
    message and the attachment's file name."""
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{DMARC_REPORT_NAME}.xml", _DMARC_XML)
        data, subtype, name = buffer.getvalue(), "zip", f"{DMARC_REPORT_NAME}.zip"
    else:
        data, subtype, name = gzip.compress(_DMARC_XML, mtime=0), "gzip", f"{DMARC_REPORT_NAME}.xml.gz"
    report = EmailMessage()
    report["From"] = "noreply-dmarc-support@google.com"
    report["To"] = "dmarc.reports@example.org"
    report["Subject"] = "Report domain: example.org Submitter: google.com Report-ID: 1627703331531660819"
    report["Date"] = "Sun, 10 Feb 2019 15:59:59 -0800"
    report["Message-ID"] = "<1627703331531660819@google.com>"
    report.set_content("This is a multi-part message in MIME format...")
    report.add_attachment(data, maintype="application", subtype=subtype, filename=name)
    return report.as_bytes(), name


# --- an inline image -----------------------------------------------------------------------


def inline_image_message() -> bytes:
    """A mail client's inline picture: multipart/related holding the text and HTML
    alternatives and the PNG the HTML shows by its Content-ID, inline with a file name."""
    related, alternative = b"MailClient=_related", b"MailClient=_alternative"
    html = quopri.encodestring(b'<html><body><p>Here is the view:&nbsp;<img src="cid:view-1@example.org"></p>'
                               b"</body></html>")
    return b"\r\n".join([
        b"Mime-Version: 1.0 (MailClient 1.1.1)",
        b"Date: Tue, 5 Sep 2023 14:42:46 -0700",
        b"Subject: Test Email",
        b"From: Your Friend <friend@mail.example.com>",
        b"To: journeys@waypost.test",
        b'Content-Type: multipart/related;\r\n\ttype="multipart/alternative";\r\n\tboundary="' + related + b'"',
        b"",
        b"--" + related,
        b'Content-Type: multipart/alternative;\r\n\tboundary="' + alternative + b'"',
        b"",
        b"--" + alternative,
        b"Content-Type: text/plain;\r\n\tcharset=utf-8",
        b"Content-Transfer-Encoding: Quoted-Printable",
        b"",
        b"Here is the view:",
        b"--" + alternative,
        b"Content-Type: text/html;\r\n\tcharset=utf-8",
        b"Content-Transfer-Encoding: Quoted-Printable",
        b"",
        html,
        b"--" + alternative + b"--",
        b"--" + related,
        b'Content-Type: image/png;\r\n\tname="view.png"',
        b"Content-Transfer-Encoding: base64",
        b'Content-Disposition: inline;\r\n\tfilename="view.png"',
        b"Content-ID: <view-1@example.org>",
        b"",
        base64.encodebytes(PNG_1X1).rstrip(b"\n"),
        b"--" + related + b"--",
        b"",
    ])


# --- a set for the replay and chunked-reading tests -----------------------------------------


def _with_photos(count: int, size: int) -> bytes:
    built = EmailMessage()
    built["From"] = "Ann <ann@example.org>"
    built["To"] = "journeys@waypost.test"
    built["Subject"] = f"{count} photos"
    built.set_content("From the trip.")
    for number in range(count):
        data = b"\xff\xd8" + bytes([number]) * (size - 4) + b"\xff\xd9"
        built.add_attachment(data, maintype="image", subtype="jpeg", filename=f"IMG_{number:04d}.JPG")
    return built.as_bytes()


def _forwarded() -> bytes:
    inner = EmailMessage()
    inner["From"] = "bob@example.org"
    inner["Subject"] = "the original"
    inner.set_content("see photo")
    inner.add_attachment(JPEG_TINY, maintype="image", subtype="jpeg", filename="inner.jpg")
    outer = EmailMessage()
    outer["From"] = "ann@example.org"
    outer["Subject"] = "Fwd: the original"
    outer.set_content("forwarding")
    outer.add_attachment(inner)
    return outer.as_bytes()


_UUENCODED = b"""From: old@example.org
Subject: uuencoded
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="u"

--u
Content-Type: text/plain

see attached
--u
Content-Type: image/jpeg; name="old.jpg"
Content-Transfer-Encoding: x-uuencode

begin 644 old.jpg
)_]C_X$I*2O_9
`
end
--u--
"""



def _iso_2022_jp_word(text: str) -> str:
    return f"=?ISO-2022-JP?B?{base64.b64encode(text.encode('iso-2022-jp')).decode()}?="


JAPANESE_SUBJECT = "旅行の写真"
_JAPANESE = (f"From: {_iso_2022_jp_word('山田太郎')} <taro@example.jp>\r\n"
             f"Subject: {_iso_2022_jp_word(JAPANESE_SUBJECT)}\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n"
             "Content-Transfer-Encoding: 7bit\r\n\r\n").encode() + "旅行".encode("iso-2022-jp") + b"\r\n"

_BROKEN = {
    "no closing boundary": (b"From: ann@example.org\r\nSubject: open\r\nMIME-Version: 1.0\r\n"
                            b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
                            b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                            + base64.encodebytes(JPEG_TINY)),
    "illegal boundary": (b"From: ann@example.org\r\nSubject: boundary\r\n"
                         b"Content-Type: multipart/mixed; boundary=--==_mimepart_?=\r\n\r\n"
                         b"----==_mimepart_?=\r\nContent-Type: text/plain\r\n\r\nhi\r\n----==_mimepart_?=--\r\n"),
    "raw latin-1 headers": b"From: J\xf6rg <jorg@example.org>\r\nSubject: Gr\xfc\xdfe\r\n\r\nbody\r\n",
    "duplicate MIME-Version": (b"MIME-Version: 1.0\r\nMIME-Version: 1.0\r\nFrom: root@example.org\r\n"
                               b"Subject: twice\r\n\r\nbody\r\n"),
    "bad base64": (b"From: ann@example.org\r\nSubject: b64\r\nContent-Type: image/jpeg\r\n"
                   b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 at all===\r\n"),
    "byte order mark": b"\xef\xbb\xbfFrom: ann@example.org\r\nSubject: saved by a client\r\n\r\nbody\r\n",
    "LF line ends": b"From: ann@example.org\nSubject: unix\nContent-Type: text/plain\n\nbody\n",
}


def generated_messages() -> dict[str, bytes]:
    """Well-formed and awkward messages by name; two are larger than the parser's 64 KB
    chunk, so a chunk edge falls inside an attachment, and one more inside a header line."""
    tnef_message = outlook_tnef_message()
    return {
        "plain": b"From: Ann <ann@example.org>\r\nTo: journeys@waypost.test\r\nSubject: hi\r\n\r\nbody\r\n",
        "three photos": _with_photos(3, 2_000),
        "photos across chunks": _with_photos(2, 150_000),
        "header across a chunk edge": (b"From: ann@example.org\r\nX-Pad: " + b"p" * 65_530
                                       + b"\r\nSubject: pad\r\n\r\nx"),
        "forwarded": _forwarded(),
        "outlook tnef": tnef_message,
        "outlook tnef, LF line ends": tnef_message.replace(b"\r\n", b"\n"),
        "dmarc zip": dmarc_report_message("zip")[0],
        "dmarc gzip": dmarc_report_message("gzip")[0],
        "inline image": inline_image_message(),
        "uuencoded": _UUENCODED,
        "iso-2022-jp": _JAPANESE,
        **_BROKEN,
    }
