"""The chaos soak (`make chaos`, about 8 minutes): compose.yaml's topology under a steady load
while a seeded schedule kills its processes. Not part of ./scripts/test.

Load: 300 uploads of mixed media (remux, transcode, and a truncated file that must end FAILED)
over both API processes, URL submissions to a file server on loopback (one of them a 404),
and 500 subscribers spread over both APIs that reconnect when their socket drops. A client
whose request fails (its API process died, the database is down) tries again on the other API.

Chaos: every ~20 s one app process (api1, api2, worker1, worker2) is SIGKILLed and started again,
as compose's `restart: unless-stopped` would; Redis and FerretDB are each SIGKILLed once and
started again a few seconds later. A process that exits by itself is started again too, and
counted.

At the end, with nothing killed any more: every video is DONE (FAILED where its input is bad)
with one set of outputs, no file in MEDIA_DIR belongs to no video, every subscriber saw its
video's final state, and each process's RSS and open files are back near their first start.
The report goes to tests/topology/CHAOS.md (or --report); the exit status says whether
anything was lost.

    ./scripts/chaos [--seconds 480] [--seed 11] [--report PATH]   (make chaos)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.clips import make_clip, make_clips
from tests.hardening.test_soak import fd_kinds, rss_kib
from tests.topology.clients import OUTPUTS, Watcher, database, gql, protocol_for, upload
from tests.topology.topology import ROOT, Process, Topology, running

UPLOADS = 300
SUBSCRIBERS = 500
URL_SUBMISSIONS = 30
KILL_EVERY = 20.0


def is_url(i: int) -> bool:
    """Whether request i submits a URL (one in eleven) rather than uploading."""
    return i % 11 == 5 and i // 11 < URL_SUBMISSIONS


def is_not_a_video(i: int) -> bool:
    """Whether upload i is a text file, refused by design (nothing stored)."""
    return not is_url(i) and i % 37 == 0


REFUSED_BY_DESIGN = sum(map(is_not_a_video, range(UPLOADS + URL_SUBMISSIONS)))
SUBMIT_URL = "mutation($url: String!) { submitVideo(url: $url) { id status } }"


@dataclass
class Event:
    at: float
    action: str
    target: str
    note: str = ""


@dataclass
class Submitted:
    video_id: str
    expect: str  # DONE or FAILED
    kind: str  # what was sent


@dataclass
class Run:
    seed: int
    seconds: float
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    submitted: list[Submitted] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    gave_up: list[str] = field(default_factory=list)
    self_exits: Counter[str] = field(default_factory=Counter)
    watchers: list[Watcher] = field(default_factory=list)
    baseline: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.started

    def log(self, action: str, target: str, note: str = "") -> None:
        event = Event(self.now(), action, target, note)
        self.events.append(event)
        print(f"[{event.at:6.1f}s] {action} {target} {note}", flush=True)


def usage(process: Process) -> tuple[int, int, int]:
    """RSS (KiB), open files that are not sockets, and sockets."""
    kinds = fd_kinds(process.pid)
    sockets = sum(1 for kind in kinds if kind.startswith("socket:"))
    return rss_kib(process.pid), len(kinds) - sockets, sockets


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def file_server(folder: Path) -> Any:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Chaos:
    def __init__(
        self, topology: Topology, run: Run, clips: Any, long_clip: Path, files_port: int
    ) -> None:
        self.topo = topology
        self.long_clip = long_clip
        self.run = run
        self.rng = random.Random(run.seed)
        self.clips = clips
        self.files = f"http://127.0.0.1:{files_port}"
        self.restarting: set[str] = set()
        self.background: set[asyncio.Task[None]] = set()
        self.load_done = asyncio.Event()
        self.chaos_done = asyncio.Event()

    # --- processes ---------------------------------------------------------------------
    async def start(self, process: Process) -> None:
        """Start it, again and again while it exits during start-up (an API process started
        while Redis or the database is down does), as compose would."""
        self.restarting.add(process.name)
        try:
            for _ in range(60):
                try:
                    await asyncio.to_thread(process.start)
                    return
                except AssertionError as exc:
                    self.run.log("start failed, again", process.name, str(exc).splitlines()[0])
                    process.kill()
                    await asyncio.sleep(1)
            raise RuntimeError(f"{process.name} would not start")
        finally:
            self.restarting.discard(process.name)

    async def start_logged(self, process: Process) -> None:
        await self.start(process)
        self.run.log("started", process.name)

    async def supervise(self) -> None:
        """Start again what exited by itself, as `restart: unless-stopped` does."""
        while not self.load_done.is_set() or self.restarting:
            for process in self.topo.everything:
                if not process.alive and process.name not in self.restarting:
                    code = process.proc.returncode if process.proc else None
                    self.run.self_exits[process.name] += 1
                    self.run.log("exited by itself, starting", process.name, f"(code {code})")
                    self.restarting.add(process.name)
                    task = asyncio.create_task(self.start_logged(process))
                    self.background.add(task)
                    task.add_done_callback(self.background.discard)
            await asyncio.sleep(0.5)

    async def kill(self, process: Process, down_seconds: float = 0.0) -> None:
        self.restarting.add(process.name)
        process.kill()
        self.run.log("SIGKILL", process.name, f"down {down_seconds:.0f} s" if down_seconds else "")
        await asyncio.sleep(down_seconds)
        await self.start_logged(process)

    async def schedule(self) -> None:
        seconds = self.run.seconds
        chaos_until = seconds * 0.85
        specials = {"redis": seconds * 0.3, "mongo": seconds * 0.6}
        t = self.rng.uniform(10, 20)
        while t < chaos_until:
            await asyncio.sleep(max(0.0, t - self.run.now()))
            for name, at in list(specials.items()):
                if at <= t:
                    process = self.topo.redis if name == "redis" else self.topo.mongo
                    await self.kill(process, down_seconds=self.rng.uniform(3, 6))
                    del specials[name]
            victim = self.rng.choice(self.topo.apps)
            if victim.name not in self.restarting:
                await self.kill(victim)
            t += self.rng.uniform(KILL_EVERY * 0.75, KILL_EVERY * 1.25)
        self.run.log("chaos over", "-")
        self.chaos_done.set()

    # --- load ----------------------------------------------------------------------------
    def inputs(self) -> list[tuple[str, Path, str]]:
        c = self.clips
        return [
            ("remux h264/aac", c.h264_aac, "DONE"),
            ("transcode vp9/opus", c.vp9_opus, "DONE"),
            ("transcode odd size", c.odd_size, "DONE"),
            ("remux no audio", c.h264_noaudio, "DONE"),
            ("remux rotated", c.rotated, "DONE"),
            ("truncated (bad input)", c.truncated, "FAILED"),
            # Seconds of libx264: in flight when processes die, with subscribers waiting.
            ("transcode long", self.long_clip, "DONE"),
        ]

    async def one_request(self, i: int, send: Any, kind: str, expect: str) -> None:
        """Send until an API answers with an id or a refusal by design; the other API next."""
        for attempt in range(12):
            api = self.apis[(i + attempt) % 2]
            try:
                body = await send(api)
            except (httpx.HTTPError, OSError) as exc:
                self.run.refusals[f"connection failed ({type(exc).__name__})"] += 1
                await asyncio.sleep(0.5 + attempt)
                continue
            errors = body.get("errors")
            if not errors:
                video = next(iter(body["data"].values()))
                self.run.submitted.append(Submitted(video["id"], expect, kind))
                self.subscribe(len(self.run.submitted) - 1, video["id"])
                return
            code = errors[0].get("extensions", {}).get("code")
            self.run.refusals[f"{code}: {errors[0]['message']}"] += 1
            if code == "UNSUPPORTED_MEDIA":
                return  # refused by design: nothing stored, nothing to watch
            await asyncio.sleep(0.5 + attempt)
        self.run.gave_up.append(kind)

    def subscribe(self, n: int, video_id: str) -> None:
        # SUBSCRIBERS over the videos: two for each of the first ones, then one, each on a
        # random API process.
        doubled = SUBSCRIBERS - (UPLOADS + URL_SUBMISSIONS - REFUSED_BY_DESIGN)
        for k in range(2 if n < doubled else 1):
            if len(self.run.watchers) >= SUBSCRIBERS:
                return
            url = self.topo.ws_url(self.rng.randrange(2))
            watcher = Watcher(
                url, video_id, protocol_for(n + k), authorization=self.topo.authorization
            )
            self.run.watchers.append(watcher)
            self.watching.append(asyncio.create_task(watcher.run(self.run.seconds + 600)))

    async def load(self) -> None:
        self.apis = [
            httpx.AsyncClient(base_url=u, timeout=30, headers=self.topo.headers())
            for u in self.topo.api_urls
        ]
        self.watching: list[asyncio.Task[None]] = []
        inputs = self.inputs()
        total = UPLOADS + URL_SUBMISSIONS
        spread = self.run.seconds * 0.8
        requests = []
        try:
            for i in range(total):
                await asyncio.sleep(max(0.0, spread * i / total - self.run.now()))
                if is_url(i):
                    name, expect = ("clip.mp4", "DONE") if i % 3 else ("missing.mp4", "FAILED")
                    if name == "clip.mp4":
                        name = self.rng.choice(["h264_aac.mp4", "vp9_opus.webm", "rotated.mp4"])
                    url = f"{self.files}/{name}"

                    async def send_url(api: httpx.AsyncClient, url: str = url) -> dict[str, Any]:
                        return await gql(api, SUBMIT_URL, url=url)

                    kind = "URL (404, bad input)" if expect == "FAILED" else "URL"
                    requests.append(
                        asyncio.create_task(self.one_request(i, send_url, kind, expect))
                    )
                else:
                    kind, path, expect = inputs[i % len(inputs)]
                    if is_not_a_video(i):
                        kind, path, expect = ("not a video (refused)", self.clips.not_video, "-")

                    async def send_file(
                        api: httpx.AsyncClient, path: Path = path, i: int = i
                    ) -> dict[str, Any]:
                        return await upload(api, path, f"chaos-{i}{path.suffix}")

                    requests.append(
                        asyncio.create_task(self.one_request(i, send_file, kind, expect))
                    )
            await asyncio.gather(*requests)
            self.run.log("load sent", "-", f"{len(self.run.submitted)} videos accepted")
            await self.chaos_done.wait()
            await asyncio.wait_for(asyncio.gather(*self.watching, return_exceptions=True), 600)
            self.run.log("every subscriber finished", "-")
        finally:
            self.load_done.set()
            for api in self.apis:
                await api.aclose()


async def wait_all_final(topo: Topology, seconds: float) -> list[dict[str, Any]]:
    client, videos = database(topo.mongodb_url, topo.database)
    try:
        deadline = time.monotonic() + seconds
        while True:
            documents = [d async for d in videos.find({})]
            if all(d["status"] in ("DONE", "FAILED") for d in documents):
                return documents
            if time.monotonic() > deadline:
                return documents
            await asyncio.sleep(1)
    finally:
        client.close()


def disk_problems(topo: Topology, documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    by_id = {str(d["_id"]): d for d in documents}
    videos = topo.media / "videos"
    for folder in sorted(videos.iterdir()):
        document = by_id.get(folder.name)
        names = sorted(p.name for p in folder.iterdir())
        if document is None:
            problems.append(f"orphan folder {folder.name}: {names}")
        elif document["status"] == "DONE" and names != OUTPUTS:
            problems.append(f"DONE video {folder.name} has {names}")
        elif document["status"] == "FAILED" and set(names) - {"original", "record.json"}:
            problems.append(f"FAILED video {folder.name} has {names}")
    for video_id, document in by_id.items():
        if document["status"] == "DONE" and not (videos / video_id).is_dir():
            problems.append(f"DONE video {video_id} has no files")
    for path in (topo.media / "incoming").rglob("*"):
        if path.is_file() and path.suffix != ".lock":
            problems.append(f"upload left in incoming: {path.relative_to(topo.media)}")
    return problems


def report(run: Run, topo: Topology, documents: list[dict[str, Any]], problems: list[str],
           usage_end: dict[str, tuple[int, int, int]], elapsed: float) -> str:  # fmt: skip
    statuses = Counter(d["status"] for d in documents)
    acknowledged = {s.video_id for s in run.submitted}
    unacknowledged = [d for d in documents if str(d["_id"]) not in acknowledged]
    kinds = Counter(s.kind for s in run.submitted)
    reconnects = sum(max(0, w.connections - 1) for w in run.watchers)
    saw_final = sum(1 for w in run.watchers if w.final is not None)
    kills = Counter(e.target for e in run.events if e.action == "SIGKILL")
    lines = [
        "# Chaos soak: the compose topology under load while its processes are killed",
        "",
        "Written by `make chaos` (`tests/topology/chaos.py`) from its last run; see that file for",
        "what it does. Two `clipo-gql serve`, two `clipo-gql worker`, FerretDB, Redis (append-only",
        "file, as compose.yaml runs it) and one shared media folder, on this machine.",
        "",
        f"- seed {run.seed}, {run.seconds:.0f} s of load and chaos, {elapsed:.0f} s in all",
        f"- verdict: **{'nothing lost' if not problems else f'{len(problems)} problems'}**",
        "",
        "## Load",
        "",
        "| what | count |",
        "| --- | --- |",
        *(f"| accepted: {kind} | {n} |" for kind, n in sorted(kinds.items())),
        f"| videos stored | {len(documents)} |",
        f"| stored, never acknowledged (the API died before answering) | {len(unacknowledged)} |",
        f"| requests given up after 12 tries | {len(run.gave_up)} |",
        f"| subscribers | {len(run.watchers)} |",
        f"| subscribers that saw their video's final state | {saw_final} |",
        f"| reconnections of subscribers | {reconnects} |",
        "",
        "Refused requests (each was sent again, except by design):",
        "",
        "| answer | times |",
        "| --- | --- |",
        *(f"| {reason[:120]} | {n} |" for reason, n in run.refusals.most_common()),
        "",
        "## Outcome",
        "",
        "| status | videos |",
        "| --- | --- |",
        *(f"| {status} | {n} |" for status, n in sorted(statuses.items())),
        "",
        "Problems (lost, stuck, wrong outcome, orphan files, subscribers without a final state):",
        "",
        *([f"- {p}" for p in problems] or ["- none"]),
        "",
        "## Processes",
        "",
        "RSS, open files (not sockets) and sockets: at the process's first start → at the end.",
        "The sockets of mongo and redis are the app processes' pooled connections.",
        "",
        "| process | SIGKILLed | exited by itself | starts | RSS (MiB) | files | sockets |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for process in topo.everything:
        rss0, files0, sockets0 = run.baseline.get(process.name, (0, 0, 0))
        rss1, files1, sockets1 = usage_end.get(process.name, (0, 0, 0))
        lines.append(
            f"| {process.name} | {kills[process.name]} | {run.self_exits[process.name]} | "
            f"{process.starts} | {rss0 / 1024:.0f} → {rss1 / 1024:.0f} | {files0} → {files1} | "
            f"{sockets0} → {sockets1} |"
        )
    lines += [
        "",
        "## Schedule",
        "",
        "| at (s) | what | process | note |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {e.at:.1f} | {e.action} | {e.target} | {e.note[:100]} |" for e in run.events]
    return "\n".join(lines) + "\n"


def usage_problems(
    run: Run, topo: Topology, usage_end: dict[str, tuple[int, int, int]]
) -> list[str]:
    problems = []
    apps = {p.name for p in topo.apps}
    for name, (rss1, files1, sockets1) in usage_end.items():
        rss0, files0, sockets0 = run.baseline[name]
        # Back near the start: caches and pools warm up, a leak grows with the load.
        if rss1 > rss0 * 1.6 + 40 * 1024:
            problems.append(f"{name}: RSS {rss0 // 1024} → {rss1 // 1024} MiB")
        if files1 > files0 + 15:
            problems.append(f"{name}: open files {files0} → {files1}")
        # An app's sockets: its clients' and its pools'. (A server's are the apps' pools.)
        if name in apps and sockets1 > sockets0 + 25:
            problems.append(f"{name}: sockets {sockets0} → {sockets1}")
    return problems


async def main_async(seconds: float, seed: int, report_path: Path) -> int:
    run = Run(seed=seed, seconds=seconds)
    with tempfile.TemporaryDirectory(prefix="clipo-chaos-") as tmp:
        folder = Path(tmp)
        clips = make_clips(folder / "clips")
        long_clip = make_clip(
            folder / "long.mp4", seconds=8, size="640x360", pix_fmt="yuv444p",
            extra=["-preset", "ultrafast"],
        )  # fmt: skip
        with file_server(clips.dir) as port:
            extra = {
                "URL_FETCH_ALLOWED_PORTS": str(port),
                # The sweeper and the requeue pass run every 10 s, and orphan folders go
                # after 30 s: the run's end can check that nothing was left behind.
                "REQUEUE_INTERVAL_SECONDS": "10",
                "ORPHAN_GRACE_SECONDS": "30",
            }
            with running(folder / "topology", extra_env=extra) as topo:
                for process in topo.everything:
                    run.baseline[process.name] = usage(process)
                run.started = time.monotonic()
                chaos = Chaos(topo, run, clips, long_clip, port)
                supervisor = asyncio.create_task(chaos.supervise())
                await asyncio.gather(chaos.schedule(), chaos.load())
                await supervisor
                documents = await wait_all_final(topo, 180)
                # Let two sweeps pass beyond the grace, then look at the disk.
                await asyncio.sleep(45)
                documents = await wait_all_final(topo, 10)
                problems = lost(run, documents) + disk_problems(topo, documents)
                await asyncio.sleep(5)
                usage_end = {p.name: usage(p) for p in topo.everything}
                problems += usage_problems(run, topo, usage_end)
                text = report(run, topo, documents, problems, usage_end, run.now())
    await asyncio.to_thread(report_path.write_text, text)
    print(text)
    return 1 if problems else 0


def lost(run: Run, documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    by_id = {str(d["_id"]): d for d in documents}
    for submitted in run.submitted:
        document = by_id.get(submitted.video_id)
        if document is None:
            problems.append(f"acknowledged video {submitted.video_id} ({submitted.kind}) is gone")
        elif document["status"] != submitted.expect:
            problems.append(
                f"{submitted.video_id} ({submitted.kind}) ended {document['status']}, "
                f"expected {submitted.expect}: {document.get('error')}"
            )
    for document in documents:
        if document["status"] not in ("DONE", "FAILED"):
            problems.append(f"{document['_id']} stuck {document['status']}")
    for watcher in run.watchers:
        final = watcher.final_status
        expected = by_id.get(watcher.video_id, {}).get("status")
        if final != expected:
            problems.append(f"a subscriber of {watcher.video_id} ended at {final}, not {expected}")
    if run.gave_up:
        problems.append(f"{len(run.gave_up)} requests never got an answer: {run.gave_up[:5]}")
    return problems


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=480)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--report", type=Path, default=ROOT / "tests" / "topology" / "CHAOS.md")
    args = parser.parse_args()
    # Stopped from outside (a timeout, Ctrl-C): unwind, so that the topology's processes stop.
    signal.signal(signal.SIGTERM, _interrupt)
    raise SystemExit(asyncio.run(main_async(args.seconds, args.seed, args.report)))


if __name__ == "__main__":
    main()
