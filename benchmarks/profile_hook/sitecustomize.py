"""Profiles some steps of a training program that runs as its own process: Python imports this module at start
when its folder is on PYTHONPATH, which is how `benchmarks.profile_vs_official` starts NVIDIA's `train.py` and our
`jobs.train`, each unchanged.

STYLEGAN_PROFILE="MARK,SKIP,STEPS,TRACE": MARK is a `record_function` range each step of the program's loop enters
once (NVIDIA's loop: data_fetch; ours: Gmain). At its SKIP+1-th entry torch.profiler starts (CPU ops and CUDA
kernels, the GPU drained first); STEPS entries later it stops, writes a Chrome trace to TRACE (a .json.gz, whole or
not at all) and ends the process with exit 0: nothing after the window is needed. STYLEGAN_PROFILE_AFTER=PATH holds
the window back until PATH exists, so that a program compiled beside other work is profiled alone on the GPU.
On a GPU the window's memory goes beside the trace (TRACE with .memory.json for .json.gz): what was allocated at its
start, and the peak allocated from each range's entry to the next range's, in the order the program entered them.
Without STYLEGAN_PROFILE this module does nothing.
"""

import os

if os.environ.get("STYLEGAN_PROFILE"):
    import json
    import sys
    import time

    import torch
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    _mark, _skip, _steps, _trace = os.environ["STYLEGAN_PROFILE"].split(",")
    _first, _last = int(_skip) + 1, int(_skip) + int(_steps) + 1
    _state: dict = {"seen": 0}
    _memory = _trace.removesuffix(".json.gz") + ".memory.json"
    _enter = record_function.__enter__

    def _drain() -> None:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def _range_peak(name: str | None) -> None:
        # the caching allocator counts on the host, as ops are queued: a range's peak needs no wait for the GPU
        ranges = _state["memory"]["ranges"]
        ranges[-1][1] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        if name is not None:
            ranges.append([name, 0])

    def _open_window() -> None:
        after = os.environ.get("STYLEGAN_PROFILE_AFTER")
        while after and not os.path.exists(after):
            time.sleep(1)
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])]
        _drain()
        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
            _state["memory"] = {"start": torch.cuda.memory_allocated(), "ranges": [[_mark, 0]]}
        _state["prof"], _state["start"] = profile(activities=activities), time.perf_counter()
        _state["prof"].__enter__()

    def _close_window() -> None:
        _drain()
        wall = time.perf_counter() - _state["start"]
        _state["prof"].__exit__(None, None, None)
        if "memory" in _state:
            _range_peak(None)
            with open(_memory + ".partial", "w") as f:
                json.dump(_state["memory"], f)
            os.replace(_memory + ".partial", _memory)
        partial = _trace + ".partial.json.gz"
        _state["prof"].export_chrome_trace(partial)
        os.replace(partial, _trace)
        print(f"profile: steps {_first}-{_last - 1} of {_mark} in {wall:.3f} s; trace {_trace}", flush=True)
        sys.stderr.flush()
        os._exit(0)  # the window is all that is measured; no snapshot, no clean-up to wait for

    def _counting_enter(self):  # the class keeps its identity, so torch.compile still knows it
        if self.name == _mark:
            _state["seen"] += 1
        if self.name == _mark and _state["seen"] == _first:
            _open_window()
        elif self.name == _mark and _state["seen"] == _last:
            _close_window()
        elif "memory" in _state:  # inside the window
            _range_peak(self.name)
        return _enter(self)

    record_function.__enter__ = _counting_enter
