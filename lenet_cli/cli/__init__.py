"""The command line: the only package that imports Typer or Rich. `app.py` holds the app and its error map."""
