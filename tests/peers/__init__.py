"""Drivers for the real SIP peers the integration tests run against the server.

- :mod:`peers.sipp`: SIPp runs (built-in and custom scenarios), parsed statistics.
- :mod:`peers.baresip`: a baresip softphone per account, scripted over ``ctrl_tcp``.
- :mod:`peers.pyvoip_phone`: a pyVoIP phone in a subprocess that records what it receives.
- :mod:`peers.raw`: hand-built SIP over UDP/TCP (torture messages, digest REGISTER).
- :mod:`peers.procs`: free ports, process-group shutdown, "peer unavailable" handling.

Each driver starts its peer in its own process group and stops it by that group's id.
"""
