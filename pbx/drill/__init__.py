"""Planned disaster-recovery drills: drain one site, switch to another, report.

``drain``: what the drained site's server does (refuse new calls 503 so the front door
sends them elsewhere, start no callback try, give its callbacks up). ``runner``: the
``pbx drill`` command, which drives the sites through their HTTP APIs and reports.
"""
