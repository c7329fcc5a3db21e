"""Media plane: RTP, G.711, DTMF (RFC 4733 and in-band), prompts and the media clock.

- ``rtp``: RTP header parse/build (RFC 3550).
- ``g711``: µ-law/A-law codecs and transcoding tables.
- ``telephone_event``: RFC 4733 DTMF events, encoder and de-duplicating receiver.
- ``inband_dtmf``: Goertzel-style DTMF detector and tone generator.
- ``prompt``: WAV prompts converted once to 20 ms G.711 frames; ``PromptLibrary`` cache.
- ``clock``: the one 20 ms media clock that paces every stream.
- ``engine``: the door calls use (``MediaEngine``: open a leg, play, stop, DTMF, bridge,
  last heard) and today's implementation, ``EmbeddedMediaEngine``.
- ``stream``: ``RtpSession``, the embedded engine's leg: its socket, latching and
  outgoing stream, composing the parts below.
- ``playback``: prompts and idle audio, a frame per tick.
- ``dtmf_sending`` / ``dtmf_detection``: DTMF out (RFC 4733 or tones) and in.
- ``relay``: one direction of a bridge, made by the engine (the hottest path).
- ``ports``: the RTP port range and binding.
- ``rtpengine``: ``RtpengineMediaEngine``, the door on Sipwise rtpengine (``media.engine:
  rtpengine``): callers' media and bridges through rtpengine, prompts and DTMF on embedded
  legs inside it; ``ng``: its control protocol (bencode over UDP, cookies, retransmission).
"""
