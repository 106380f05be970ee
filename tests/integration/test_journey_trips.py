"""Generated trips through the whole pipeline, with the real offline place and zone data:
what the owner reads in the reply and finds in the journey."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from tests.integration.test_pipeline import caught, deliver, drain
from waypost.apps.journeys.samples import Shot, make_photo
from waypost.store.models import journeys


def mail(photos: list[tuple[str, bytes]], *, subject: str, date: str = "Sun, 14 Jul 2024 20:00:00 +0100",
         message_id: str = "<trip@example.org>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "ann@example.org"
    message["To"] = "journeys@waypost.test"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = date
    message.set_content("photos")
    for filename, data in photos:
        message.add_attachment(data, maintype="image", subtype="jpeg", filename=filename)
    return message


def only_journey(runtime: Any) -> Any:
    with runtime.engine.connect() as conn:
        token = conn.execute(sa.select(journeys.c.token)).scalar_one()
    return runtime.journeys.view(token)


def reply_text(runtime: Any) -> str:
    (reply,) = caught(runtime)
    return reply.get_body(("plain",)).get_content()


BST, EDT = timezone(timedelta(hours=1)), timezone(timedelta(hours=-4))


def test_london_to_new_york(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    shots = [
        Shot(51.5007, -0.1246, datetime(2024, 7, 13, 8, 30, tzinfo=BST), "Westminster"),
        Shot(51.4700, -0.4543, datetime(2024, 7, 13, 10, 5, tzinfo=BST), "Heathrow"),
        Shot(40.6413, -73.7781, datetime(2024, 7, 13, 13, 10, tzinfo=EDT), "JFK"),
        Shot(40.7580, -73.9855, datetime(2024, 7, 13, 16, 0, tzinfo=EDT), "Times Square"),
    ]
    deliver(runtime, mail([(f"{s.label}.jpg", make_photo(s, seed=i)) for i, s in enumerate(shots)],
                          subject="Off to New York"))
    drain(runtime)

    view = only_journey(runtime)
    assert [p.filename for p in view.route] == [f"{s.label}.jpg" for s in shots]
    assert [leg.flight for leg in view.legs] == [False, True, False]
    assert view.totals.flown_km > 5000
    assert view.totals.countries == ("United Kingdom", "United States")
    assert [p.local_taken_at.utcoffset() for p in view.photos] == [timedelta(hours=1)] * 2 + [timedelta(hours=-4)] * 2
    text = reply_text(runtime)
    assert "km flown" in text and "Westminster" in text and "United States" in text


def test_camera_without_offset_or_gps_clock_gets_the_zone_of_the_place(runtime: Any) -> None:
    # an older camera: wall-clock time and a GPS position, but no offset tag and no GPS time;
    # the mail was sent later from Tokyo, so its Date zone would be nine hours off
    runtime.allowlist.add("ann@example.org")
    lisbon = ZoneInfo("Europe/Lisbon")
    winter = Shot(38.7139, -9.1334, datetime(2024, 1, 20, 15, 0, tzinfo=lisbon), "January")
    summer = Shot(38.7139, -9.1334, datetime(2024, 7, 20, 15, 0, tzinfo=lisbon), "July")
    photos = [(f"{s.label}.jpg", make_photo(s, include_offset=False, include_gps_time=False)) for s in (winter, summer)]
    deliver(runtime, mail(photos, subject="Lisbon, twice", date="Mon, 22 Jul 2024 09:00:00 +0900"))
    drain(runtime)

    view = only_journey(runtime)
    assert [p.time_source for p in view.photos] == ["location-zone", "location-zone"]
    assert [p.local_taken_at.isoformat() for p in view.photos] == [
        "2024-01-20T15:00:00+00:00", "2024-07-20T15:00:00+01:00"]  # WET, then WEST


def test_across_the_date_line(runtime: Any) -> None:
    # Fiji (UTC+12) in the evening, then Samoa (UTC+13) "the same evening" two hours later
    runtime.allowlist.add("ann@example.org")
    fiji = Shot(-17.7765, 177.4356, datetime(2024, 7, 13, 18, 0, tzinfo=ZoneInfo("Pacific/Fiji")), "Nadi")
    samoa = Shot(-13.8333, -171.7500, datetime(2024, 7, 13, 21, 0, tzinfo=ZoneInfo("Pacific/Apia")), "Apia")
    deliver(runtime, mail([("Apia.jpg", make_photo(samoa, include_offset=False)),
                           ("Nadi.jpg", make_photo(fiji, include_offset=False))], subject="Islands"))
    drain(runtime)

    view = only_journey(runtime)
    assert [p.filename for p in view.route] == ["Nadi.jpg", "Apia.jpg"]
    assert view.legs[0].distance_km < 1300 and view.legs[0].flight
    assert [p.utc_offset_minutes for p in view.route] == [720, 780]
    assert {s.place.country for s in view.stops} == {"Fiji", "Samoa"}


def test_photos_without_gps_are_estimated_or_explained(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    start = datetime(2024, 7, 13, 10, 0, tzinfo=BST)
    placed_a = Shot(38.7139, -9.1334, start, "Castle")
    between = Shot(None, None, start + timedelta(minutes=10), "Lunch")
    placed_b = Shot(38.7107, -9.1427, start + timedelta(minutes=20), "Chiado")
    later = Shot(None, None, start + timedelta(hours=5), "Dinner")
    no_time = Shot(None, None, None, "Mystery")
    photos = [(f"{s.label}.jpg", make_photo(s, seed=i)) for i, s in enumerate((placed_a, between, placed_b, later))]
    photos.append(("IMG-20240713-WA0007.jpg", make_photo(no_time)))
    deliver(runtime, mail(photos, subject="A walk"))
    drain(runtime)

    view = only_journey(runtime)
    placement = {p.filename: p.placement for p in view.photos}
    assert placement == {"Castle.jpg": "gps", "Lunch.jpg": "estimated", "Chiado.jpg": "gps",
                         "Dinner.jpg": "unplaced", "IMG-20240713-WA0007.jpg": "unplaced"}
    text = reply_text(runtime)
    assert "Photos to check:" in text
    assert "Lunch.jpg: no location of its own: placed between" in text
    assert "Dinner.jpg: no location: the camera did not record one" in text
    assert "IMG-20240713-WA0007.jpg: no location: it was sent through WhatsApp" in text
    assert "send the photos as files" in text
