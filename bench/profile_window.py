"""Run a module (``-m pbx serve ...``) with cProfile switched on and off by signals.

``python bench/profile_window.py OUT -m pbx serve ...``: SIGUSR1 starts profiling the main
thread (where the event loop runs), SIGUSR2 stops it and writes the statistics to OUT. So a
bench profiles only the window it cares about (the calls), not start-up, the agents'
registrations or shutdown, which ``python -m cProfile`` counts too.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: profile_window.py OUT -m MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[3]
    profiler = cProfile.Profile()

    def start(_signum, _frame) -> None:
        profiler.enable()

    def stop(_signum, _frame) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
