"""The encoder arguments, in one place: the MP4 transcode and every rung of the HLS ladder.

Software x264 and AAC only (no hardware encoder on the machines we run on); a hardware
encoder would replace these functions and nothing else.
"""

from __future__ import annotations

X264_PRESET = "veryfast"
X264_CRF = 23
AAC_BITRATE = "128k"


def h264(stream: str = "v") -> list[str]:
    """8-bit 4:2:0 H.264 at a constant quality, for `-c:<stream>`."""
    return [
        f"-c:{stream}", "libx264", f"-preset:{stream}", X264_PRESET,
        f"-crf:{stream}", str(X264_CRF), f"-pix_fmt:{stream}", "yuv420p",
    ]  # fmt: skip


def aac(stream: str = "a") -> list[str]:
    return [f"-c:{stream}", "aac", f"-b:{stream}", AAC_BITRATE]
