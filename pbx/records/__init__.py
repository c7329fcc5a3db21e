"""Call-detail records (CDRs) and the queue log, built from the event stream and written in
the background. The door is ``CallRecorder``; one job per module:

- ``recorder.py``: subscribes to the telephony, IVR, router and callback-try events and joins
  each call's events into its record; decides when the record is written; notes calls in
  progress.
- ``interruptions.py``: calls a crash left in progress, recorded as ``interrupted`` by their
  site at its next start or by a surviving site; the places their waiting callers kept.
- ``call_state.py``: what is kept about a call in progress, and its live view for the API.
- ``dispositions.py``: how a call ended (``Disposition``), decided from its joined events.
- ``call_record.py``: the CDR of a finished call.
- ``queue_log.py``: the queue log's verbs (``QueueEvent``) and the line of each queue step.
- ``writer.py``: the background writer (batches, retries with backoff, bounded queue, metrics).
- ``times.py``: epoch seconds as the records store them.
"""

from pbx.records.call_state import LiveCallView, LiveState
from pbx.records.dispositions import Disposition
from pbx.records.queue_log import QueueEvent
from pbx.records.recorder import CallRecorder, DetailsSource

__all__ = ["CallRecorder", "DetailsSource", "Disposition", "LiveCallView", "LiveState", "QueueEvent"]
