"""Every terminal rendering (rich), one module per stage: the CLI's commands call a library function
and hand its record to one of these views. Nothing outside `cli/` imports them.
"""
