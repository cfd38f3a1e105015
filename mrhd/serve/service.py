"""The warm predictor behind the page: one model, its encoders, and the features of recent videos.

Work runs on two lanes, one thread each: the extraction lane decodes videos and runs the video
encoders, the query lane runs the text tower and the grounding model. A query on a video whose
features are in memory therefore never waits behind another video's extraction (the lanes share
the cores, not a queue), and since each lane runs one thing at a time, torch never runs two copies
of the same module at once. The features of the most recently used videos stay in memory (up to
``feature_bytes``, 1 GiB: about 290 hours of video in CLIP features, 50 in SlowFast + CLIP), so a
second query on a video decodes nothing and reads nothing from disk; behind that, the predictor's
feature cache keeps them across restarts. Two jobs on the same video share one extraction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from mrhd.errors import MrhdError
from mrhd.inference.results import CLIP_LEN
from mrhd.inference.video_features import FileIdentity, VideoFeatures
from mrhd.serve.jobs import Extraction, Job, JobBoard
from mrhd.serve.library import Video, VideoLibrary, VideoNotFound

log = logging.getLogger("mrhd.serve")


def internal_error(err: BaseException) -> str:
    """What the page shows for a bug: one line, the details in the server's log."""
    return f"internal error ({type(err).__name__}); the server log has the details"


class MomentService:
    def __init__(self, predictor, library: VideoLibrary, *, feature_bytes: int = 1 << 30):
        self.predictor = predictor
        self.library = library
        self.jobs = JobBoard()
        self.feature_bytes = feature_bytes
        self._extract_lane = ThreadPoolExecutor(1, thread_name_prefix="mrhd-extract")
        self._query_lane = ThreadPoolExecutor(1, thread_name_prefix="mrhd-query")
        self._features: OrderedDict[tuple, VideoFeatures] = OrderedDict()
        self._extracting: dict[tuple, tuple[Extraction, Future]] = {}
        self._lock = threading.Lock()
        self.decoded_videos = 0   # extractions that decoded a video (the rest came from the cache)

    # ---- requests -------------------------------------------------------------------------
    def submit(self, video_id: str, queries) -> Job:
        """Queue ``queries`` on a library video; bad queries or an unknown video fail here."""
        if isinstance(queries, str) or not isinstance(queries, (list, tuple)):
            raise MrhdError("queries must be a list of sentences")
        queries = self.predictor.check_queries(list(queries))
        video = self.library.usable(video_id)
        job = self.jobs.add(Job(video, queries, notes=self.predictor.truncation_notes(queries)))
        key = self._key(video)
        with self._lock:
            features = self._features.get(key)
            if features is not None:
                self._features.move_to_end(key)
                job.features, job.state = "memory", "predicting"
                self._query_lane.submit(self._run_query, job, features)
                return job
            pending = self._extracting.get(key)
            if pending is None:
                extraction = Extraction(video)
                pending = self._extracting[key] = (extraction, self._extract_lane.submit(self._extract, key,
                                                                                         extraction))
            job.extraction = pending[0]
        pending[1].add_done_callback(lambda fut: self._features_ready(job, fut))
        return job

    def _bytes_in_memory(self) -> int:
        return sum(a.nbytes for f in self._features.values() for a in f.streams.values())

    @staticmethod
    def _key(video: Video) -> tuple:
        try:
            return (video.id, FileIdentity.of(video.path))
        except OSError:
            raise VideoNotFound(f"{video.name} is no longer on the server; pick another video") from None

    # ---- extraction lane ------------------------------------------------------------------
    def _extract(self, key: tuple, extraction: Extraction) -> tuple[VideoFeatures, bool, float]:
        video = extraction.video
        extraction.started = True
        t0 = time.monotonic()
        decoded = []
        cache = self.predictor.cache
        if cache is not None and video.content_hash:
            cache.remember_hash(key[1], video.content_hash)   # hashed while it was uploaded

        def progress(done: int, total: int) -> None:
            if not decoded:
                decoded.append(True)
            extraction.on_progress(done, total)
            if (done - 1) * CLIP_LEN > self.library.max_duration:   # a file whose header hid its length
                raise MrhdError(self.library.too_long_message(video.name, None))

        try:
            features = self.predictor.encode_video(video.path, vid=video.vid, progress=progress)
            with self._lock:
                self._features[key] = features
                while len(self._features) > 1 and self._bytes_in_memory() > self.feature_bytes:
                    self._features.popitem(last=False)
                if decoded:
                    self.decoded_videos += 1
        finally:
            with self._lock:
                self._extracting.pop(key, None)
        return features, bool(decoded), time.monotonic() - t0

    def _features_ready(self, job: Job, fut: Future) -> None:
        try:
            features, decoded, seconds = fut.result()
        except MrhdError as err:
            return self._fail(job, str(err))
        except BaseException as err:  # noqa: BLE001 - a bug must not take the server down
            log.error("extracting %s failed", job.video.path, exc_info=err)
            return self._fail(job, internal_error(err))
        job.features = "extracted" if decoded else "cache"
        job.timings["features_s"] = round(seconds, 3)
        job.state = "predicting"
        try:
            self._query_lane.submit(self._run_query, job, features)
        except RuntimeError:   # shutting down
            self._fail(job, "the server is shutting down")

    # ---- query lane -----------------------------------------------------------------------
    def _run_query(self, job: Job, features: VideoFeatures) -> None:
        t0 = time.monotonic()
        try:
            job.predictions = self.predictor.predict(features, job.queries, warn=False)   # the job's notes say it
        except MrhdError as err:
            return self._fail(job, str(err))
        except Exception as err:  # noqa: BLE001
            log.error("predicting on %s failed", job.video.path, exc_info=err)
            return self._fail(job, internal_error(err))
        job.timings["predict_s"] = round(time.monotonic() - t0, 4)
        job.state = "done"

    @staticmethod
    def _fail(job: Job, message: str) -> None:
        job.error, job.state = message, "error"

    # ---- the process ----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Predictions on made-up features, so that the first user's query finds every buffer
        allocated and every kernel chosen (and compiled)."""
        p = self.predictor
        streams = {s: np.random.default_rng(0).standard_normal((p.window, p.video_encoders[s].dim)).astype(np.float32)
                   for s in p.profile.video + p.profile.audio}
        fake = VideoFeatures(path="warm-up", vid="warm-up", duration=p.window * CLIP_LEN, content_hash="",
                             streams=streams, encoders={s: e.info.weights for s, e in p.video_encoders.items()})
        # one query (a batch of one) and two (any larger batch): with Predictor.compile_model these
        # calls compile the graphs a user's queries need, before the port answers
        self._query_lane.submit(p.predict, fake, ["a person walks into the room"]).result()
        self._query_lane.submit(p.predict, fake, ["a person walks into the room", "a dog runs"]).result()

    def info(self) -> dict:
        p = self.predictor
        return {"model": p.model_name, "weights": p.weights, "profile": p.profile.name, "device": str(p.device),
                "window_s": p.window * CLIP_LEN, "clip_len": CLIP_LEN,
                "max_duration": self.library.max_duration,
                "max_upload_mb": round(self.library.max_upload_bytes / 2 ** 20),
                "folders": bool(self.library.folders), "decoded_videos": self.decoded_videos,
                "videos_in_memory": len(self._features), "active_jobs": self.jobs.active()}

    def close(self) -> None:
        self._extract_lane.shutdown(wait=False, cancel_futures=True)
        self._query_lane.shutdown(wait=False, cancel_futures=True)
        self.library.close()
