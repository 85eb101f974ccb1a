"""plugbox-hello: a plugbox plugin packaged as a Python distribution.

plugbox never imports this package: discovery reads ``plugbox.toml`` beside this file, and the
engine runs ``main.py`` (the manifest's ``entry``) in its sandbox.
"""
