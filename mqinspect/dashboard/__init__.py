"""`mqinspect top` and `mqinspect replay` on a terminal: the Textual app that draws the snapshots
mqinspect.sampling produces (app.py, row_table.py), and runner.py, which runs it live or from a recording."""
