"""Throughput of ``mrhd extract`` per encoder stream, end to end against the model alone.

For each encoder (random weights; ``--size tiny`` for the big BLIP-2 / InternVideo2 towers on CPU):

- model alone: ``encode`` on already decoded and preprocessed clips, batch ``--batch-size``;
- end to end: the real job (decoding workers, cross-video batches, store writes) on generated videos;

- with ``--ray``: the same job on a local Ray cluster (decoding tasks, an encoder actor; see
  docs/cluster.md), against the local job on the same machine;

and prints clips/s, video-seconds per wall-second, decoding's share of wall time (the time the main
process waited for decoded clips, i.e. decoding NOT hidden behind compute; plus the CPU seconds the
workers spent decoding), peak RSS of the main process and of the workers, GPU utilisation on CUDA.

    python benchmarks/extract.py --encoders clip --videos 4 --duration 60
    python benchmarks/extract.py --encoders clip,pann,blip2,internvideo2 --size tiny
    python benchmarks/extract.py --encoders clip --ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrhd.extract.cpu_sharing import main_process_threads, share_cores_with_decoders  # noqa: E402

# as `mrhd extract` does (before torch loads; GOMP_SPINCOUNT in the environment wins)
share_cores_with_decoders("cuda" if "cuda" in " ".join(sys.argv) else "cpu", gpu_too=True)

import torch  # noqa: E402

from mrhd.encoders.factory import build_encoder  # noqa: E402
from mrhd.extract.audio import iter_audio_chunks  # noqa: E402
from mrhd.extract.decode import VideoDecoder  # noqa: E402
from mrhd.extract.job import ExtractJob  # noqa: E402
from mrhd.extract.sources import expand_inputs  # noqa: E402
from mrhd.extract.synthetic import frame_pattern, write_video  # noqa: E402
from mrhd.extract.worker import peak_rss_mb  # noqa: E402


def write_gop_video(path: Path, duration: float, fps: float, width: int, height: int, preset: str,
                    gop: int) -> Path:
    """Video only, like a web download: x264 ``preset`` (B-frames from veryfast up), keyframe every
    ``gop`` frames; the default generator (ultrafast, no B-frames, keyint 250) is the worst case for
    seeking and frame skipping."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": preset, "g": str(gop)}
        for i in range(int(round(duration * fps))):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class GpuSampler:
    """Mean GPU utilisation from ``nvidia-smi`` sampled every 0.2 s (None without CUDA)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and torch.cuda.is_available() and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=2).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except Exception:  # noqa: BLE001
                pass
            self._stop.wait(0.2)

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def model_only(enc, video: Path, batch_size: int, min_clips: int) -> float:
    """clips/s of ``encode`` alone on preprocessed clips of ``video`` (repeated to ``min_clips``)."""
    if enc.input_kind == "audio_chunk":
        clips = [x for _, x in iter_audio_chunks(video)]
    else:
        clips = [x for _, _, x in VideoDecoder(video, [enc.input_kind],
                                               window_picker=getattr(enc, "window_frame_picker", None))]
    while len(clips) < min_clips:
        clips = clips + clips
    clips = clips[:min_clips]
    batches = [enc.preprocess(clips[i: i + batch_size]) for i in range(0, len(clips), batch_size)]
    device = enc.device
    ctx = (torch.autocast("cuda", dtype=enc.autocast_dtype) if device.type == "cuda" and enc.autocast_dtype
           else torch.autocast("cpu", enabled=False))
    with torch.inference_mode(), ctx:
        for _ in range(2):  # warm-up at the timed batch size (oneDNN sets up per shape)
            enc.encode(batches[0].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in batches:
            enc.encode(b.to(device)).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(clips) / (time.perf_counter() - t0)


def ray_row(args, name: str, size: str, batch: int, sources, out: Path, local_e2e: float, local_steady: float) -> str:
    """The same job with ``--ray``: clips/s against the local job's, end to end and after each one's
    start-up (the local job's decoding workers; Ray's first decoding task), and the cluster's start-up
    (cluster and actors, never in clips/s)."""
    from mrhd.extract.ray_job import cluster_job

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    cuda = args.device.startswith("cuda")
    with cluster_job(None if args.ray == "local" else args.ray, [name], [], out, device=args.device,
                     weights={name: None}, random_weights=True, size=size, batch_size=batch,
                     decode_at_once=args.num_workers, gpus_per_actor=1.0 if cuda else None,
                     cpus_per_actor=1 if cuda else torch.get_num_threads(), progress=False) as job:
        start = time.perf_counter() - t0
        summary = job.run_videos(sources)
    clips = summary.clips[name]
    e2e = clips / summary.wall_s
    steady = clips / max(summary.wall_s - summary.startup_s, 1e-9)
    return (f"  ray ({args.ray}): {e2e:.1f} clips/s = {e2e / local_e2e:.0%} of the local job; after the first "
            f"decoding task's start-up ({summary.startup_s:.1f} s): {steady:.1f} clips/s = "
            f"{steady / local_steady:.0%} of the local job after its own; {clips} clips, cluster + actor start "
            f"{start:.1f} s (not in clips/s), decode wait {summary.wait_s / summary.wall_s:.0%}"
            + (f"; failures: {'; '.join(f.reason for f in summary.failures)}" if summary.failures else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", default="clip")
    ap.add_argument("--size", default="full", choices=("full", "tiny"),
                    help="encoder size; BLIP-2 and InternVideo2 are always tiny on CPU")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--copies", type=int, default=1,
                    help="extract each generated video this many times under distinct names (a long job "
                         "without the generation time; each copy is decoded and encoded anew)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per generated video")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--gop", type=int, default=None,
                    help="write video-only files with this keyframe interval and --preset (web-like)")
    ap.add_argument("--preset", default="veryfast", help="x264 preset with --gop")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the main process (default: as mrhd extract)")
    ap.add_argument("--model-clips", type=int, default=None,
                    help="clips for the model-alone timing (default: max(4 x batch, 64))")
    ap.add_argument("--keep", metavar="DIR", help="generate/keep the videos here instead of a temp folder")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="also run the job on Ray: a local cluster, or the one at ADDRESS (its actors get "
                         "--threads CPUs, or 1 GPU with --device cuda)")
    args = ap.parse_args()
    torch.set_num_threads(main_process_threads(args.device, args.threads))   # as `mrhd extract` does
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (64 if cuda else 16)

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="mrhd-bench-"))
    vids = tmp / "videos"
    t0 = time.perf_counter()
    for i in range(args.videos):
        path = vids / f"bench{i}.mp4"
        if path.exists():
            continue
        if args.gop:
            write_gop_video(path, args.duration, args.fps, args.width, args.height, args.preset, args.gop)
        else:
            write_video(path, duration=args.duration, fps=args.fps, width=args.width, height=args.height)
    for i in range(args.videos):
        for c in range(1, args.copies):
            copy = vids / f"bench{i}-copy{c}.mp4"
            if not copy.exists():
                shutil.copyfile(vids / f"bench{i}.mp4", copy)
    kind = f"x264 {args.preset}, keyframe every {args.gop}" if args.gop else "x264 ultrafast, keyint 250"
    copies = f" (each extracted {args.copies} times)" if args.copies > 1 else ""
    print(f"# {args.videos} videos{copies} x {args.duration:.0f} s, {args.width}x{args.height} @ {args.fps:g} fps, {kind} "
          f"(generated in {time.perf_counter() - t0:.1f} s); device {args.device}, batch {batch}, "
          f"{args.num_workers} decoding worker(s), torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other jobs skew the figures)")
    sources = expand_inputs([str(vids)]).sources
    header = (f"{'encoder':<13}{'model clips/s':>14}{'e2e clips/s':>12}{'e2e/model':>10}{'video-s/s':>10}"
              f"{'decode wait':>12}{'decode cpu-s':>13}{'RSS main MB':>12}{'RSS workers MB':>15}{'GPU %':>7}")
    rows = []
    for name in [n.strip() for n in args.encoders.split(",") if n.strip()]:
        size = "tiny" if (name in ("blip2", "internvideo2") and not cuda) else args.size
        enc = build_encoder(name, device=args.device, random_weights=True, size=size)
        n_model = args.model_clips or max(4 * batch, 64)
        alone = model_only(enc, sources[0].path, batch, min_clips=n_model)
        out = tmp / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        job = ExtractJob([enc], out, batch_size=batch, num_workers=args.num_workers, progress=False)
        with GpuSampler(cuda) as gpu:
            summary = job.run_videos(sources)
        # model alone again after the job, averaged: the load of a shared machine drifts
        alone = (alone + model_only(enc, sources[0].path, batch, min_clips=n_model)) / 2
        clips = summary.clips[enc.info.stream]
        model_cpu = summary.encode_s * torch.get_num_threads()
        e2e = clips / summary.wall_s
        own, kids = peak_rss_mb(), summary.worker_rss_mb
        util = f"{gpu.mean:.0f}" if gpu.mean is not None else "-"
        rows.append(f"{name + ('/' + size if size != 'full' else ''):<13}{alone:>14.1f}{e2e:>12.1f}"
                    f"{e2e / alone:>10.0%}{summary.video_seconds / summary.wall_s:>10.1f}"
                    f"{summary.wait_s / summary.wall_s:>12.0%}{summary.decode_cpu_s:>13.1f}{own:>12.0f}"
                    f"{kids:>15.0f}{util:>7}")
        steady = clips / max(summary.wall_s - summary.startup_s, 1e-9)
        rows.append(f"  worker start-up {summary.startup_s:.1f} s; after it: {steady:.1f} clips/s = "
                    f"{steady / alone:.0%} of the model alone")
        if args.num_workers > 0:
            # who holds the job up after start-up: the main process's encode step (batch assembly,
            # copies, model, read-back) or the decoding workers (their CPU time over their wall time)
            after = max(summary.wall_s - summary.startup_s, 1e-9)
            rows.append(f"  after start-up: main process in the encode step {summary.encode_s / after:.0%} of the "
                        f"time, decoding workers busy {summary.decode_cpu_s / (args.num_workers * after):.0%}")
        # CPU arithmetic: per clip the model needs threads/alone core-seconds and the workers decode_cpu;
        # on C cores end to end cannot beat C / (threads + decode_cpu * alone) of the model alone
        if not cuda:
            cores, threads = os.cpu_count() or 1, torch.get_num_threads()
            decode_per_clip = summary.decode_cpu_s / max(clips, 1)
            bound = min(1.0, cores / (threads + decode_per_clip * alone))
            rows.append(f"  CPU bound: model {threads} thread(s) + decoding on {cores} cores allow at most "
                        f"{bound:.0%} of the model alone")
        rows.append(f"  {clips} clips; per clip: decoding {1000 * summary.decode_cpu_s / max(clips, 1):.0f} ms CPU "
                    f"in workers, model {1000 * summary.encode_s / max(clips, 1):.0f} ms wall "
                    f"(~{1000 * model_cpu / max(clips, 1):.0f} ms CPU on {torch.get_num_threads()} threads)")
        if summary.failures:
            rows.append("  failures: " + "; ".join(f.reason for f in summary.failures))
        del enc, job
        if args.ray:
            rows.append(ray_row(args, name, size, batch, sources, tmp / f"out-ray-{name}", e2e, steady))
    print(header)
    print("\n".join(rows))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
