"""One module per dashboard page: ``PAGE`` (its path and nav entry), ``layout(**url_args)`` and its callbacks.

The order of :data:`PAGES` is the order of the nav bar; a new page (``/runs``, ``/study``) is one more
module here with a ``PAGE`` dict.
"""

PAGES = ("overview", "pairs", "comembership", "projections", "image", "upload", "probes", "similarity", "jobs",
         "study", "runs", "detections")
