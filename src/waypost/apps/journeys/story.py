"""The journey as people read it, on the page, in the link preview and in the reply mail.

One numbering runs through all of them: the places a person stopped at (``JourneyView.visits``:
consecutive stops in the same named place taken together), numbered 1, 2, 3 in time order.
Map markers, the "Where you were" cards, the route sketch, the preview image and the mail all
use these numbers, never the photo numbers or the engine's stop numbers.

Times are local wall-clock times. The offset to UTC is said only where it helps: when the
journey spans more than one offset, at the first time and wherever it changes; a journey in
one zone reads "09:04", never "09:04 (UTC+01:00)" on every line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from waypost.apps.journeys.build import JourneyPhoto, JourneyView
from waypost.apps.journeys.geo import LatLon, centre


@dataclass(frozen=True)
class StoryStop:
    """A place the traveller stopped at, as every view numbers it."""

    number: int  # 1-based, in time order
    label: str  # "Belém, Lisbon, Portugal", or the coordinates
    name: str | None  # "Belém"; None when no place is near
    position: LatLon
    arrival: datetime  # local, aware
    departure: datetime
    photos: tuple[JourneyPhoto, ...]

    @property
    def photo_count(self) -> int:
        return len(self.photos)


def story_stops(view: JourneyView) -> tuple[StoryStop, ...]:
    """The numbered stops, one per visit, in time order."""
    stops = []
    for number, visit in enumerate(view.visits, start=1):
        first = visit.stops[0]
        stops.append(StoryStop(
            number=number, label=visit.label, name=first.place.name if first.place is not None else None,
            position=centre(stop.position for stop in visit.stops), arrival=visit.arrival,
            departure=visit.departure, photos=tuple(p for stop in visit.stops for p in stop.photos),
        ))
    return tuple(stops)


def stop_numbers(view: JourneyView) -> dict[int, int]:
    """The engine's stop number → the number people see."""
    return {stop.number: number for number, visit in enumerate(view.visits, start=1) for stop in visit.stops}


def cover_photo(view: JourneyView, has_image: Callable[[JourneyPhoto], bool]) -> JourneyPhoto | None:
    """The picture the page opens on: from the most photographed stop (the first of equals),
    its middle photo that has an image; without stops, the first photo with one."""
    stops = sorted(story_stops(view), key=lambda stop: -stop.photo_count)
    for stop in stops[:1]:
        with_image = [photo for photo in stop.photos if has_image(photo)]
        if with_image:
            return with_image[len(with_image) // 2]
    return next((photo for photo in view.photos if has_image(photo)), None)


# --- clock times without repeated offsets -------------------------------------------------------


def _zone(moment: datetime) -> str:
    offset = moment.strftime("%z")
    if not offset:
        return "zone unknown"
    return "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"


def one_zone(view: JourneyView) -> bool:
    """Whether every timed photo of the journey shares one UTC offset."""
    return len({p.local_taken_at.utcoffset() for p in view.photos if p.local_taken_at is not None}) <= 1


def clock_times(moments: Sequence[datetime | None], *, with_zones: bool) -> list[str]:
    """'09:04' for each moment; with ``with_zones``, the offset is added to the first one and
    wherever it differs from the one before ('23:10 (UTC+09:00)')."""
    shown: list[str] = []
    previous: timedelta | None | str = "none yet"
    for moment in moments:
        if moment is None:
            shown.append("time unknown")
            continue
        changed = with_zones and moment.utcoffset() != previous
        previous = moment.utcoffset()
        shown.append(f"{moment:%H:%M} ({_zone(moment)})" if changed else f"{moment:%H:%M}")
    return shown


# --- the page's timeline: days, then the stops of each day, then photos ---------------------------


@dataclass(frozen=True)
class TimelinePhoto:
    photo: JourneyPhoto
    clock: str  # "09:04", or "time unknown"


@dataclass(frozen=True)
class Chapter:
    """Consecutive photos of one day at one stop (``number`` None: on the way, or off the map)."""

    number: int | None
    place: str | None
    photos: tuple[TimelinePhoto, ...]
    first_of_stop: bool = False  # the stop's first chapter (a stop can run past midnight)

    @property
    def clock(self) -> str:
        return self.photos[0].clock


@dataclass(frozen=True)
class TimelineDay:
    """Photos of one local calendar day, in time order; ``date`` None for "Time unknown"."""

    date: date | None
    chapters: tuple[Chapter, ...]

    @property
    def heading(self) -> str:
        return describe_day(self.date) if self.date else "Time unknown"

    @property
    def photos(self) -> tuple[JourneyPhoto, ...]:
        return tuple(entry.photo for chapter in self.chapters for entry in chapter.photos)

    @property
    def places(self) -> tuple[str, ...]:
        return _distinct(chapter.place for chapter in self.chapters)


def timeline_days(view: JourneyView) -> list[TimelineDay]:
    """The photos by local day, in journey order, each day told stop by stop. Consecutive
    photos of the same local date share a day; a date can come twice when the traveller
    crossed the date line. Photos without a time come last, under "Time unknown"."""
    numbers = stop_numbers(view)
    names = {stop.number: stop.name for stop in story_stops(view)}
    timed = [p for p in view.photos if p.local_taken_at is not None]
    untimed = [p for p in view.photos if p.local_taken_at is None]
    clocks = dict(zip((p.public_id for p in timed),
                      clock_times([p.local_taken_at for p in timed], with_zones=not one_zone(view)), strict=True))
    runs: list[tuple[date | None, list[JourneyPhoto]]] = []
    for photo in timed:
        day = photo.local_taken_at.date()
        if runs and runs[-1][0] == day:
            runs[-1][1].append(photo)
        else:
            runs.append((day, [photo]))
    if untimed:
        runs.append((None, untimed))
    days = []
    seen: set[int] = set()
    for day, photos in runs:
        chapters: list[Chapter] = []
        for photo in photos:
            number = numbers.get(photo.stop) if photo.stop is not None else None
            entry = TimelinePhoto(photo, clocks.get(photo.public_id, "time unknown"))
            if chapters and chapters[-1].number == number:
                chapters[-1] = replace(chapters[-1], photos=(*chapters[-1].photos, entry))
            else:
                first = number is not None and number not in seen
                chapters.append(Chapter(number, names.get(number) if number else None, (entry,), first))
                seen.update([number] if number is not None else [])
        days.append(TimelineDay(day, tuple(chapters)))
    return days


# --- the mail's list of stops ----------------------------------------------------------------------


@dataclass(frozen=True)
class StopLine:
    number: int
    label: str
    when: str  # "Sat 13 Jul 2024, 09:04 to 11:52"; the day only when it changed
    photo_count: int


def stop_lines(view: JourneyView, only: Callable[[StoryStop], bool] | None = None) -> list[StopLine]:
    """One line per numbered stop (or per stop ``only`` keeps) for the reply: the day on the
    first line and when it changes, local times, the offset only when the journey spans several."""
    stops = [stop for stop in story_stops(view) if only is None or only(stop)]
    moments: list[datetime | None] = [m for stop in stops for m in (stop.arrival, stop.departure)]
    clocks = clock_times(moments, with_zones=not one_zone(view))
    lines = []
    last_day: date | None = None
    for index, stop in enumerate(stops):
        start, end = clocks[2 * index], clocks[2 * index + 1]
        when = start if stop.arrival.date() == last_day else f"{describe_day(stop.arrival.date())}, {start}"
        if stop.departure != stop.arrival:
            same_day = stop.departure.date() == stop.arrival.date()
            when += f" to {end}" if same_day else f" to {describe_day(stop.departure.date())}, {end}"
        last_day = stop.departure.date()
        lines.append(StopLine(stop.number, stop.label, when, stop.photo_count))
    return lines


@dataclass(frozen=True)
class Changes:
    """What one mail added to a journey, for the update reply."""

    photos: tuple[JourneyPhoto, ...]  # the new photos, in journey order
    stops: tuple[StopLine, ...]  # the numbered stops that gained photos, with their new count
    attention: tuple[JourneyPhoto, ...]  # new photos to check (the reply before listed the others)


def changes(view: JourneyView, added: int) -> Changes:
    """The ``added`` photos of the latest mail (the highest arrival sequence) and where they went."""
    newest = {p.public_id for p in sorted(view.photos, key=lambda p: p.point.sequence)[len(view.photos) - added:]} \
        if added else set()
    photos = tuple(p for p in view.photos if p.public_id in newest)
    gained: dict[int, int] = {}
    numbers = stop_numbers(view)
    for photo in photos:
        if photo.stop is not None:
            gained[numbers[photo.stop]] = gained.get(numbers[photo.stop], 0) + 1
    stops = tuple(replace(line, photo_count=gained[line.number])
                  for line in stop_lines(view, lambda stop: stop.number in gained))
    return Changes(photos, stops, tuple(p for p in photos if p.issue))


def route_alt(view: JourneyView) -> str:
    """The alt text of the route picture: 'Map of the route: 1 Belém, 2 Sintra and 3 more'."""
    names = [f"{stop.number} {stop.name or stop.label}" for stop in story_stops(view)]
    if not names:
        return "Map of the journey: no photo has a location"
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return f"Map of the route with its numbered stops: {shown}"


def reply_context(view: JourneyView, added: int) -> dict[str, object]:
    """What the ready and updated replies say besides the journey itself."""
    return {"stop_lines": stop_lines(view), "dates": describe_dates(view), "changes": changes(view, added),
            "route_alt": route_alt(view)}


# --- dates, figures and the one-line summary ---------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    value: str  # "1,642 km"
    label: str  # "travelled"
    note: str | None = None  # "1,565 km flown"


def describe_day(day: date) -> str:
    """'Sat 13 Jul 2024' (English, whatever the server's locale)."""
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def describe_dates(view: JourneyView) -> str | None:
    """'13 Jul 2024', '13 – 15 Jul 2024', '28 Jun – 2 Jul 2024' or '30 Dec 2023 – 2 Jan 2024'."""
    if view.start is None or view.end is None:
        return None
    first, last = view.start.date(), view.end.date()
    if first == last:
        return describe_day(first)
    end = f"{last.day} {_MONTHS[last.month - 1]} {last.year}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day} – {end}"
    if first.year == last.year:
        return f"{first.day} {_MONTHS[first.month - 1]} – {end}"
    return f"{first.day} {_MONTHS[first.month - 1]} {first.year} – {end}"


def describe_km(km: float) -> str:
    return f"{km:.1f} km" if km < 10 else f"{km:,.0f} km"


def _plural(count: int, word: str) -> str:
    return f"{word}{'s' if count != 1 else ''}"


def journey_figures(view: JourneyView) -> list[Figure]:
    """The totals line: distance, days, places, photos (those there is something to say about)."""
    totals = view.totals
    figures = []
    if view.legs:
        flown = f"{describe_km(totals.flown_km)} flown" if totals.flown_km else None
        figures.append(Figure(describe_km(totals.distance_km), "travelled", flown))
    if totals.days:
        figures.append(Figure(str(totals.days), _plural(totals.days, "day")))
    if totals.places:
        figures.append(Figure(str(len(totals.places)), _plural(len(totals.places), "place")))
    figures.append(Figure(str(totals.photos), _plural(totals.photos, "photo")))
    return figures


def journey_summary(view: JourneyView) -> str:
    """One line for link previews: '3 photos · 12.4 km · 1 day · Lisbon, Sintra'."""
    totals = view.totals
    parts = [f"{totals.photos} {_plural(totals.photos, 'photo')}"]
    if view.legs:
        parts.append(describe_km(totals.distance_km))
    if totals.days:
        parts.append(f"{totals.days} {_plural(totals.days, 'day')}")
    names = _distinct(stop.place.name for stop in view.stops if stop.place is not None)
    if names:
        more = len(names) - 3
        parts.append(", ".join(names[:3]) + (f" and {more} more" if more > 0 else ""))
    return " · ".join(parts)


def _distinct(items: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
