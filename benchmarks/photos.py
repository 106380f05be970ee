"""Waypost's photo work against baselines measured in the same run, as ratios.

    python benchmarks/photos.py            # full: several rounds, a few minutes
    python benchmarks/photos.py --quick    # CI: fewer photos and rounds, under a minute
    python benchmarks/photos.py --json out.json

Every comparison is interleaved (each photo goes through every contender, in a rotating
order, before the next photo) and reported as the best of N rounds, with the median
beside it: other processes on the machine slow the contenders down alike. Missed targets
are printed as MISS and never change the exit status; a crash does. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import photo_inputs
import PIL
import pillow_heif
from PIL import Image
from process_tree import CpuWatch

import waypost
from waypost.apps.journeys.imagepool import ImagePool, default_workers
from waypost.apps.journeys.images import (
    DISPLAY_JPEG,
    THUMBNAIL_JPEG,
    ImageError,
    ProcessedPhoto,
    encode_jpeg,
    process_photo,
)

HERE = Path(__file__).resolve().parent
DISPLAY_PX, THUMB_PX = 1600, 512  # process_photo's defaults, used by every contender
DISPLAY_QUALITY, THUMB_QUALITY = DISPLAY_JPEG["quality"], THUMBNAIL_JPEG["quality"]  # for ImageMagick too
MB = 1_000_000
BUSY_CPUS = 0.25  # other processes' load above which a section's timings are flagged
ONE_CORE = "one core"  # the pool section's baseline: process_photo in turn, no helper thread


@dataclass(frozen=True)
class Mode:
    name: str
    jpegs: int  # distinct 12 MP JPEGs timed per round
    heics: int
    rounds: int
    pool_batch: int  # photos per ImagePool.process call
    pool_rounds: int


MODES = {
    "full": Mode("full", jpegs=6, heics=3, rounds=5, pool_batch=16, pool_rounds=3),
    "quick": Mode("quick", jpegs=3, heics=1, rounds=2, pool_batch=8, pool_rounds=2),
}


@dataclass(frozen=True)
class Timing:
    best: float  # seconds per item: the mean over items of each item's fastest round
    median: float  # the same with each item's median round
    rounds: list[list[float]]  # every timing, by item then round


@dataclass
class Target:
    name: str
    ratio: float | None  # None: the baseline could not run here
    limit: float
    at_least: bool  # True: ratio >= limit passes; False: ratio <= limit passes
    note: str = ""
    busy: float | None = None  # CPUs other processes kept busy while this was measured

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "SKIP"
        passed = self.ratio >= self.limit if self.at_least else self.ratio <= self.limit
        return "PASS" if passed else "MISS"

    def line(self) -> str:
        want = f"{'>=' if self.at_least else '<='} {self.limit:g}x"
        figure = "   --  " if self.ratio is None else f"{self.ratio:6.2f}x"
        busy = f"(other processes kept {self.busy:.1f} CPUs busy)" if (self.busy or 0) > BUSY_CPUS else ""
        return f"  {self.verdict:4}  {self.name:64} {figure}  want {want:8} {self.note} {busy}".rstrip()


@dataclass
class Report:
    mode: str
    machine: dict[str, Any]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    _last_section: float = field(default_factory=time.perf_counter, repr=False)
    _cpu: CpuWatch = field(default_factory=CpuWatch, repr=False)

    def section(self, title: str, figures: dict[str, Any], lines: Sequence[str], *, timed: bool = True) -> float:
        """Print a section and return how many CPUs other processes kept busy meanwhile; both
        that and the time taken run from the previous section's end. Call it while any pool
        of the section still runs: a worker's CPU time is lost to us once it exits."""
        seconds, busy = time.perf_counter() - self._last_section, self._cpu.others()
        self._last_section = time.perf_counter()
        self._cpu.start()
        self.sections[title] = {**figures, "seconds_taken": seconds, "other_processes_cpus": busy}
        load = f"; other processes kept {busy:.2f} CPUs busy" if timed else ""
        print(f"\n{title}  [{seconds:.0f} s{load}]")
        for line in lines:
            print(f"  {line}")
        return busy

    def start_sections(self) -> None:
        self._last_section = time.perf_counter()
        self._cpu.start()

    def to_json(self) -> dict[str, Any]:
        targets = [{**asdict(target), "verdict": target.verdict} for target in self.targets]
        return {"mode": self.mode, "machine": self.machine, "sections": self.sections, "targets": targets}


def race(contenders: dict[str, Callable[[Any], object]], items: Sequence[Any], rounds: int, *,
         warm_up: bool = True) -> dict[str, Timing]:
    """Time every contender on every item, interleaved; first one untimed run each unless told not to."""
    for run in contenders.values() if warm_up else ():
        run(items[0])
    names = list(contenders)
    seconds: dict[str, list[list[float]]] = {name: [[] for _ in items] for name in names}
    for round_index in range(rounds):
        for index, item in enumerate(items):
            shift = (round_index + index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                contenders[name](item)
                seconds[name][index].append(time.perf_counter() - started)
    return {name: _timing(per_item) for name, per_item in seconds.items()}


def _timing(per_item: list[list[float]]) -> Timing:
    return Timing(best=statistics.fmean(min(times) for times in per_item),
                  median=statistics.fmean(statistics.median(times) for times in per_item), rounds=per_item)


def fitted(size: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = min(1.0, longest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def waypost_photo(path: Path) -> ProcessedPhoto:
    return process_photo(path.read_bytes(), thumb_px=THUMB_PX, display_px=DISPLAY_PX)


def waypost_p3_photo(path: Path) -> ProcessedPhoto:
    """The same photo tagged Display P3: process_photo converts its colours to sRGB."""
    return waypost_photo(photo_inputs.p3_twin(path))


def pillow_full_decode(path: Path) -> tuple[bytes, bytes]:
    """The obvious way: decode every pixel, then shrink with LANCZOS (the thumbnail from the
    display picture, as process_photo does). Both JPEGs are written by process_photo's own
    encoder, so only the decode and the resizing differ and the baseline follows its settings."""
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()
        display = image.resize(fitted(image.size, DISPLAY_PX), Image.Resampling.LANCZOS)
    thumbnail = display.resize(fitted(display.size, THUMB_PX), Image.Resampling.LANCZOS)
    return encode_jpeg(display, **DISPLAY_JPEG), encode_jpeg(thumbnail, **THUMBNAIL_JPEG)


def dct_scaled_decode(path: Path) -> Image.Image:
    """The floor: read the file and let libjpeg decode at the largest 1/2, 1/4 or 1/8
    scale still covering the display size. The draft box is the fitted display size:
    a (1600, 1600) box would not scale a 4:3 picture at all, as both sides must cover it."""
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.draft("RGB", fitted(image.size, DISPLAY_PX))
        image.load()
        return image


def heif_decode(path: Path) -> Image.Image:
    """pillow-heif's bare decode to a Pillow image: the floor for a HEIC."""
    return pillow_heif.open_heif(path.read_bytes()).to_pillow()


class ImageMagick:
    """``convert`` (or IM7's ``magick``) making both JPEGs in one invocation per photo."""

    def __init__(self, command: str, version: str, scratch: Path) -> None:
        self.command, self.version, self.scratch = command, version, scratch

    @classmethod
    def find(cls, scratch: Path) -> ImageMagick | str:
        """The installed ImageMagick, or why there is none to measure."""
        for command in _imagemagick_candidates():
            version = _imagemagick_version(command)
            if version:
                found = cls(command, version, scratch)
                problem = found.probe()
                return found if problem is None else f"{command} failed: {problem}"
        return "not installed, skipped"

    def __call__(self, path: Path) -> None:
        subprocess.run(self.arguments(path), check=True, capture_output=True)

    def arguments(self, path: Path) -> list[str]:
        display, thumbnail = self.scratch / "display.jpg", self.scratch / "thumb.jpg"
        return [self.command, str(path), "-auto-orient", "-strip",
                "-resize", f"{DISPLAY_PX}x{DISPLAY_PX}>", "-quality", str(DISPLAY_QUALITY), "-write", str(display),
                "-resize", f"{THUMB_PX}x{THUMB_PX}>", "-quality", str(THUMB_QUALITY), str(thumbnail)]

    def probe(self) -> str | None:
        """None when a photo converts; otherwise ImageMagick's complaint (a policy.xml may forbid JPEG)."""
        sample = photo_inputs.phone_jpegs(1)[0]
        done = subprocess.run(self.arguments(sample), capture_output=True, text=True)
        if done.returncode:
            return done.stderr.strip() or f"exit status {done.returncode}"
        with Image.open(self.scratch / "display.jpg") as display:
            return None if max(display.size) == DISPLAY_PX else f"made a {display.size} display picture"


def _imagemagick_candidates() -> list[str]:
    """Every ``magick`` and ``convert`` on PATH, real executables before scripts: a wrapper
    script that forwards to ImageMagick would add its own start-up to every call."""
    found = [shutil.which(name, path=folder) for name in ("magick", "convert") for folder in os.get_exec_path()]
    unique = list(dict.fromkeys(path for path in found if path))
    return sorted(unique, key=_is_script)


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return True


def _imagemagick_version(command: str) -> str | None:
    try:
        done = subprocess.run([command, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = done.stdout.splitlines()[0] if done.stdout else ""
    return first.removeprefix("Version: ").split(" https:")[0] if "ImageMagick" in first else None


def machine_facts(imagemagick: ImageMagick | str) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(), "usable_cpus": usable, "default_workers": default_workers(),
        "load_average": os.getloadavg(), "python": platform.python_version(), "pillow": PIL.__version__,
        "pillow_heif": pillow_heif.__version__, "libheif": pillow_heif.libheif_version(),
        "waypost_revision": git_revision(), "waypost_sources": source_fingerprint(),
        "imagemagick": imagemagick.version if isinstance(imagemagick, ImageMagick) else imagemagick,
    }


def source_fingerprint() -> str:
    """A digest of every waypost module as it is on disk now. Pool workers import the code
    when they start, so an edit during a run would have them time other code than this process."""
    digest = hashlib.sha256()
    for path in sorted(Path(waypost.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_revision() -> str:
    """The checked-out commit, with "+changes" when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=HERE.parent, capture_output=True,
                               text=True)
    except OSError:
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def print_header(report: Report) -> None:
    facts = report.machine
    print(f"Waypost photo benchmarks ({report.mode})")
    print(f"  CPUs: {facts['cpu_count']} ({facts['usable_cpus']} usable, default_workers()={facts['default_workers']})"
          f"   load average: {' '.join(f'{load:.2f}' for load in facts['load_average'])}")
    print(f"  Python {facts['python']}   Pillow {facts['pillow']}   pillow-heif {facts['pillow_heif']}"
          f" (libheif {facts['libheif']})   ImageMagick: {facts['imagemagick']}")
    print(f"  waypost: {facts['waypost_revision']} (sources {facts['waypost_sources']})")


def prepare_inputs(mode: Mode) -> str:
    """Generate (or find cached) every input up front, so no timing pays for it."""
    started = time.perf_counter()
    photo_inputs.phone_jpegs(mode.jpegs)
    photo_inputs.phone_p3_jpegs(mode.jpegs)
    photo_inputs.phone_heics(mode.heics)
    photo_inputs.photo_mail("ann@example.org", "journeys@waypost.test")
    return f"ready in {time.perf_counter() - started:.1f} s, cached under {photo_inputs.CACHE}"


def describe(paths: Sequence[Path]) -> str:
    sizes = [path.stat().st_size / MB for path in paths]
    with Image.open(paths[0]) as first:
        (width, height), kind = first.size, first.format
    return f"{len(paths)} x {width}x{height} {kind}, {min(sizes):.1f}-{max(sizes):.1f} MB"


def per_photo_lines(timings: dict[str, Timing], reference: str) -> list[str]:
    lines = []
    for name, timing in timings.items():
        ratio = timing.best / timings[reference].best
        relative = "" if name == reference else f"   {ratio:5.2f}x the time of {reference}"
        lines.append(f"{name:36} {timing.best * 1000:8.1f} ms  (median {timing.median * 1000:7.1f}){relative}")
    return lines


def bench_jpeg(report: Report, mode: Mode, imagemagick: ImageMagick | str) -> None:
    photos = photo_inputs.phone_jpegs(mode.jpegs)
    contenders: dict[str, Callable[[Any], object]] = {
        "process_photo": waypost_photo,
        "process_photo, Display P3 twin": waypost_p3_photo,
        "Pillow full decode + 2 resizes": pillow_full_decode,
        "floor: read + DCT-scaled decode": dct_scaled_decode,
    }
    if isinstance(imagemagick, ImageMagick):
        contenders["ImageMagick convert"] = imagemagick
    timings = race(contenders, photos, mode.rounds)
    lines = [f"inputs: {describe(photos)}; best of {mode.rounds} rounds per photo",
             *per_photo_lines(timings, "process_photo")]
    if not isinstance(imagemagick, ImageMagick):
        lines.append(f"{'ImageMagick convert':36} {imagemagick}")
    busy = report.section("1. JPEG 12 MP, time per photo", {name: asdict(t) for name, t in timings.items()}, lines)
    ours = timings["process_photo"].best
    magick = timings.get("ImageMagick convert")
    report.targets += [
        Target("JPEG: Pillow full decode + resizes / process_photo",
               timings["Pillow full decode + 2 resizes"].best / ours, 2.0, at_least=True, busy=busy),
        Target("JPEG: ImageMagick convert / process_photo", None if magick is None else magick.best / ours, 6.0,
               at_least=True, note="" if magick else f"(ImageMagick {imagemagick})", busy=busy),
        Target("JPEG: process_photo / floor (read + DCT-scaled decode)",
               ours / timings["floor: read + DCT-scaled decode"].best, 1.3, at_least=False, busy=busy),
        Target("JPEG, Display P3: process_photo / floor (of the untagged twin)",
               timings["process_photo, Display P3 twin"].best / timings["floor: read + DCT-scaled decode"].best,
               1.3, at_least=False, busy=busy),
    ]


def bench_heic(report: Report, mode: Mode) -> None:
    photos = photo_inputs.phone_heics(mode.heics)
    refusal = _refusal(photos[0])
    if refusal is not None:
        report.section("2. HEIC 12 MP, time per photo", {"refused": refusal}, [f"process_photo refused: {refusal}"])
        report.targets.append(Target("HEIC: process_photo / pillow-heif decode", None, 1.2, at_least=False,
                                     note=f"(process_photo refused the HEIC: {refusal})"))
        return
    timings = race({"process_photo": waypost_photo, "pillow-heif open_heif().to_pillow()": heif_decode},
                   photos, mode.rounds)
    lines = [f"inputs: {describe(photos)}; best of {mode.rounds} rounds per photo",
             *per_photo_lines(timings, "process_photo")]
    busy = report.section("2. HEIC 12 MP, time per photo", {name: asdict(t) for name, t in timings.items()}, lines)
    ratio = timings["process_photo"].best / timings["pillow-heif open_heif().to_pillow()"].best
    report.targets.append(Target("HEIC: process_photo / pillow-heif decode", ratio, 1.2, at_least=False, busy=busy))


def _refusal(path: Path) -> str | None:
    try:
        waypost_photo(path)
    except ImageError as err:
        return str(err)
    return None


def bench_pool(report: Report, mode: Mode) -> None:
    photos = photo_inputs.phone_jpegs(mode.jpegs)
    batch = [photos[index % len(photos)].read_bytes() for index in range(mode.pool_batch)]
    pools = {workers: ImagePool(workers) for workers in sorted({1, 2, default_workers()})}
    try:
        for pool in pools.values():  # start the workers (fork server, imports) before timing
            _check_all_processed(pool.process(batch[: 2 * pool.workers]))
        runs = {ONE_CORE: _one_core_run(batch),
                **{f"ImagePool({workers})": _pool_run(pool, batch) for workers, pool in pools.items()}}
        timings = race(runs, [batch], mode.pool_rounds, warm_up=False)
        busy = report.section("3. Parallel: one batch through ImagePool", {name: asdict(t) for name, t in
                              timings.items()}, _pool_lines(timings, len(batch), mode.pool_rounds))
    finally:
        for pool in pools.values():
            pool.close()
    single = timings[ONE_CORE].best
    report.targets.append(Target("Pool: ImagePool(2) throughput / one core",
                                 single / timings["ImagePool(2)"].best, 1.7, at_least=True, busy=busy))
    report.targets.append(Target(f"Pool: ImagePool(default_workers()={default_workers()}) / one core",
                                 single / timings[f"ImagePool({default_workers()})"].best,
                                 1.7 if default_workers() >= 2 else 1.0, at_least=True, busy=busy))


def _pool_lines(timings: dict[str, Timing], photos: int, rounds: int) -> list[str]:
    single = timings[ONE_CORE].best
    lines = [f"batch: {photos} x 12 MP JPEG; best of {rounds} rounds; default_workers()={default_workers()}"]
    for name, timing in timings.items():
        lines.append(f"{name:14} {timing.best:7.2f} s  (median {timing.median:6.2f})  "
                     f"{photos / timing.best:5.1f} photos/s  {single / timing.best:5.2f}x one core")
    return lines


def _one_core_run(batch: list[bytes]) -> Callable[[object], None]:
    """The baseline of the pool's scaling: the photos one after another in this process with no
    helper thread (``ImagePool(1)`` lends each photo the second core through it)."""
    def run(_: object) -> None:
        _check_all_processed([process_photo(data, thumb_px=THUMB_PX, display_px=DISPLAY_PX, spare_core=False)
                              for data in batch])

    return run


def _pool_run(pool: ImagePool, batch: list[bytes]) -> Callable[[object], None]:
    def run(_: object) -> None:
        _check_all_processed(pool.process(batch, thumb_px=THUMB_PX, display_px=DISPLAY_PX))

    return run


def _check_all_processed(results: Sequence[object]) -> None:
    refused = [result for result in results if not isinstance(result, ProcessedPhoto)]
    if refused:
        raise RuntimeError(f"ImagePool refused {len(refused)} of {len(results)} photos: {refused[0]}")


def bench_memory(report: Report) -> None:
    mail = photo_inputs.photo_mail("ann@example.org", "journeys@waypost.test")
    settings = {"image_workers=1": 1, f"image_workers=0 (={default_workers()})": 0}
    # Both at once: each measures its own process tree, and CPU contention does not change RSS.
    children = {label: _start_memory_child(mail, workers) for label, workers in settings.items()}
    figures = {label: _memory_figures(child) for label, child in children.items()}
    lines = [f"mail: {mail.stat().st_size / MB:.1f} MB raw, {photo_inputs.MAIL_PHOTOS} x 12 MP JPEG of ~0.75 MB;"
             " peak RSS over a warmed-up process, by phase (parse / photos / store)"]
    for label, measured in figures.items():
        line, targets = _memory_verdicts(label, measured)
        lines.append(line)
        report.targets += targets
    title = f"4. Memory: one {photo_inputs.MAIL_PHOTOS}-photo mail through the inbound path"
    report.section(title, figures, lines, timed=False)


def _memory_verdicts(label: str, measured: dict[str, Any]) -> tuple[str, list[Target]]:
    parent, workers = _growth(measured)
    baseline, size = measured["baseline_kib"] * 1024, measured["mail_bytes"]
    phases = " / ".join(f"+{(phase['peak_kib'] * 1024 - baseline) / MB:.0f}" for phase in measured["phases"])
    line = (f"{label}: worker process +{parent / MB:.0f} MB ({phases} MB) over a {baseline / MB:.0f} MB baseline;"
            f" pool workers +{workers / MB:.0f} MB")
    targets = [Target(f"Memory, {label}: worker process growth / mail size", parent / size, 3.0,
                      at_least=False, note=f"(+{parent / MB:.0f} MB)")]
    if measured["children"]:
        targets.append(Target(f"Memory, {label}: + pool workers' growth / mail size", (parent + workers) / size,
                              3.0, at_least=False, note=f"(+{(parent + workers) / MB:.0f} MB)"))
    return line, targets


def _start_memory_child(mail: Path, workers: int) -> subprocess.Popen[str]:
    command = [sys.executable, str(HERE / "photo_memory.py"), str(mail), "--workers", str(workers)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _memory_figures(child: subprocess.Popen[str]) -> dict[str, Any]:
    output, _ = child.communicate()
    if child.returncode:
        raise RuntimeError(f"{' '.join(map(str, child.args))} exited with status {child.returncode}")
    measured = json.loads(output.splitlines()[-1])
    if measured["status"] != "processed" or measured["photos_published"] != photo_inputs.MAIL_PHOTOS:
        raise RuntimeError(f"the mail was not fully processed: {measured['status']}, "
                           f"{measured['photos_published']} of {photo_inputs.MAIL_PHOTOS} photos published")
    return measured


def _growth(measured: dict[str, Any]) -> tuple[int, int]:
    """Bytes of peak RSS over the warmed-up baseline: this process, and its pool workers together
    (each worker's own peak, summed: an upper bound, their peaks need not coincide)."""
    parent = (measured["peak_kib"] - measured["baseline_kib"]) * 1024
    children = sum(max(0, child["peak_kib"] - child["baseline_kib"]) for child in measured["children"]) * 1024
    return parent, children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and rounds (CI), under a minute")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to PATH")
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as scratch:
        made = prepare_inputs(mode)
        imagemagick = ImageMagick.find(Path(scratch))
        report = Report(mode.name, machine_facts(imagemagick))
        print_header(report)
        print(f"  inputs: {made}")
        report.start_sections()
        bench_jpeg(report, mode, imagemagick)
        bench_heic(report, mode)
        bench_pool(report, mode)
        bench_memory(report)
    print("\nTargets")
    for target in report.targets:
        print(target.line())
    if source_fingerprint() != report.machine["waypost_sources"]:
        print("\nWARNING: waypost's sources changed during this run; its figures mix code versions. Run it again.")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
