"""The `quantscope` command line (`quantscope.cli.main` assembles it; one module per stage)."""

from quantscope.cli.main import app

__all__ = ["app"]
