"""``mpft serve``: an HTTP API and a web page over :class:`mpft.detector.Detector`.

Build the app with :func:`create_app` (a loader callable + :class:`ServeSettings`) and run it
with any ASGI server; ``mpft serve`` runs it with uvicorn.
"""

from mpft.serve.app import create_app
from mpft.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
