"""Background jobs: the catalog's job rows (:mod:`.jobs`), the Huey queue (:mod:`.queue`), the task that
runs them (:mod:`.tasks`), dead-worker recovery (:mod:`.reaper`) and the ``featscope worker``/``jobs`` commands."""
