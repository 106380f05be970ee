"""The preview picture of a journey: the Open Graph image (``/j/<token>/preview.png``), what a
chat app or a mail client shows when someone pastes the link, 1200 x 630 pixels; and the same
picture at half size inline in the reply mail (``mail_picture``). Drawn with Pillow from the
same route sketch as the page: the route and its numbered stops on a plain background (no
map tiles, so nothing is fetched and nothing about the journey leaves the server), the
title, the dates and the totals.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from collections.abc import Callable
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from waypost.apps.journeys.build import JourneyView
from waypost.apps.journeys.sketch import Sketch, route_sketch
from waypost.apps.journeys.story import describe_dates, journey_figures

SIZE = (1200, 630)
PAPER, CARD, INK, MUTED = (246, 244, 239), (223, 232, 234), (29, 42, 51), (91, 103, 112)
ROUTE, FLIGHT, STOP, STRAY = (31, 111, 120), (138, 79, 125), (194, 86, 26), (150, 150, 150)
TEXT_LEFT, TEXT_WIDTH = 56, 500
MAP_BOX = (600, 40, 1160, 590)  # left, top, right, bottom
MAX_NAMED_STOPS = 8  # more names than this only crowd the picture
# DejaVu covers most scripts people write subjects in; Pillow's own font is the fallback.
FONTS = {True: "DejaVuSans-Bold.ttf", False: "DejaVuSans.ttf"}
# The fonts are loaded once and shared; a FreeType face is not safe to render with from two
# threads at once, and the web runs this in its thread pool. Drawing takes tens of milliseconds.
_drawing = threading.Lock()


@cache
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONTS[bold], size)
    except OSError:
        return ImageFont.load_default(size)


def _drawable(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> str:
    """Text the font can draw: with Pillow's built-in font (no DejaVu installed), ASCII only."""
    if isinstance(getattr(font, "path", None), str):  # a font file found by name: DejaVu
        return text
    text = text.replace("–", "-").replace("…", "...")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
          width: int, max_lines: int) -> list[str]:
    """Greedy word wrap into at most ``max_lines``; the last line ends in an ellipsis when cut."""
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        while draw.textlength(line, font=font) > width and len(line) > 1:
            line = line[:-1]  # one word longer than the line
        lines.append(line)
    if words and lines:  # cut: end on a whole word and an ellipsis
        last = lines[-1]
        while last and draw.textlength(last + "…", font=font) > width:
            last = last.rsplit(" ", 1)[0] if " " in last else last[:-1]
        lines[-1] = last.rstrip(" ,;:") + "…"
    return lines


def _draw_text(draw: ImageDraw.ImageDraw, view: JourneyView) -> None:
    y = 56
    draw.text((TEXT_LEFT, y), "Waypost", font=_font(28, bold=True), fill=ROUTE)
    y += 70
    title_font = _font(54, bold=True)
    title = " ".join(_drawable(view.title, title_font).split()) or "Journey"
    for line in _wrap(draw, title, title_font, TEXT_WIDTH, 3):
        draw.text((TEXT_LEFT, y), line, font=title_font, fill=INK)
        y += 66
    dates = describe_dates(view)
    if dates:
        y += 8
        draw.text((TEXT_LEFT, y), _drawable(dates, _font(30)), font=_font(30), fill=MUTED)
        y += 44
    y = max(y + 24, 400)
    value_font, label_font = _font(34, bold=True), _font(28)
    for figure in journey_figures(view)[:4]:
        draw.text((TEXT_LEFT, y), figure.value, font=value_font, fill=INK)
        offset = draw.textlength(figure.value + " ", font=value_font)
        label = _wrap(draw, _drawable(figure.label, label_font), label_font, TEXT_WIDTH - int(offset), 1)
        draw.text((TEXT_LEFT + offset, y + 5), label[0] if label else "", font=label_font, fill=MUTED)
        y += 46


def _draw_route(draw: ImageDraw.ImageDraw, sketch: Sketch | None) -> None:
    left, top, right, bottom = MAP_BOX
    draw.rounded_rectangle(MAP_BOX, radius=24, fill=CARD)
    if sketch is None:
        draw.text(((left + right) / 2, (top + bottom) / 2), "No locations", font=_font(30), fill=MUTED,
                  anchor="mm")
        return

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x, top + y

    for x, y in sketch.strays:
        cx, cy = at(x, y)
        draw.ellipse((cx - 6, cy - 6, cx + 6, cy + 6), fill=STRAY)
    for line in sketch.lines:
        points = [at(x, y) for x, y in line.points]
        draw.line(points, fill=FLIGHT if line.flight else ROUTE, width=5 if line.flight else 8, joint="curve")
    number_font = _font(18, bold=True)
    for mark in sketch.stops:
        cx, cy = at(mark.x, mark.y)
        draw.ellipse((cx - 17, cy - 17, cx + 17, cy + 17), fill="white", outline=STOP, width=5)
        draw.text((cx, cy), str(mark.number), font=number_font, fill=INK, anchor="mm")
    if len(sketch.stops) <= MAX_NAMED_STOPS:
        _name_stops(draw, sketch, at)


def _name_stops(draw: ImageDraw.ImageDraw, sketch: Sketch, at: Callable[[float, float], tuple[float, float]]) -> None:
    """The place beside each stop ("Sintra"), once per place, on the side with room for it."""
    font = _font(22)
    named: set[str] = set()
    for mark in sketch.stops:
        name = _drawable(mark.place or "", font)
        if not name or name in named:
            continue
        named.add(name)
        cx, cy = at(mark.x, mark.y)
        width = draw.textlength(name, font=font)
        x, anchor = (cx + 26, "lm") if cx + 26 + width <= MAP_BOX[2] - 12 else (cx - 26, "rm")
        draw.text((x, cy), name, font=font, fill=INK, anchor=anchor, stroke_width=4, stroke_fill=CARD)


def preview_png(view: JourneyView) -> bytes:
    """The preview as PNG bytes (a few tens of kilobytes; drawing it takes milliseconds)."""
    return _png(_preview(view))


def mail_picture(view: JourneyView) -> bytes:
    """The preview at half size for the reply mail (600 x 315, as wide as the mail's column), PNG.
    Drawn while the reply's transaction is open, so it is compressed at zlib's fastest level:
    compressing took half the picture's time at the default level, 11 % fewer bytes (about 2 KB)."""
    return _png(_preview(view).reduce(2), compress_level=1)  # a 2 x 2 box: a fifth of LANCZOS's time


def _png(image: Image.Image, *, compress_level: int | None = None) -> bytes:
    """PNG bytes: with the optimiser, or at ``compress_level`` when one is given."""
    buffer = io.BytesIO()
    if compress_level is None:
        image.save(buffer, "PNG", optimize=True)
    else:
        image.save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()


def _preview(view: JourneyView) -> Image.Image:
    image = Image.new("RGB", SIZE, PAPER)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MAP_BOX
    sketch = route_sketch(view, width=right - left, height=bottom - top, pad=48)
    with _drawing:
        _draw_route(draw, sketch)
        _draw_text(draw, view)
    return image
