"""``mrhd extract --ray``: the same extraction job, with decoding and encoding spread over a Ray
cluster (see docs/cluster.md).

Why this shape:

- The driver (the ``mrhd extract`` process) keeps everything that defines the store: the listing,
  the plan (what is already stored), the packing of clips into batches, the part files and their
  commits. It is :class:`~mrhd.extract.job.ExtractJob` itself, with two steps replaced: a video's
  clips come from a Ray task instead of a local decoding worker, and a packed batch goes to an
  encoder actor instead of the local model. Only object references and feature rows pass through
  the driver; decoded frames go from the decoding node to the encoder's node in Ray's object store.
- Batches are packed in the order of the listing, exactly as ``--num-workers 0`` packs them
  locally: the driver reads the videos' messages one video after the other, while the next videos
  decode ahead. Encoders are not batch-invariant in the last bit (a clip encoded beside other clips
  can round differently), so this order is what makes the store byte-identical to the local job's,
  and the same whatever the cluster's size or the failures along the way.
- Failures: a decoding task or an encoder actor that dies (its process or its node lost) is redone
  by Ray (task retries, actor restarts, lineage reconstruction of lost frames); decoding is
  deterministic, so a redone video yields the same messages and the batches stay the same. What Ray
  cannot redo fails only the videos concerned, reported in the summary; a re-run redoes them.
- Runs sharing the output folder (another driver, local runs, shards) share the list through the
  local job's claims: the driver claims a video when it submits its decoding task. Each run then
  packs only its own videos, so such a store may differ from a single run's in the last bit.
- Ray is optional (``mrhd[ray]``): this module imports it only when a cluster job starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrhd.encoders.base import encode_clips
from mrhd.errors import MrhdError
from mrhd.extract.job import ExtractJob, _picklable
from mrhd.extract.sampling import CLIP_LEN
from mrhd.extract.worker import StreamSpec, timed_messages

INSTALL_HINT = "pip install 'mrhd[ray]'"
RETRIES = 3  # Ray's retries of a lost decoding task and restarts of a lost encoder actor
BATCHES_PER_ACTOR = 2  # batches queued at each actor: the next one's frames move while one computes


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise MrhdError(f"--ray needs Ray, which is not installed; install it with: {INSTALL_HINT}") from err
    return ray


@contextmanager
def ray_session(address: str | None, local_cpus: int | None = None) -> Iterator[object]:
    """Connect to the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or start a
    local one of ``local_cpus`` logical CPUs when it is None; disconnect (and stop a local cluster)
    at the end."""
    ray = import_ray()
    # the workers' output stays in the nodes' Ray logs: the driver's terminal shows one progress bar
    kwargs = dict(log_to_driver=False, logging_level=logging.WARNING)
    try:
        if address is None:
            # a cluster of our own for one job: no usage report to Ray's makers unless the user asks
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(include_dashboard=False, num_cpus=local_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as err:  # noqa: BLE001  (Ray raises ConnectionError, ValueError, RuntimeError, ...)
        if address is None:
            raise MrhdError(f"cannot start a local Ray cluster ({_first_line(err)})") from err
        raise MrhdError(f"cannot connect to the Ray cluster at {address} ({_first_line(err)}); start it with "
                        "`ray start --head` or give its address to --ray") from err
    # Ray's driver prints what the nodes report (a worker died, a task is retried, a raylet ended) to
    # stdout from a thread of its own, until shutdown joins it; stdout is the summary's, so those lines
    # go to stderr with the progress
    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield ray
        finally:
            ray.shutdown()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:300]


def _reason(err: BaseException) -> str:
    """A Ray error in one line: the exception raised on the node when Ray kept it, else the last line
    of Ray's message (a remote traceback ends with ``module.Error: message``), without the module."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {_first_line(cause)}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1])[:300]


# ---------------------------------------------------------------------------------------- remote side
def decode_video(path: str, vid: str, specs: list[StreamSpec], chunk: int, sha256: str | None = None):
    """Ray generator task: :func:`~mrhd.extract.worker.timed_messages` of one video, where a chunk's
    clips follow its header as an item of their own, so that the driver reads the header and hands
    the clips to an encoder actor without fetching them. Deterministic, so Ray may retry it; the
    file's hash (its provenance in the store) is computed here, on the node, as a local decoding
    worker computes it, unless the driver already has it."""
    torch.set_num_threads(1)  # one decoder thread per task, as a local decoding worker
    for msg in timed_messages(path, vid, specs, chunk, threads=1, sha256=sha256):
        if msg[0] == "chunk":
            kind, vid_, stream, start, payload, n = msg
            yield (kind, vid_, stream, start, None, n)
            yield payload
        else:
            yield msg


@dataclass(frozen=True)
class EncoderFacts:
    """What the driver needs to know of an encoder that runs in actors (picklable)."""

    info: object  # EncoderInfo
    store_dtype: str
    input_kind: str | None
    preprocessor: object | None
    window_frame_picker: object | None


class EncoderActor:
    """One encoder on one GPU share (or a few CPU threads) of the cluster: the model is built once,
    on the node, from that node's weights cache or a shared path."""

    def __init__(self, name: str, device: str, weights: str | None, random_weights: bool, size: str,
                 threads: int, precision: str | None = None):
        from mrhd.encoders.factory import build_encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = build_encoder(name, device=device, weights=weights, random_weights=random_weights,
                                     size=size)
        if precision is not None:  # video encoders, as the local job sets them (the recipe records it)
            self.encoder.set_precision(precision)

    def facts(self) -> EncoderFacts:
        enc = self.encoder
        pre = getattr(enc, "preprocessor", None)
        picker = getattr(enc, "window_frame_picker", None)
        return EncoderFacts(enc.info, str(getattr(enc, "store_dtype", "float16")), getattr(enc, "input_kind", None),
                            pre if pre is not None and _picklable(pre) else None,
                            picker if picker is not None and _picklable(picker) else None)

    def encode(self, parts: list[tuple]) -> tuple[str, object, float]:
        """``parts``: ``(clips ref, lo, hi)`` in batch order -> ``("ok", float32 [n, dim], seconds)`` or
        ``("error", message, seconds)``; the batch is built as ``ExtractJob._encode_batch`` builds it."""
        import ray

        refs = list(dict.fromkeys(ref for ref, _, _ in parts))
        values = dict(zip(refs, ray.get(refs)))
        t0 = time.perf_counter()
        try:
            tensors = []
            for ref, lo, hi in parts:
                clips = values[ref][lo:hi]
                if isinstance(clips, np.ndarray):  # frames from the object store are read-only
                    tensors.append(torch.from_numpy(np.array(clips)))
                else:
                    tensors.append(self.encoder.preprocess(clips))
            batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            feats = encode_clips(self.encoder, batch)
            if feats.shape[0] != batch.shape[0]:
                raise RuntimeError(f"returned {feats.shape[0]} rows for {batch.shape[0]} clips")
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: these videos fail, the job goes on
            return "error", str(err), time.perf_counter() - t0
        return "ok", feats, time.perf_counter() - t0

    def encode_texts(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        outs = self.encoder.encode_texts(texts)
        return [(tok.float().cpu().numpy(), None if pooled is None else pooled.float().cpu().numpy())
                for tok, pooled in outs]


@dataclass
class RemoteEncoder:
    """The driver's stand-in for an encoder: the attributes ExtractJob reads, and the actors that run
    it (a text encoder's ``encode_texts`` runs in its actor)."""

    facts: EncoderFacts
    actors: list
    load: dict = field(default_factory=dict)  # actor index -> batches queued there

    @property
    def info(self):
        return self.facts.info

    @property
    def store_dtype(self) -> str:
        return self.facts.store_dtype

    @property
    def input_kind(self) -> str | None:
        return self.facts.input_kind

    @property
    def preprocessor(self):
        return self.facts.preprocessor

    @property
    def window_frame_picker(self):
        return self.facts.window_frame_picker

    def encode_texts(self, texts: list[str]):
        import ray

        outs = ray.get(self.actors[0].encode_texts.remote(texts))
        return [(torch.from_numpy(tok), None if pooled is None else torch.from_numpy(pooled)) for tok, pooled in outs]


@dataclass(frozen=True)
class ActorPlan:
    """How each encoder is spread over the cluster."""

    actors: int  # actors per encoder
    gpus: float  # GPUs per actor (0 on CPU)
    cpus: float  # CPUs per actor (and torch threads on CPU)


def plan_actors(resources: dict, n_encoders: int, device: str, actors: int | None, gpus_per_actor: float | None,
                cpus_per_actor: float | None) -> ActorPlan:
    """Defaults: on CUDA, every GPU holds one actor of each encoder (``1 / n_encoders`` GPU each); on
    the CPU, one actor per encoder. Refused when the cluster's ``resources`` cannot hold the actors
    and one decoding task beside them."""
    cpus = cpus_per_actor if cpus_per_actor is not None else 1
    total_cpus = float(resources.get("CPU", 0))
    if device.startswith("cuda"):
        total = float(resources.get("GPU", 0))
        if total <= 0:
            raise MrhdError("--device cuda: the Ray cluster has no GPU; add GPU nodes or use --device cpu")
        gpus = gpus_per_actor if gpus_per_actor is not None else 1.0 / n_encoders
        if gpus <= 0 or gpus > total:
            raise MrhdError(f"--ray-gpus-per-actor {gpus:g}: need more than 0 and at most the cluster's "
                            f"{total:g} GPU(s)")
        plan = ActorPlan(actors or max(1, math.floor(total / (gpus * n_encoders) + 1e-9)), gpus, cpus)
    else:
        if gpus_per_actor:
            raise MrhdError("--ray-gpus-per-actor needs --device cuda")
        plan = ActorPlan(actors or 1, 0.0, cpus)
    if plan.actors < 1 or cpus < 0:
        raise MrhdError("--ray-actors must be at least 1 and --ray-cpus-per-actor at least 0")
    held = plan.cpus * plan.actors * n_encoders
    if held + 1 > total_cpus:
        raise MrhdError(f"the Ray cluster has {total_cpus:g} CPU(s): {plan.actors * n_encoders} actor(s) of "
                        f"{plan.cpus:g} CPU leave none for decoding; lower --ray-actors or "
                        "--ray-cpus-per-actor, or add nodes")
    return plan


def local_resources(device: str) -> dict:
    """What a local cluster would have: this machine's CPUs and GPUs."""
    gpus = torch.cuda.device_count() if device.startswith("cuda") and torch.cuda.is_available() else 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def start_encoders(ray, names: list[str], plan: ActorPlan, *, device: str, weights: dict[str, str | None],
                   random_weights: bool, size: str, precision: str | None = None) -> list[RemoteEncoder]:
    """Start ``plan.actors`` actors per encoder (all at once: models load side by side) and wait
    until each has built its model; one that cannot is a one-line error. ``precision``: set on each
    encoder (``--precision``; None for text encoders, which the local job leaves as built)."""
    actor_class = ray.remote(EncoderActor)
    actor_device = "cuda" if device.startswith("cuda") else "cpu"
    threads = max(1, int(plan.cpus))
    started = {}
    for name in names:
        options = actor_class.options(num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=RETRIES,
                                      max_task_retries=RETRIES)
        started[name] = [options.remote(name, actor_device, weights.get(name), random_weights, size, threads,
                                        precision) for _ in range(plan.actors)]
    encoders = []
    for name, actors in started.items():
        try:
            facts = _wait_for_actors(ray, name, actors, plan)
        except ray.exceptions.RayError as err:
            raise MrhdError(f"encoder {name} did not start on the Ray cluster ({_reason(err)}); "
                            "every node needs mrhd and the weights (docs/cluster.md)") from err
        encoders.append(RemoteEncoder(facts, actors, {i: 0 for i in range(len(actors))}))
    return encoders


def _wait_for_actors(ray, name: str, actors: list, plan: ActorPlan, log=None) -> EncoderFacts:
    """The facts of a started encoder; says every minute that the cluster has not placed its actors
    yet (an autoscaler may still be adding the nodes; a model may still be downloading)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    pending = [a.facts.remote() for a in actors]
    waited = 0
    while True:
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=60)
        if len(ready) == len(pending):
            return ray.get(pending)[0]
        waited += 1
        share = f"{plan.gpus:g} GPU" if plan.gpus else f"{plan.cpus:g} CPU"
        log(f"ray: {len(pending) - len(ready)} {name} actor(s) of {share} not started after {waited} min "
            "(waiting for room on the cluster, or for the model to load)")


# ---------------------------------------------------------------------------------------- driver side
@dataclass(frozen=True)
class ClipsRef:
    """Clips ``lo:hi`` of a chunk in Ray's object store; slicing narrows the range, so the batch
    packing of ExtractJob splits chunks without fetching them."""

    ref: object
    lo: int
    hi: int

    def __getitem__(self, item: slice) -> ClipsRef:
        start, stop, _ = item.indices(self.hi - self.lo)
        return ClipsRef(self.ref, self.lo + start, self.lo + stop)


class RayExtractJob(ExtractJob):
    """:class:`ExtractJob` whose videos decode in Ray tasks and whose batches encode in actors.

    ``encoders``: :class:`RemoteEncoder` objects (:func:`start_encoders`); ``decode_ahead``: videos
    submitted for decoding at once, the one being packed included (the frames of the next ones wait
    in the object store);
    ``text_encoders``: starts the text encoders' actors, called by :meth:`run_queries` once the video
    actors are gone (so they take the same GPUs).
    """

    def __init__(self, encoders: list[RemoteEncoder], out_dir: str | Path, *, decode_ahead: int = 2,
                 text_encoders: Callable[[], list[RemoteEncoder]] | None = None, **kw):
        kw["num_workers"] = 0  # no local decoding workers: the cluster decodes
        super().__init__(encoders, out_dir, **kw)
        self._start_text_encoders = text_encoders
        self._inline = False  # decoding CPU time and memory are the tasks', as with local workers
        self.decode_ahead = max(1, int(decode_ahead))
        self._in_flight: dict = {}  # result ref -> (stream, parts, encoder, actor index, attempt)
        self._ray = None
        self._waited_once = False

    def run_queries(self, annotations, batch: int = 64):
        if self._start_text_encoders is not None and not self.text_encoders:
            ray = import_ray()
            for enc in self.encoders:
                for actor in enc.actors:
                    ray.kill(actor)
            self.text_encoders = self._start_text_encoders()
        return super().run_queries(annotations, batch)

    # -- decoding
    def _run_tasks(self, work: list, specs: dict, pooled: bool, claimed: bool = False) -> None:
        """Decode ``decode_ahead`` videos at a time in Ray tasks, each claimed as it is submitted (as
        the local job claims a video when it hands it to a decoder), and read them in listing order."""
        ray = self._ray = import_ray()
        decode = ray.remote(decode_video).options(num_cpus=1, max_retries=RETRIES,
                                                  _generator_backpressure_num_objects=-1)
        backlog = deque(work)
        window: deque = deque()

        def refill() -> None:
            while backlog and len(window) < self.decode_ahead:
                video = backlog.popleft()
                if claimed or self._start(video):  # else another run holds it or stored it meanwhile
                    path, vid, todo, sha256 = self._task(video, specs)
                    window.append((vid, decode.remote(path, vid, todo, self.chunk, sha256)))

        refill()
        while window:
            vid, gen = window[0]
            self._read_video(vid, gen)
            window.popleft()
            del gen
            refill()
        self._encode_ready(force=True)
        while self._in_flight:
            self._collect(block=True)

    def _handle(self, msg: tuple) -> None:
        """As the local job; a video's provenance names the file by the driver's path, the one every
        later run (local or on the cluster) compares with, even where a node mounts it elsewhere."""
        if msg[0] == "source" and msg[1] in self._videos:
            msg = (*msg[:2], {**msg[2], "path": str(self._videos[msg[1]].source.path.resolve())})
        super()._handle(msg)

    def _read_video(self, vid: str, gen) -> None:
        """Every message of one video, in order, into the job's bookkeeping (as ``_run_inline``)."""
        ray = self._ray
        while True:
            ref = self._next_ref(gen)
            if ref is None:
                return
            try:
                msg = ray.get(ref)
                if msg[0] == "chunk":
                    clips = self._next_ref(gen)
                    if clips is None:
                        raise RuntimeError("the decoding task ended inside a chunk")
                    msg = msg[:4] + (ClipsRef(clips, 0, msg[5]), msg[5])
            except (ray.exceptions.RayError, RuntimeError) as err:  # Ray gave up on the task
                video = self._videos.get(vid)
                if video is not None:
                    self._fail(vid, None, f"decoding task lost ({_reason(err)}); re-run to redo it")
                    video.ended = True
                    self._maybe_close(vid)
                return
            self._handle(msg)
            self._encode_ready(force=False)

    def _next_ref(self, gen):
        """The next item of a decoding task, collecting finished batches while it is not there."""
        ray = self._ray
        while True:
            t0 = time.perf_counter()
            idle = not self._in_flight
            ready, _ = ray.wait([gen, *self._in_flight], num_returns=1, fetch_local=False)
            if idle:  # nothing to encode meanwhile: decoding was not hidden
                waited = time.perf_counter() - t0
                if self._waited_once:
                    self.summary.wait_s += waited
                else:
                    self.summary.startup_s += waited
            self._waited_once = True
            self._collect(block=False)
            if gen in ready:
                try:
                    return next(gen)
                except StopIteration:
                    return None

    # -- encoding
    def _encode_batch(self, name: str, st, limit: int) -> None:
        live = self._take_batch(name, st, limit)
        if not live:
            return
        enc: RemoteEncoder = st.encoder
        while min(enc.load.values()) >= BATCHES_PER_ACTOR:
            self._collect(block=True)
        self._submit(name, live, enc, attempt=0)

    def _submit(self, name: str, live: list, enc: RemoteEncoder, attempt: int) -> None:
        """Send one batch to the least loaded actor of its stream."""
        index = min(enc.load, key=enc.load.get)
        enc.load[index] += 1
        ref = enc.actors[index].encode.remote([(p[2].ref, p[2].lo, p[2].hi) for p in live])
        self._in_flight[ref] = (name, live, enc, index, attempt)

    def _collect(self, block: bool) -> None:
        """Apply finished batches (at least one when ``block``)."""
        if not self._in_flight:
            return
        ray = self._ray
        ready, _ = ray.wait(list(self._in_flight), num_returns=1 if block else len(self._in_flight),
                            timeout=None if block else 0, fetch_local=True)
        for ref in ready:
            name, live, enc, index, attempt = self._in_flight.pop(ref)
            enc.load[index] -= 1
            try:
                status, value, seconds = ray.get(ref)
            except ray.exceptions.RayError as err:  # the actor or the batch's frames were lost
                # Ray's own actor-task retries do not cover every loss (an actor whose node just died is
                # "temporarily unavailable"): the batch goes again, to a live or restarted actor, and its
                # frames are rebuilt from their decoding task if they were lost with the node
                if attempt < RETRIES:
                    self._submit(name, live, enc, attempt + 1)
                else:
                    self._batch_failed(name, live, f"its Ray worker was lost: {_reason(err)}; re-run to redo it")
                continue
            self.summary.encode_s += seconds
            if status == "ok":
                self._batch_done(name, live, value)
            else:
                self._batch_failed(name, live, value)


@contextmanager
def cluster_job(address: str | None, video_streams: list[str], text_streams: list[str], out_dir: str | Path, *,
                device: str, weights: dict[str, str | None], random_weights: bool, size: str, batch_size: int,
                precision: str = "official",
                decode_at_once: int | None = None, actors: int | None = None, gpus_per_actor: float | None = None,
                cpus_per_actor: float | None = None, overwrite: bool = False, progress: bool = True,
                clip_len: float = CLIP_LEN, log=None) -> Iterator[RayExtractJob]:
    """A :class:`RayExtractJob` on the cluster at ``address`` (None: a local cluster), its encoder
    actors started; the connection closes when the block ends. ``decode_at_once``: videos decoding
    at the same time (default: the cluster's CPUs that the actors leave)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if decode_at_once is not None and decode_at_once < 1:
        raise MrhdError("--num-workers with --ray is the number of videos decoding at once: at least 1")
    local_cpus = None
    if address is None:  # this machine's CPUs for decoding, beside the CPUs the actors hold
        local = local_resources(device)
        plan = plan_actors({**local, "CPU": local["CPU"] + 1e6}, len(video_streams), device, actors,
                           gpus_per_actor, cpus_per_actor)
        local_cpus = math.ceil(local["CPU"] + plan.cpus * plan.actors * len(video_streams))
    with ray_session(address, local_cpus) as ray:
        resources = ray.cluster_resources()
        plan = plan_actors(resources, len(video_streams), device, actors, gpus_per_actor, cpus_per_actor)
        free = int(resources.get("CPU", 0) - plan.cpus * plan.actors * len(video_streams))
        decoding = decode_at_once or max(1, free)
        build = dict(device=device, weights=weights, random_weights=random_weights, size=size)
        encoders = start_encoders(ray, video_streams, plan, precision=precision, **build)
        log(describe_cluster(ray, plan, video_streams, decoding))

        def text_encoders() -> list[RemoteEncoder]:  # one actor each, in the room of the video actors
            return start_encoders(ray, text_streams, ActorPlan(1, plan.gpus, plan.cpus), **build)

        yield RayExtractJob(encoders, out_dir, text_encoders=text_encoders if text_streams else None,
                            batch_size=batch_size, decode_ahead=decoding, overwrite=overwrite,
                            progress=progress, clip_len=clip_len, log=log)


def describe_cluster(ray, plan: ActorPlan, names: list[str], decoding: int) -> str:
    """One line on what the cluster gave the job."""
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    share = f"{plan.gpus:g} GPU" if plan.gpus else f"{plan.cpus:g} CPU"
    return (f"ray: {nodes} node(s), {resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s); "
            f"{plan.actors} actor(s) of {share} per encoder ({', '.join(names)}); "
            f"{decoding} video(s) decoding at once")
