"""The generated parts of docs/: command reference, datasets, recipes, layouts.

``python -m tools.docgen`` (``make docs``) writes them; ``python -m tools.docgen --check`` lists the
pages that differ from what the generator would write now (tests/docs/test_generated.py runs it).
Each page is built from the thing it describes (the Typer apps, the manifest catalog), so a new
command, option, dataset, recipe or layout appears on the next run without touching this code.
"""
