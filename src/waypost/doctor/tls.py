"""Our STARTTLS certificate (``smtp.tls_cert_path``): the names it covers and when it expires."""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from waypost.doctor.results import Finding, Status

RENEW_WITHIN = timedelta(days=14)  # warn this long before expiry: ACME clients renew at 30 days


def certificate(cert_path: Path | None, host: str, now: datetime) -> Finding:
    name, title = "tls.certificate", "STARTTLS certificate"
    why = ("senders encrypt to us with STARTTLS; an expired certificate or one for another name fails MTA-STS "
           "senders and is reported by TLS-RPT")
    fix = f"smtp.tls_cert_path and smtp.tls_key_path: a certificate for {host} (e.g. from Let's Encrypt)"
    if cert_path is None:
        return Finding(name, title, Status.WARN, "no certificate configured: STARTTLS is not offered", why, fix)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as err:
        return Finding(name, title, Status.FAIL, f"cannot read {cert_path}: {err}", why, fix)
    names = _names(cert)
    expires = cert.not_valid_after_utc
    found = f"names {', '.join(names) or 'none'}; expires {expires:%Y-%m-%d %H:%M}Z"
    if expires <= now:
        return Finding(name, title, Status.FAIL, found + " (expired)", why, f"renew it: {fix}")
    if not any(fnmatch.fnmatch(host, pattern) and pattern.count(".") == host.count(".") for pattern in names):
        return Finding(name, title, Status.FAIL, found + f"; {host} is not among them", why, fix)
    if expires - now < RENEW_WITHIN:
        return Finding(name, title, Status.WARN, found + f" (in {(expires - now).days} days)", why,
                       f"renew it: {fix}")
    return Finding(name, title, Status.OK, found, why)


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:  # old certificates name the host in the subject only
        return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
