"""`mrhd serve`: a web page on a model that stays warm.

One process loads the grounding model and its encoders once; the page uploads a video (or picks one
from a folder given on the command line), sends queries, and shows the ranked moments, the saliency
curve and thumbnails of the top clips, each linked to the video player.

Pieces: :mod:`.library` (the videos a page may use: uploads and the folder), :mod:`.jobs` (one
request's progress and result), :mod:`.service` (the warm predictor and its two lanes: feature
extraction and queries), :mod:`.thumbnails`, :mod:`.app` (the HTTP routes), :mod:`.server` (binds the
socket and runs uvicorn), ``static/`` (the page). Why a page of our own rather than gradio:
docs/serve.md.
"""
