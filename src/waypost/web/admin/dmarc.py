"""DMARC and TLS reports: per source IP and reporter, the messages receivers saw in our name,
aligned DKIM and SPF results and the disposition applied; TLS reports per policy domain;
recent failure reports and the reports that could not be read."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from waypost.dmarc.store import malformed_reports, summary
from waypost.dmarc.watch import own_sources
from waypost.transactions import reading
from waypost.web.admin.console import Call, Console

DAYS = (1, 7, 30, 90)


def dmarc_routes(console: Console) -> list[Route]:
    ips, domains = own_sources(console.settings)

    def show(call: Call) -> Response:
        wanted = call.request.query_params.get("days", "7")
        days = int(wanted) if wanted.isdigit() and int(wanted) in DAYS else 7
        with reading(console.engine) as conn:
            found = summary(conn, days, ips)
            broken = malformed_reports(conn)
        return console.render(call, "admin/dmarc.html", {
            "summary": found, "malformed": broken, "choices": DAYS, "own_ips": ips, "own_domains": domains,
            "mailbox": f"{console.settings.dmarc.mailbox}@{console.settings.mail_domain}"})

    return [Route("/dmarc", console.page(show), methods=["GET"])]
