"""Media plane: RTP, G.711, DTMF (RFC 4733 and in-band), prompts and the media clock.

- ``rtp``: RTP header parse/build (RFC 3550).
- ``g711``: µ-law/A-law codecs and transcoding tables.
- ``telephone_event``: RFC 4733 DTMF events, encoder and de-duplicating receiver.
- ``inband_dtmf``: Goertzel-style DTMF detector and tone generator.
- ``prompt``: WAV prompts converted once to 20 ms G.711 frames; ``PromptLibrary`` cache.
- ``clock``: the one 20 ms media clock that paces every stream.
- ``stream``: ``RtpSession`` (one per call leg: playback, DTMF, symmetric RTP, relay)
  and ``PortAllocator``.
"""
