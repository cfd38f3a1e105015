"""The HTTP routes of `mrhd serve` (Starlette): the page, its static files, and a small JSON API.

    GET  /                                  the page
    GET  /api/info                          model, limits, counters
    GET  /api/videos                        the --videos folder listing
    POST /api/videos?name=FILE              upload (the raw bytes as the body)
    GET  /api/videos/<id>                   one video, probed (folder videos are checked here)
    GET  /api/videos/<id>/file              the video, with HTTP range requests (the player seeks)
    GET  /api/videos/<id>/thumbs/<clip>.jpg the frame in the middle of 2-s clip <clip>
    POST /api/jobs                          {"video": id, "queries": [...]} -> a job to poll
    GET  /api/jobs/<id>                     its state, progress and, when done, results
    GET  /api/jobs/<id>/predictions.json    the predictions, as `mrhd predict --out` writes them

Every error is JSON ``{"error": "one line"}`` with a 4xx status for what the user can fix and 500
for a bug (the traceback goes to the server's log, never to the page); the server keeps serving.
"""

from __future__ import annotations

import json
import mimetypes
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mrhd.errors import MrhdError
from mrhd.inference.results import CLIP_LEN, predictions_text
from mrhd.serve.library import UploadTooLarge, VideoNotFound
from mrhd.serve.service import MomentService, internal_error
from mrhd.serve.thumbnails import ThumbnailCache

NO_STORE = {"Cache-Control": "no-store"}


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def build_app(service: MomentService) -> Starlette:
    library = service.library
    thumbs = ThumbnailCache()
    static = resources.files("mrhd.serve") / "static"

    async def page(request: Request) -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers=NO_STORE)

    async def info(request: Request) -> Response:
        return JSONResponse(service.info(), headers=NO_STORE)

    async def list_videos(request: Request) -> Response:
        videos = await run_in_threadpool(library.folder_videos)
        return JSONResponse({"videos": [v.to_json() for v in videos]}, headers=NO_STORE)

    async def upload(request: Request) -> Response:
        name = request.query_params.get("name") or "video"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > library.max_upload_bytes:
            raise UploadTooLarge(library.too_large_message(name))
        target = await run_in_threadpool(library.begin_upload, name)
        try:
            async for chunk in request.stream():
                target.write(chunk)
            video = await run_in_threadpool(target.finish)
        except BaseException:
            target.abort()
            raise
        return JSONResponse(video.to_json(), status_code=201, headers=NO_STORE)

    async def video(request: Request) -> Response:
        found = await run_in_threadpool(library.usable, request.path_params["video_id"])
        return JSONResponse(found.to_json(), headers=NO_STORE)

    async def video_file(request: Request) -> Response:
        found = library.get(request.path_params["video_id"])
        media = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        return FileResponse(found.path, media_type=media, headers={"Cache-Control": "private, no-cache"})

    async def thumbnail(request: Request) -> Response:
        found = library.get(request.path_params["video_id"])
        clip = request.path_params["clip"]
        if found.duration is not None and clip * CLIP_LEN >= found.duration + CLIP_LEN:
            raise VideoNotFound(f"{found.name} has no clip {clip}")
        t = (clip + 0.5) * CLIP_LEN
        if found.duration is not None:
            t = min(t, max(found.duration - 0.05, 0.0))
        data = await run_in_threadpool(thumbs.get, found.id, clip, found.path, t)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def submit(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise MrhdError("the request is not JSON; send {\"video\": ID, \"queries\": [...]}") from None
        if not isinstance(body, dict) or not isinstance(body.get("video"), str):
            raise MrhdError("no video chosen; upload a video or pick one from the folder first")
        job = await run_in_threadpool(service.submit, body["video"], body.get("queries"))
        return JSONResponse(job.to_json(), status_code=202, headers=NO_STORE)

    def _job(request: Request):
        job = service.jobs.get(request.path_params["job_id"])
        if job is None:
            raise VideoNotFound("no such job on this server (it restarted?); submit the queries again")
        return job

    async def job_state(request: Request) -> Response:
        return JSONResponse(_job(request).to_json(), headers=NO_STORE)

    async def predictions(request: Request) -> Response:
        job = _job(request)
        if job.state != "done":
            raise MrhdError("these queries have no results yet")
        text = predictions_text(job.predictions)   # what `mrhd predict --out x.json` writes
        filename = f"{job.video.vid}.moments.json"
        return Response(text, media_type="application/json",
                        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'})

    async def user_error(request: Request, err: MrhdError) -> Response:
        status = 404 if isinstance(err, VideoNotFound) else 413 if isinstance(err, UploadTooLarge) else 400
        return _error(str(err), status)

    async def http_error(request: Request, err: HTTPException) -> Response:
        return _error(err.detail if isinstance(err.detail, str) else "bad request", err.status_code)

    async def server_error(request: Request, err: Exception) -> Response:
        return _error(internal_error(err), 500)   # uvicorn logs the traceback

    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/videos", list_videos, methods=["GET"]),
        Route("/api/videos", upload, methods=["POST"]),
        Route("/api/videos/{video_id:str}", video),
        Route("/api/videos/{video_id:str}/file", video_file, methods=["GET", "HEAD"]),
        Route("/api/videos/{video_id:str}/thumbs/{clip:int}.jpg", thumbnail),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job_id:str}", job_state),
        Route("/api/jobs/{job_id:str}/predictions.json", predictions),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={MrhdError: user_error, HTTPException: http_error,
                                                        Exception: server_error})
