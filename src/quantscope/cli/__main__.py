"""`python -m quantscope.cli`."""

from quantscope.cli import app

app()
