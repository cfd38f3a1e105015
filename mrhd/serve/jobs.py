"""One page request (a video and its queries) from submission to result, as the page polls it.

A job waits for the video's features (:class:`Extraction`, shared by every job on the same video
that arrives while it runs), then for the query lane, then holds its predictions. ``to_json`` is
what ``GET /api/jobs/<id>`` returns: the state, a sentence for the page, extraction progress, and
when done the predictions in `mrhd predict`'s format with the top clips the page shows as
thumbnails.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from mrhd.inference.results import Prediction
from mrhd.serve.library import Video

TOP_CLIPS = 5   # thumbnails per query


@dataclass
class Extraction:
    """Features of one video being made; several jobs may wait for it."""

    video: Video
    started: bool = False
    done: int = 0
    total: int = 0

    def on_progress(self, done: int, total: int) -> None:
        self.started = True
        self.done, self.total = done, max(total, done)


@dataclass
class Job:
    video: Video
    queries: list[str]
    notes: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: "j" + uuid.uuid4().hex[:16])
    state: str = "queued"             # queued | extracting | predicting | done | error
    extraction: Extraction | None = None
    features: str | None = None       # memory | cache | extracted
    error: str | None = None
    predictions: list[Prediction] | None = None
    created: float = field(default_factory=time.monotonic)
    timings: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error")

    @property
    def phase(self) -> str:
        """The state the page sees: a job waiting for an extraction that has begun is extracting."""
        if self.state == "queued" and self.extraction is not None and self.extraction.started:
            return "extracting"
        return self.state

    def message(self) -> str:
        ext = self.extraction
        state = self.phase
        if state == "queued":
            return "waiting for the model"
        if state == "extracting":
            if ext is not None and ext.total:
                return f"extracting features: {ext.done} of {ext.total} clips"
            return "reading the video"
        if state == "predicting":
            return "finding moments"
        if state == "error":
            return self.error or "failed"
        n = len(self.queries)
        return f"{n} quer{'y' if n == 1 else 'ies'} done"

    def to_json(self) -> dict:
        state = self.phase   # read once: the lanes move it on while this runs
        out = {"id": self.id, "state": state, "message": self.message(), "video": self.video.to_json(),
               "queries": self.queries, "notes": self.notes, "features": self.features, "error": self.error,
               "timings": self.timings}
        ext = self.extraction
        if ext is not None and ext.total:
            out["progress"] = {"done": ext.done, "total": ext.total}
        if state == "done":
            out["results"] = [{"prediction": p.to_json(), "top_clips": [[i, s] for i, s in p.top_clips(TOP_CLIPS)]}
                              for p in self.predictions]
            out["download"] = f"/api/jobs/{self.id}/predictions.json"
        return out


class JobBoard:
    """The jobs a page may still poll: the newest ``slots`` (finished ones are dropped first)."""

    def __init__(self, slots: int = 512):
        self.slots = slots
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.slots:
                victim = next((k for k, j in self._jobs.items() if j.finished), None)
                if victim is None:
                    break
                del self._jobs[victim]
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def active(self) -> int:
        with self._lock:
            return sum(not j.finished for j in self._jobs.values())
