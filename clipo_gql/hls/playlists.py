"""Playlists: the master playlist written from measured segments, and the tokens put into
every URI a player follows when access control is on.

ffmpeg's own master gives nominal bitrates; RFC 8216 wants `BANDWIDTH` to be the peak
segment bitrate and `AVERAGE-BANDWIDTH` the average, so both are measured from the segment
files and EXTINF durations of each media playlist. ffmpeg's master is still read for each
rung's `CODECS` (it knows the profile and level x264 chose).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipo_gql.hls.ladder import MASTER, MEDIA_PLAYLIST, Rung

FFMPEG_MASTER = "ffmpeg-master.m3u8"
_CODECS = re.compile(r'CODECS="([^"]+)"')
_URI_ATTRIBUTE = re.compile(r'URI="([^"]+)"')


@dataclass(frozen=True)
class Measured:
    rung: Rung
    peak_bps: int
    average_bps: int
    codecs: str
    segments: int
    durations: tuple[float, ...]


def measure(folder: Path, rung: Rung, codecs: str) -> Measured:
    """Peak and average bitrate of one rung, from its playlist and files (the init segment is
    counted with the first media segment, which a player fetches together)."""
    rung_dir = folder / rung.name
    playlist = rung_dir / MEDIA_PLAYLIST
    text = playlist.read_text()
    if "\n#EXT-X-TARGETDURATION:0\n" in text:
        # A clip shorter than half a second: ffmpeg writes 0, which players refuse.
        text = text.replace("\n#EXT-X-TARGETDURATION:0\n", "\n#EXT-X-TARGETDURATION:1\n")
        playlist.write_text(text)
    lines = text.splitlines()
    durations: list[float] = []
    sizes: list[int] = []
    pending: float | None = None
    init_bytes = 0
    for line in lines:
        if line.startswith("#EXTINF:"):
            pending = float(line[len("#EXTINF:") :].split(",", 1)[0])
        elif line.startswith("#EXT-X-MAP:"):
            uri = _URI_ATTRIBUTE.search(line)
            if uri:
                init_bytes = os.path.getsize(rung_dir / uri.group(1))
        elif line and not line.startswith("#") and pending is not None:
            durations.append(pending)
            sizes.append(os.path.getsize(rung_dir / line))
            pending = None
    if not durations:
        raise ValueError(f"{rung.name}: no segments")
    sizes[0] += init_bytes
    peak = max(
        size * 8 / max(duration, 0.001) for size, duration in zip(sizes, durations, strict=True)
    )
    average = sum(sizes) * 8 / max(sum(durations), 0.001)
    return Measured(rung, int(peak), int(average), codecs, len(durations), tuple(durations))


def codecs_by_rung(folder: Path, rungs: list[Rung]) -> dict[str, str]:
    """Each rung's CODECS from ffmpeg's master, in its order (one STREAM-INF per rung); a
    copied rung, for which ffmpeg writes none, from its init segment."""
    entries = (folder / FFMPEG_MASTER).read_text().split("#EXT-X-STREAM-INF:")[1:]
    if len(entries) != len(rungs):
        raise ValueError("ffmpeg's master playlist does not list every rung")
    found = {}
    for rung, entry in zip(rungs, entries, strict=True):
        codecs = _CODECS.search(entry.partition("\n")[0])
        found[rung.name] = codecs.group(1) if codecs else codecs_of_init(folder / rung.name)
    return found


def codecs_of_init(rung_dir: Path) -> str:
    """RFC 6381 CODECS of an fMP4 init segment: `avc1.PPCCLL` from its avcC box (profile,
    constraint flags, level), and AAC-LC if it has an audio track (we only make AAC-LC)."""
    uri = _URI_ATTRIBUTE.search((rung_dir / MEDIA_PLAYLIST).read_text())  # the EXT-X-MAP
    if uri is None:
        raise ValueError(f"{rung_dir.name}: no init segment")
    init = (rung_dir / uri.group(1)).read_bytes()
    at = init.find(b"avcC")
    if at < 0 or len(init) < at + 8:
        raise ValueError(f"{rung_dir.name}: no H.264 configuration in the init segment")
    codecs = f"avc1.{init[at + 5 : at + 8].hex()}"
    return f"{codecs},mp4a.40.2" if b"mp4a" in init else codecs


def master(measured: list[Measured], frame_rate: float | None) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for item in measured:
        attributes = [
            f"BANDWIDTH={item.peak_bps}",
            f"AVERAGE-BANDWIDTH={item.average_bps}",
            f"RESOLUTION={item.rung.width}x{item.rung.height}",
            f'CODECS="{item.codecs}"',
        ]
        if frame_rate:
            attributes.append(f"FRAME-RATE={frame_rate:.3f}")
        lines += [f"#EXT-X-STREAM-INF:{','.join(attributes)}", f"{item.rung.name}/{MEDIA_PLAYLIST}"]
    return "\n".join(lines) + "\n"


def write_master(folder: Path, rungs: list[Rung], frame_rate: float | None) -> list[Measured]:
    """Measure every rung, check they are aligned, write MASTER and drop ffmpeg's."""
    codecs = codecs_by_rung(folder, rungs)
    measured = [measure(folder, rung, codecs[rung.name]) for rung in rungs]
    first = measured[0].durations
    if any(item.durations != first for item in measured[1:]):
        # Forced keyframes make every rung cut at the same times; anything else is a bug
        # that players notice as stalls when they switch.
        raise ValueError("the rungs' segments are not aligned")
    (folder / MASTER).write_text(master(measured, frame_rate))
    (folder / FFMPEG_MASTER).unlink(missing_ok=True)
    return measured


def with_token(text: str, token: str) -> str:
    """A playlist (or the storyboard's WebVTT) whose every URI carries `?token=`: players
    fetch relative URIs without the query of the playlist's own URL."""
    suffix = f"token={token}"
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{_add_query(m.group(1), suffix)}"', line)
        elif line and not line.startswith("WEBVTT") and "-->" not in line:
            line = _add_query(line, suffix)
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _add_query(uri: str, query: str) -> str:
    path, hash_, fragment = uri.partition("#")
    joined = f"{path}{'&' if '?' in path else '?'}{query}"
    return f"{joined}{hash_}{fragment}"
