"""Calls: the back-to-back user agent (``manager``), the life of a leg (``call_leg``), the
applications that answer extensions (IVR, queue to agent, screen-pop) and the calls the server
places itself (``outbound``, ``callback_service``)."""
