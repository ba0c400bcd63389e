"""``featscope demo`` (``make demo``): the study reproduced on data featscope generates, served in the dashboard.

Public names: :data:`~featscope.demo.profiles.PROFILES`, :func:`~featscope.demo.runner.run_demo`,
:func:`~featscope.demo.study.study_findings`.

The pipeline (:mod:`.pipeline`) is a list of stages of worker jobs: the study's synthetic sets, the
classification pre-training run and a detection run that starts from it (as the study's detectors do), extraction of Conv4/Conv5 and the
detection head's taps, every analysis the dashboard shows, activation and mask-out maps of a few images,
and detection and classification fine-tuning. :mod:`.runner` starts the server (or a bare worker), submits
each stage once the stage it needs has finished, prints the jobs' progress, and writes what it did to
``<data dir>/demo.json`` (the manifest the ``/study`` page reads). Every job is keyed by its content, so a
second run is a cache hit from end to end. :mod:`.study` turns the cached results into the study's
findings with a computed verdict each (:mod:`featscope.analysis.findings`).
"""
