"""featscope: compare how CNN backbones see the same images.

The Python API mirrors the CLI and the REST API: open a :class:`Workspace` (it reads
``FEATSCOPE_*`` settings) and call its methods.
"""

__version__ = "0.1.0"

__all__ = ["Workspace", "Settings", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import featscope` stays cheap (no torch import) for the CLI's --help.
    if name == "Workspace":
        from featscope.workspace import Workspace

        return Workspace
    if name == "Settings":
        from featscope.config import Settings

        return Settings
    raise AttributeError(f"module 'featscope' has no attribute {name!r}")
