"""Reading and validating configuration files, shared by every package that has one.

``settings.located_yaml`` parses YAML and remembers the line of every key;
``settings.validation`` runs pydantic models over it and turns each failure into a
``FILE:LINE: key: reason`` problem. It imports nothing of the server's own packages, so
``pbx``, ``ivr`` and ``router`` may all use it.
"""
