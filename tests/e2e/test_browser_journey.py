"""The journey page in a real browser (Debian's Chromium, phone and desktop sizes) against
`waypost serve` on loopback: every request beyond loopback, map tiles included, is refused, so
what is drawn here is drawn without the internet."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from PIL import ExifTags, Image

from tests.conftest import (
    DESKTOP,
    PHONE,
    LiveServer,
    loopback_page,
    read_addresses,
    screenshot,
    server_env,
    start_process,
    wait_until,
    waypost_command,
)
from tests.e2e.test_serve import LINK, caught, cli, send
from tests.integration.test_pipeline import SHOTS
from waypost.apps.journeys.exif import read_metadata_bytes
from waypost.apps.journeys.samples import Shot, make_photo

BUDGET = 150_000  # bytes on the wire for the page, its styles, scripts and Leaflet: no photos, no tiles
LONDON = timezone(timedelta(hours=1))  # British Summer Time
TRIP = (
    *SHOTS,  # Saturday in and around Lisbon
    Shot(38.7742, -9.1342, datetime(2024, 7, 13, 20, 10, tzinfo=LONDON), "Airport"),
    Shot(51.4700, -0.4543, datetime(2024, 7, 14, 0, 35, tzinfo=LONDON), "Heathrow"),  # flown
    Shot(51.5007, -0.1246, datetime(2024, 7, 14, 10, 0, tzinfo=LONDON), "Westminster"),
    Shot(51.5081, -0.0759, None, "No clock"),  # a place but no time: last, under "Time unknown"
)
DAYS = ["Sat 13 Jul 2024", "Sun 14 Jul 2024", "Time unknown"]

PWN = "window.__pwned"
HOSTILE_SUBJECT = (f'</script><script>{PWN}=1</script>"><img src=x onerror={PWN}=2> '
                   f"javascript:{PWN}=3 <b>bold</b> & co")
HOSTILE_FILES = (f'"><img src=x onerror={PWN}=4>.jpg', f"<svg onload={PWN}=5>.jpg", f"javascript:{PWN}=6.jpg")
HOSTILE_MAKE = f"<img src=x onerror={PWN}=7>"
HOSTILE_MODEL = f"</script><script>{PWN}=8</script>"


@dataclass
class Journey:
    url: str
    subject: str
    filenames: list[str]
    reply: EmailMessage | None = None


@dataclass
class Site:
    server: LiveServer
    trip: Journey
    hostile: Journey


def with_camera(jpeg: bytes, make: str, model: str) -> bytes:
    """The same photo with other EXIF Make and Model strings (GPS and times kept)."""
    image = Image.open(io.BytesIO(jpeg))
    exif = image.getexif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = make, model
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88, exif=exif.tobytes())
    meta, original = read_metadata_bytes(out.getvalue()), read_metadata_bytes(jpeg)
    assert (meta.make, meta.model, meta.latitude) == (make, model, original.latitude)
    return out.getvalue()


def mail(subject: str, photos: list[tuple[str, bytes]]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.org>"
    message["To"] = "journeys@waypost.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{hashlib.sha256(subject.encode()).hexdigest()[:20]}@example.org>"
    message["Date"] = "Sun, 14 Jul 2024 20:00:00 +0100"
    message.set_content("photos attached")
    for filename, data in photos:
        message.add_attachment(data, maintype="image", subtype="jpeg", filename=filename)
    return message


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server for the module, holding a two-day trip with a flight, and a journey whose
    subject, file names and camera names are all script payloads."""
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    assert cli(data_dir, "allowlist", "add", "ann@example.org").returncode == 0
    process = start_process(waypost_command("serve", "--smtp-port", "0", "--http-port", "0"), server_env(data_dir))
    host, port, http, lines = read_addresses(process)
    server = LiveServer(process, host, port, http, data_dir, lines)
    try:
        trip = mail("Lisbon and London", [(f"{s.label}.jpg", make_photo(s, seed=i))
                                          for i, s in reversed(list(enumerate(TRIP)))])
        hostile = mail(HOSTILE_SUBJECT, [(name, with_camera(make_photo(shot, seed=i), HOSTILE_MAKE, HOSTILE_MODEL))
                                         for i, (name, shot) in enumerate(zip(HOSTILE_FILES, SHOTS, strict=True))])
        for message in (trip, hostile):
            send(server, message)
        replies = wait_until(lambda: len(caught(data_dir)) == 2 and caught(data_dir), timeout=60,
                             message="both replies in the catcher")
        urls = {str(r["In-Reply-To"]): LINK.search(r.get_body(("plain",)).get_content()).group(1) for r in replies}
        by_thread = {str(r["In-Reply-To"]): r for r in replies}
        yield Site(server,
                   Journey(urls[trip["Message-ID"]], str(trip["Subject"]), [f"{s.label}.jpg" for s in TRIP],
                           by_thread[trip["Message-ID"]]),
                   Journey(urls[hostile["Message-ID"]], HOSTILE_SUBJECT, list(HOSTILE_FILES)))
    finally:
        server.stop()


def open_journey(browser_page: Any, url: str) -> Any:
    page = browser_page.page
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return page


def journey_data(url: str) -> dict[str, Any]:
    return httpx.get(url + ".json").json()


def all_loaded(page: Any, selector: str) -> None:
    """Wait until every image ``selector`` finds has loaded (lazy ones are scrolled to first)."""
    images = page.locator(selector)
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed()
        wait_until(lambda at=index: images.nth(at).evaluate("i => i.complete && i.naturalWidth > 0"), timeout=10,
                   message=f"{selector} number {index + 1} loaded")


def page_data(page: Any) -> dict[str, Any]:
    """The data the page's script reads (the download plus the numbered stops)."""
    return page.evaluate("JSON.parse(document.getElementById('journey-data').textContent)")


def test_route_and_markers_are_drawn_with_no_tiles(site: Site, browser_page: Any) -> None:
    page = open_journey(browser_page, site.trip.url)
    data = journey_data(site.trip.url)
    legs = data["legs"]
    assert [leg["mode"] for leg in legs].count("flight") == 1 and len(legs) == 5

    assert browser_page.blocked, "the page asked for map tiles"
    assert all("tile.openstreetmap.org" in url for url in browser_page.blocked), browser_page.blocked
    wait_until(lambda: page.locator("#map.tiles-failed").count() == 1, timeout=10, message="the tiles to fail")
    assert page.locator("#route-sketch").count() == 0, "Leaflet replaced the server's sketch"
    map_box = page.locator("#map").bounding_box()
    assert map_box["width"] == 390 and map_box["height"] >= 280, "full width on a phone, map on top"
    numbered = page_data(page)["numbered_stops"]
    in_stops = {photo for stop in numbered for photo in stop["photos"]}
    for kind, count in (("route-ground", 4), ("route-flight", 1), ("route-stray", len(TRIP) - len(in_stops))):
        paths = page.locator(f"#map path.{kind}")
        assert paths.count() == count, kind
        for index in range(count):
            box = paths.nth(index).bounding_box()
            assert box and box["width"] + box["height"] > 4, f"{kind} {index} is drawn"
    flight = page.locator("#map path.route-flight").get_attribute("d")
    assert len(re.findall(r"[ML]", flight)) > 3, "the flight is drawn as an arc, not a straight line"
    # a thumbnail per numbered stop, with its number; the photos of no stop are dots
    markers = page.locator("#map .leaflet-marker-icon.route-thumb")
    assert markers.count() == len(numbered) and data["totals"]["on_map"] == len(TRIP)
    assert markers.all_inner_texts() == [str(n) for n in range(1, len(numbered) + 1)]
    all_loaded(page, "#map .route-thumb img")
    assert markers.locator("img").count() == len(numbered)

    # every thumbnail loads (over loopback), then the page is saved for people to look at
    page.locator(".timeline").last.scroll_into_view_if_needed()
    all_loaded(page, ".timeline img")  # polled from here: the page's CSP forbids the eval wait_for_function uses
    screenshot(page, "journey")


def test_timeline_is_grouped_by_local_day_in_time_order(site: Site, browser_page: Any) -> None:
    page = open_journey(browser_page, site.trip.url)
    assert page.locator(".day h3 .day-name").all_inner_texts() == DAYS
    days = page.locator(".day")
    # in public a photo is never its file name (the owner sees that in the reply), nor its camera
    assert [days.nth(i).locator(".photo").count() for i in range(days.count())] == [4, 2, 1]
    shown = page.locator("body").inner_text() + page.evaluate("document.getElementById('journey-data').textContent")
    assert "Belém.jpg" not in shown and "No clock.jpg" not in shown
    assert page.locator(".photo .name, .photo .camera").count() == 0
    # one zone all along (Lisbon and London keep the same summer time): local times, no offsets
    assert days.nth(0).locator(".photo .when").all_inner_texts() == ["09:04", "11:52", "14:21", "20:10"]
    assert "UTC" not in page.locator(".timeline").first.inner_text()
    assert days.nth(2).locator(".photo .when").inner_text() == "time unknown"
    # the story of each day is told stop by stop, with the stops' numbers and places
    numbered = page_data(page)["numbered_stops"]
    chapters = page.locator(".chapter[data-stop]")
    told = [int(chapters.nth(i).get_attribute("data-stop")) for i in range(chapters.count())]
    assert told == sorted(told) and set(told) == {stop["number"] for stop in numbered}
    headings = page.locator(".chapter h4 .stop-number").all_inner_texts()
    assert headings == [str(n) for n in told]
    totals = page.locator(".totals li").all_inner_texts()
    assert re.fullmatch(r"1,6\d\d km\s+travelled, 1,5\d\d km flown", totals[0]), totals[0]
    assert [t.split()[-1] for t in totals] == ["flown", "days", "places", "photos"]
    assert totals[1].split() == ["2", "days"] and totals[3].split() == ["7", "photos"]
    assert page.locator(".cover .dates").inner_text() == "13 – 14 Jul 2024"


def test_a_thumbnail_opens_its_image_in_the_viewer(site: Site, browser_page: Any) -> None:
    page = open_journey(browser_page, site.trip.url)
    journey = journey_data(site.trip.url)["photos"]
    photos = [p for p in journey if p["taken_at"]] + [p for p in journey if not p["taken_at"]]  # timeline order
    thumbs = page.locator(".timeline a.thumb")
    assert thumbs.count() == len(photos)
    assert [thumbs.nth(i).get_attribute("href") for i in range(len(photos))] == [p["display_url"] for p in photos]

    thumbs.first.click()
    viewer, image = page.locator(".viewer"), page.locator(".viewer-image")
    assert viewer.is_visible()
    all_loaded(page, ".viewer-image")
    assert image.get_attribute("src").endswith(photos[0]["display_url"])
    # the first photo in time is Belém.jpg: its caption is its place and local time, nothing technical
    first_place = page.locator(".chapter").first.get_attribute("data-place")
    caption = page.locator(".viewer-caption").inner_text()
    assert first_place and re.fullmatch(rf"{re.escape(first_place)} · 09:04\s+\(1 of {len(photos)}\)", caption), caption
    assert f"(1 of {len(photos)})" in page.locator(".viewer-caption").inner_text()
    assert page.locator(".viewer-prev").is_disabled()
    page.keyboard.press("ArrowRight")
    assert image.get_attribute("src").endswith(photos[1]["display_url"])
    page.locator(".viewer-next").click()
    assert image.get_attribute("src").endswith(photos[2]["display_url"])
    page.keyboard.press("ArrowLeft")
    assert image.get_attribute("src").endswith(photos[1]["display_url"])
    page.keyboard.press("Escape")
    assert viewer.is_hidden()
    assert page.evaluate("document.activeElement.getAttribute('href')") == photos[0]["display_url"]

    thumbs.last.click()
    assert page.locator(".viewer-next").is_disabled()
    page.locator(".viewer-close").click()
    assert viewer.is_hidden() and page.url == site.trip.url, "the viewer never left the page"


def test_without_script_the_sketch_shows_the_route_and_thumbnails_are_links(site: Site, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    refused: list[str] = []

    def loopback_only(route: Any) -> None:
        if re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", route.request.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    try:
        page = context.new_page()
        page.goto(site.trip.url)
        sketch = page.locator("#route-sketch")
        assert sketch.is_visible()
        assert sketch.locator("path.sketch-line").count() == 5
        assert sketch.locator("path.sketch-line.flight").count() == 1
        assert sketch.locator(".sketch-stop").count() == len(journey_data(site.trip.url)["stops"])
        assert refused == [], "without script nothing beyond the server is asked for"
        href = page.locator(".timeline a.thumb").first.get_attribute("href")
        page.locator(".timeline a.thumb").first.click()
        page.wait_for_url(re.compile(re.escape(href) + "$"))
    finally:
        context.close()


def test_served_images_carry_no_exif(site: Site, browser_page: Any) -> None:
    page = open_journey(browser_page, site.hostile.url)
    page.locator(".timeline").last.scroll_into_view_if_needed()
    all_loaded(page, ".timeline img")  # polled from here: the page's CSP forbids the eval wait_for_function uses
    base = site.server.http_url
    urls = [base + p[key] for p in journey_data(site.hostile.url)["photos"]
            for key in ("thumbnail_url", "display_url")]
    urls.append(page.locator('meta[property="og:image"]').get_attribute("content"))
    assert urls[-1].startswith(base + "/j/") and urls[-1].endswith("/preview.png")
    for url in urls:
        response = httpx.get(url)
        assert response.status_code == 200, url
        image = Image.open(io.BytesIO(response.content))
        assert not image.getexif() and "exif" not in image.info, url
        assert b"Exif\x00\x00" not in response.content and b"onerror" not in response.content, url
    assert Image.open(io.BytesIO(httpx.get(urls[-1]).content)).size == (1200, 630)


def test_script_payloads_in_subject_filenames_and_exif_stay_inert(site: Site, browser_page: Any) -> None:
    page = browser_page.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_journey(browser_page, site.hostile.url)

    def pwned() -> Any:
        return page.evaluate("typeof window.__pwned === 'undefined' ? null : window.__pwned")

    assert pwned() is None
    # the text is shown as text, everywhere it appears
    assert page.locator(".cover h1").inner_text() == HOSTILE_SUBJECT
    assert page.title() == f"{HOSTILE_SUBJECT} · Waypost"
    assert page.locator('meta[property="og:title"]').get_attribute("content") == HOSTILE_SUBJECT
    assert page.evaluate("JSON.parse(document.getElementById('journey-data').textContent).title") == HOSTILE_SUBJECT
    # file names and camera make and model are not shown in public at all (the reply has them)
    assert page.locator(".photo .name, .photo .camera").count() == 0
    alts = [page.locator(".timeline img").nth(i).get_attribute("alt") for i in range(len(HOSTILE_FILES))]
    assert all(re.match(r"Photo \d+, ", alt or "") for alt in alts), alts
    # what a visitor reads, and the data the page carries, unescaped
    content = page.locator("body").inner_text() + page.evaluate("document.getElementById('journey-data').textContent")
    assert HOSTILE_MAKE not in content and HOSTILE_MODEL not in content
    assert not any(name in content for name in HOSTILE_FILES)
    assert page.locator("script").count() == 3, "the data island, Leaflet and journey.js: nothing injected"
    assert page.locator("img[src='x'], svg[onload], [onerror], [onload]").count() == 0
    assert page.locator("a[href^='javascript'], a[href*='pwned']").count() == 0

    # and stays text when the script puts it on screen: marker titles, the viewer
    markers = page.locator("#map .leaflet-marker-icon")
    titles = [markers.nth(i).get_attribute("title") for i in range(markers.count())]
    assert titles and all(re.fullmatch(r"\d+\. .+ · \d+ photos?", title or "") for title in titles), titles
    for index in range(len(titles)):  # a marker opens its stop's photo in the viewer
        markers.nth(index).dispatch_event("click")
        caption = page.locator(".viewer-caption").inner_text()
        assert page.locator(".viewer").is_visible() and HOSTILE_MAKE not in caption and HOSTILE_MODEL not in caption
        page.keyboard.press("Escape")
    page.locator(".timeline a.thumb").first.click()
    caption = page.locator(".viewer-caption").inner_text()
    assert HOSTILE_MAKE not in caption and HOSTILE_MODEL not in caption and not any(f in caption for f in HOSTILE_FILES)
    page.keyboard.press("Escape")
    assert pwned() is None and dialogs == []
    assert page.locator("img[src='x'], svg[onload], [onerror], [onload]").count() == 0


def test_page_weight_stays_within_budget(site: Site, browser_page: Any) -> None:
    open_journey(browser_page, site.trip.url)
    page_parts = {url: size for url, size in browser_page.transferred.items() if "/photos/" not in url}
    names = {re.sub(r"\?.*$", "", url.rsplit("/", 1)[-1]) for url in page_parts}
    assert {"leaflet.js", "leaflet.css", "journey.js", "waypost.css"} <= names, page_parts
    total = sum(page_parts.values())
    assert 0 < total <= BUDGET, f"{total} bytes: " + ", ".join(f"{u.rsplit('/', 1)[-1]} {s}"
                                                                for u, s in page_parts.items())
    # the scripts travel compressed: Leaflet alone is 147 KB as a file
    leaflet = next(size for url, size in page_parts.items() if "leaflet.js" in url)
    assert leaflet < 60_000


SIZES = {"phone": PHONE, "desktop": DESKTOP}


@pytest.fixture(params=sorted(SIZES))
def sized_page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:
    """The journey page's browser at a phone's size and at a desktop's."""
    with loopback_page(browser, SIZES[request.param]) as page:
        yield page


def test_one_numbering_on_the_cards_the_map_the_sketch_and_the_mail(site: Site, sized_page: Any) -> None:
    page = open_journey(sized_page, site.trip.url)
    numbered = page_data(page)["numbered_stops"]
    expected = [(str(stop["number"]), stop["label"]) for stop in numbered]
    assert [number for number, _ in expected] == [str(n) for n in range(1, len(numbered) + 1)]
    cards = page.locator(".stops a.stop")
    assert [(cards.nth(i).locator(".stop-number").inner_text(), cards.nth(i).locator(".place").inner_text())
            for i in range(cards.count())] == expected
    markers = page.locator("#map .leaflet-marker-icon.route-thumb")
    assert [(markers.nth(i).inner_text(), markers.nth(i).get_attribute("title").split(". ", 1)[1].rsplit(" · ", 1)[0])
            for i in range(markers.count())] == expected
    # the stops are in time order: each one's photos come after the one before's
    order = [photo["id"] for photo in page_data(page)["photos"]]
    firsts = [order.index(stop["photos"][0]) for stop in numbered]
    assert firsts == sorted(firsts)
    # the sketch drawn without script, and the preview picture drawn from it, number them alike
    sketch = httpx.get(site.trip.url).text
    assert re.findall(r"<title>(\d+)\. ([^<]+)</title>", sketch) == [(n, label) for n, label in expected]
    # and the reply mail lists the same numbers and places
    text = " ".join(site.trip.reply.get_body(("plain",)).get_content().split())  # type: ignore[union-attr]
    for number, label in expected:
        assert f"- {number}. {label}: " in text


def test_a_tap_on_a_card_centres_its_marker(site: Site, sized_page: Any) -> None:
    page = open_journey(sized_page, site.trip.url)
    cards = page.locator(".stops a.stop")
    assert cards.count() >= 3
    for index in (cards.count() - 1, 0, 1):  # the last, then the first: the map has to move each time
        card = cards.nth(index)
        number = card.get_attribute("data-stop")
        card.click()
        marker = page.locator(f"#map .route-thumb.chosen:has-text('{number}')")
        assert marker.count() == 1 and page.locator("#map .route-thumb.chosen").count() == 1

        def centred(marker: Any = marker) -> bool:
            box, area = marker.bounding_box(), page.locator("#map").bounding_box()
            return bool(box and area and abs(box["x"] + box["width"] / 2 - (area["x"] + area["width"] / 2)) < 2
                        and abs(box["y"] + box["height"] / 2 - (area["y"] + area["height"] / 2)) < 2)

        wait_until(centred, timeout=5, message=f"marker {number} centred on the map")
        map_box = page.locator("#map").bounding_box()
        assert map_box["y"] > -2 and map_box["y"] < sized_page.page.viewport_size["height"] / 2, "the map is in view"


def test_the_page_opens_on_a_cover_and_nothing_overflows(site: Site, sized_page: Any, request: pytest.FixtureRequest
                                                         ) -> None:
    page = open_journey(sized_page, site.trip.url)
    cover = page.locator(".cover")
    image = cover.locator("img.cover-image")
    all_loaded(page, ".cover-image")
    # the most photographed stop's photo, in its display size
    numbered = page_data(page)["numbered_stops"]
    busiest = max(numbered, key=lambda stop: len(stop["photos"]))
    assert any(image.get_attribute("src").endswith(f"/photos/{photo}/display.jpg") for photo in busiest["photos"])
    assert cover.locator("h1").inner_text() == site.trip.subject
    assert cover.locator(".dates").inner_text() == "13 – 14 Jul 2024"
    assert re.fullmatch(r"1,6\d\d km travelled", cover.locator(".distance").inner_text())
    cover_box, map_box = cover.bounding_box(), page.locator("#map").bounding_box()
    assert cover_box["y"] < map_box["y"] and cover_box["height"] >= 200, "the page opens on the cover"
    title_box = cover.locator("h1").bounding_box()
    assert title_box["y"] + title_box["height"] <= cover_box["y"] + cover_box["height"], "the title is on the cover"
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") == width, "nothing wider than the screen"
    wide = page.evaluate("""w => [...document.querySelectorAll('main *')].filter(e => {
        const r = e.getBoundingClientRect(); return r.width && (r.left < -1 || r.right > w + 1)
          && !e.closest('.leaflet-pane, .leaflet-control-container, #map')}).map(e => e.className)""", width)
    assert wide == []
    all_loaded(page, ".timeline img")
    screenshot(page, f"journey-{request.node.callspec.params['sized_page']}")


def test_tile_requests_carry_the_origin_alone(site: Site, browser_page: Any) -> None:
    page = open_journey(browser_page, site.trip.url)
    wait_until(lambda: browser_page.referers, timeout=10, message="a tile request")
    origin = site.server.http_url.rstrip("/") + "/"
    token = site.trip.url.rsplit("/", 1)[1]
    tiles = {url: referer for url, referer in browser_page.referers.items() if "tile.openstreetmap.org" in url}
    assert tiles and set(tiles.values()) == {origin}, tiles
    assert not any(token in (referer or "") for referer in browser_page.referers.values())
    # the page keeps its own strict policy for everything else
    assert httpx.get(site.trip.url).headers["Referrer-Policy"] == "no-referrer"
    assert page.locator(".leaflet-tile").count() > 0


def test_the_viewer_swipes_on_a_phone(site: Site, browser_page: Any) -> None:
    page = open_journey(browser_page, site.trip.url)
    hrefs = [a.get_attribute("href") for a in page.locator(".timeline a.thumb").all()]
    page.locator(".timeline a.thumb").first.click()
    image = page.locator(".viewer-image")

    def swipe(dx: int) -> None:
        page.evaluate("""dx => {
            const root = document.querySelector('.viewer');
            const at = x => [new Touch({identifier: 1, target: root, clientX: x, clientY: 400})];
            const touch = (kind, now, x) => root.dispatchEvent(new TouchEvent(kind,
                {touches: now ? at(x) : [], changedTouches: at(x), bubbles: true}));
            touch('touchstart', true, 300);
            touch('touchend', false, 300 + dx);
        }""", dx)

    swipe(-120)  # to the left: the next photo
    assert image.get_attribute("src").endswith(hrefs[1])
    swipe(-120)
    assert image.get_attribute("src").endswith(hrefs[2])
    swipe(160)  # to the right: back
    assert image.get_attribute("src").endswith(hrefs[1])
    swipe(20)  # a small move is not a swipe
    assert image.get_attribute("src").endswith(hrefs[1])
