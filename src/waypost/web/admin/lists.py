"""Who may write in (the allowlist) and who is never written to (the suppression list)."""

from __future__ import annotations

import io
from datetime import timedelta

from starlette.responses import Response
from starlette.routing import Route

from waypost.clock import utcnow
from waypost.mail.addresses import AddressError, normalise_address
from waypost.outbound import suppression
from waypost.pipeline.allowlist import parse_entry
from waypost.transactions import reading, transaction
from waypost.web.admin.console import Call, Console

PAGE = 50


def allowlist_routes(console: Console) -> list[Route]:
    allowlist = console.runtime.allowlist

    def show(call: Call) -> Response:
        return console.render(call, "admin/allowlist.html", {"entries": allowlist.entries()})

    def add(call: Call) -> Response:
        text, note = call.form.text("entry", 320), call.form.text("note")
        try:
            value = parse_entry(text)[1]
        except AddressError as err:
            return console.problem(call, f"Not an address or a domain: {err}")
        with transaction(console.engine) as conn:  # the change and its audit entry commit together
            added = allowlist.add(text, note or None, conn=conn)
            if added:
                console.audit(conn, call, "allowlist.add", value, note or None)
        return console.redirect("/admin/allowlist", "added" if added else "already")

    def remove(call: Call) -> Response:
        text = call.form.text("entry", 320)
        try:
            value = parse_entry(text)[1]
        except AddressError as err:
            return console.problem(call, f"Not an address or a domain: {err}")
        with transaction(console.engine) as conn:
            removed = allowlist.remove(text, conn=conn)
            if removed:
                console.audit(conn, call, "allowlist.remove", value)
        return console.redirect("/admin/allowlist", "removed" if removed else "not-found")

    return [
        Route("/allowlist", console.page(show), methods=["GET"]),
        Route("/allowlist/add", console.action(add), methods=["POST"]),
        Route("/allowlist/remove", console.action(remove), methods=["POST"]),
    ]


def suppression_routes(console: Console) -> list[Route]:
    engine = console.engine

    def show(call: Call) -> Response:
        q = call.query
        reason = q.get("reason", "").upper()
        with reading(engine) as conn:
            found = suppression.entries(
                conn, limit=PAGE + 1, after=q.get("after") or None, contains=q.get("search") or None,
                domain=q.get("domain") or None,
                reason=suppression.Reason(reason) if reason in suppression.Reason.__members__ else None)
            changes = suppression.history(conn, limit=20)
        page_query = {k: q.get(k, "") for k in ("search", "domain", "reason")}
        return console.render(call, "admin/suppressions.html", {
            "entries": found[:PAGE], "next": found[PAGE - 1].address if len(found) > PAGE else None,
            "filters": page_query, "reasons": list(suppression.Reason), "history": changes})

    def add(call: Call) -> Response:
        form = call.form
        try:
            address = normalise_address(form.text("address", 320))
            reason = suppression.Reason(form.text("reason", 16).upper() or "MANUAL")
            days = float(form.text("days", 16)) if form.text("days", 16) else None
        except (AddressError, ValueError) as err:
            return console.problem(call, f"Could not add: {err}")
        note = form.text("note")
        if not note or (days is not None and days <= 0):
            return console.problem(call, "Say why the address is suppressed; days, when given, must be positive.")
        with transaction(engine) as conn:
            added = suppression.add(conn, address, reason, "console", detail=note, by=f"console ({call.actor})",
                                    expires_at=utcnow() + timedelta(days=days) if days else None)
            if added:
                console.audit(conn, call, "suppression.add", suppression.suppression_key(address),
                              f"{reason.value}: {note}")
        return console.redirect("/admin/suppressions", "added" if added else "already")

    def remove(call: Call) -> Response:
        address, why = call.form.text("address", 320), call.form.text("reason")
        if not why:
            return console.problem(call, "Say why the address may receive mail again (the reason is kept).")
        try:
            with transaction(engine) as conn:
                removed = suppression.remove(conn, address, by=f"console ({call.actor})", note=why)
                if removed:
                    console.audit(conn, call, "suppression.remove", suppression.suppression_key(address), why)
        except AddressError as err:
            return console.problem(call, f"Could not remove: {err}")
        return console.redirect("/admin/suppressions", "removed" if removed else "not-found")

    def export(call: Call) -> Response:
        out = io.StringIO()
        with transaction(engine) as conn:
            count = suppression.write_csv(conn, out)
            console.audit(conn, call, "suppression.export", None, f"{count} entries")
        return console.download(out.getvalue(), "text/csv; charset=utf-8", "suppressions.csv")

    def import_csv(call: Call) -> Response:
        raw = call.form.files.get("file") or call.form.get("csv").encode()
        try:
            rows = suppression.read_csv(raw.decode("utf-8-sig"), source="console-import")
        except UnicodeDecodeError:
            return console.problem(call, "The file is not UTF-8. Nothing was imported.")
        except suppression.SuppressionImportError as err:
            return console.render(call, "admin/refused.html", {
                "message": "Nothing was imported: the file has bad lines.", "problems": err.problems[:200]}, 400)
        if not rows:
            return console.problem(call, "The file holds no addresses.")
        with transaction(engine) as conn:
            new = suppression.add_many(conn, rows, by=f"console ({call.actor})")
            console.audit(conn, call, "suppression.import", None, f"{len(rows)} rows, {len(new)} newly suppressed")
        return console.redirect("/admin/suppressions", "imported")

    return [
        Route("/suppressions", console.page(show), methods=["GET"]),
        Route("/suppressions.csv", console.page(export), methods=["GET"]),
        Route("/suppressions/add", console.action(add), methods=["POST"]),
        Route("/suppressions/remove", console.action(remove), methods=["POST"]),
        Route("/suppressions/import", console.upload(import_csv), methods=["POST"]),
    ]
