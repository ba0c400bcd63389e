"""Widgets shared by the pages: layout pieces, figure cards with downloads, job progress, the A/B picker,
thumbnails. Each is a function returning Dash components; the few callbacks they need live in the module
that builds them (see :mod:`featscope.frontend.wiring`)."""
