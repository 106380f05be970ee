"""A real DNS server on loopback, for tests of code that looks names up (DKIM keys, SPF,
DMARC, MX).

Queries travel over UDP and TCP to 127.0.0.1 on a port the kernel picks, so the code under
test runs its real resolver path; records can be added while the server runs. Names with no
records answer NXDOMAIN, names with other types only answer NOERROR with no data, and
``fail(name)`` makes a name answer SERVFAIL (a temporary error for SPF/DKIM/DMARC).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import dkim
import dns.exception
import dns.message
import dns.query
import dns.resolver
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

log = logging.getLogger(__name__)

TXT_CHUNK = 255  # RFC 1035 §3.3: a character-string holds at most 255 octets
MAX_CNAME_CHAIN = 8
_PROBE = "readiness.probe.invalid."


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


class _Zone(BaseResolver):
    """The records, shared between the test thread and the server threads under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, list[Any]]] = {}
        self.failing: set[str] = set()
        self.queries: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name, qtype = _fqdn(str(request.q.qname)), QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((name, qtype))
            if name in self.failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if name not in self.records:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for record in self._answers(name, qtype):
                reply.add_answer(record)
        return reply

    def _answers(self, name: str, qtype: str) -> list[RR]:
        """Records of ``qtype`` at ``name``, following CNAMEs inside the zone (RFC 1034 §3.6.2)."""
        answers: list[RR] = []
        for _ in range(MAX_CNAME_CHAIN):
            at_name = self.records.get(name, {})
            types = list(at_name) if qtype == "ANY" else [qtype] if qtype in at_name else []
            if types:
                answers += [_rr(name, rtype, rdata) for rtype in types for rdata in at_name[rtype]]
                break
            if "CNAME" not in at_name:
                break
            target = at_name["CNAME"][0]
            answers.append(_rr(name, "CNAME", target))
            name = _fqdn(str(target.label))
        return answers


def _rr(name: str, rtype: str, rdata: Any) -> RR:
    return RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=60)


class LoopbackDns:
    """A DNS server on 127.0.0.1 (UDP and TCP, same port) for the life of a ``with`` block."""

    def __init__(self, *, start_timeout: float = 10.0) -> None:
        self._zone = _Zone()
        self._start_timeout = start_timeout
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def queries(self) -> list[tuple[str, str]]:
        """(name, type) of every query answered so far, oldest first."""
        with self._zone.lock:
            return list(self._zone.queries)

    def add_txt(self, name: str, value: str | bytes) -> None:
        """One TXT record; a value over 255 octets becomes several strings, which readers of
        DKIM, SPF and DMARC records join back together (RFC 7208 §3.3)."""
        data = value.encode() if isinstance(value, str) else value
        self._add(name, "TXT", TXT([data[i:i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)] or [b""]))

    def add_a(self, name: str, address: str) -> None:
        self._add(name, "A", A(str(ipaddress.IPv4Address(address))))

    def add_aaaa(self, name: str, address: str) -> None:
        self._add(name, "AAAA", AAAA(str(ipaddress.IPv6Address(address))))

    def add_mx(self, name: str, exchange: str, preference: int = 10) -> None:
        self._add(name, "MX", MX(DNSLabel(_fqdn(exchange)), preference))

    def add_cname(self, name: str, target: str) -> None:
        self._add(name, "CNAME", CNAME(DNSLabel(_fqdn(target))))

    def add_ptr(self, address: str, target: str) -> None:
        """Reverse DNS: PTR ``target`` at the in-addr.arpa / ip6.arpa name of ``address``."""
        self._add(ipaddress.ip_address(address).reverse_pointer, "PTR", PTR(DNSLabel(_fqdn(target))))

    def remove(self, name: str) -> None:
        """Forget every record at ``name``: it answers NXDOMAIN again."""
        with self._zone.lock:
            self._zone.records.pop(_fqdn(name), None)

    def fail(self, name: str) -> None:
        """Answer SERVFAIL for ``name`` from now on."""
        with self._zone.lock:
            self._zone.failing.add(_fqdn(name))

    def recover(self, name: str) -> None:
        """Answer for ``name`` again after ``fail``: its records, or NXDOMAIN."""
        with self._zone.lock:
            self._zone.failing.discard(_fqdn(name))

    def _add(self, name: str, rtype: str, rdata: Any) -> None:
        with self._zone.lock:
            self._zone.records.setdefault(_fqdn(name), {}).setdefault(rtype, []).append(rdata)

    def __enter__(self) -> LoopbackDns:
        self._bind()
        for server in self._servers:
            # a short poll keeps shutdown() quick; serve_forever checks the flag once per poll
            thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02},
                                      name=f"loopback-dns-{self.port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            self._wait_ready()
        except BaseException:
            self._stop()
            raise
        with self._zone.lock:
            self._zone.queries.clear()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _bind(self) -> None:
        """UDP on a free port, then TCP on the same number; if TCP's is taken, try again."""
        quiet = DNSLogger(prefix=False, logf=log.debug)
        last_error: OSError | None = None
        for _ in range(20):
            udp = DNSServer(self._zone, address="127.0.0.1", port=0, logger=quiet)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self._zone, address="127.0.0.1", port=port, tcp=True, logger=quiet)
            except OSError as err:
                udp.server.server_close()
                last_error = err
                continue
            self._servers, self.port = [udp, tcp], port
            return
        raise RuntimeError(f"no port free for both UDP and TCP: {last_error}")

    def _wait_ready(self) -> None:
        """Both listeners answer a real query, or fail at the deadline."""
        deadline = time.monotonic() + self._start_timeout
        for ask in (dns.query.udp, dns.query.tcp):
            while True:
                try:
                    ask(dns.message.make_query(_PROBE, "A"), "127.0.0.1", port=self.port, timeout=0.5)
                    break
                except (dns.exception.Timeout, OSError):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"loopback DNS on port {self.port} did not answer in time") from None

    def _stop(self) -> None:
        for server, thread in zip(self._servers, self._threads, strict=True):
            server.server.shutdown()
            server.server.server_close()
            thread.join(timeout=10)
        self._servers, self._threads = [], []


def resolver(server: LoopbackDns, *, timeout: float = 2.0) -> dns.resolver.Resolver:
    """A dnspython resolver that asks only ``server`` (no system configuration, no cache)."""
    answerer = dns.resolver.Resolver(configure=False)
    answerer.nameservers = ["127.0.0.1"]
    answerer.port = server.port
    answerer.timeout = timeout
    answerer.lifetime = timeout * 2
    return answerer


def dkim_dnsfunc(server: LoopbackDns) -> Callable[..., bytes | None]:
    """A ``dnsfunc`` for dkimpy's ``verify``: the selector's TXT record, fetched over the
    network from ``server`` with dnspython, its strings joined (RFC 6376 §3.6.2.2)."""
    answerer = resolver(server)

    def get_txt(name: bytes | str, timeout: float = 5.0) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            answer = answerer.resolve(qname, "TXT", lifetime=timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as err:
            raise dkim.DnsTimeoutError(str(err)) from err
        return b"".join(answer[0].strings)

    return get_txt
