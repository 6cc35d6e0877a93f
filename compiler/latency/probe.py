"""The machine's speed right now: a fixed reference network timed beside every measurement.

A shared virtual machine does not run at one speed. On the 2-core development machine the same
ONNX Runtime model, timed by its thread's CPU time with nothing else of ours running, came out
in a fast phase or in phases 20-40% slower that last seconds (the host's other tenants, not
load inside the machine: the CPU time of the thread includes them and the load average does not
show them). Timed 25 times two seconds apart, five test models of `benchmarks/latency_predictor.py`
varied by 1.32-1.54x (max/min); of those timings, the ones taken while a small reference network
ran within 3% of its fastest varied by 1.07-1.25x.

So every batch of timed runs is bracketed by short timings of `PROBE_SPEC`, and a batch whose
probe, just before or just after it, ran more than `SLOW_TOLERANCE` above the fastest probe of
the process is taken in a slow phase: `predictor._measure_graph` starts batches when the probe
says the machine is fast (waiting at most `predictor.MAX_WAIT_S` per measurement) and keeps the
batches of fast phases. On that machine, in an hour when fast phases were rare (a probe every
50 ms for 20 s was within 6% of the fastest for 15% of the time), back-to-back measurements of
66 kernels agreed within 10% for 3-41% of the kernels (median difference 15-51%) without the
probe and for 65-82% (median 3.3-5.6%) with it. The probe only classifies batches; it never
rescales a time (how much a slow phase slows a kernel depends on the kernel: the correlation of
the probe with the five models above was 0.4-0.8).
"""

from __future__ import annotations

import functools
import time

PROBE_SPEC = {"type": "staged", "name": "speed_probe",
              "stem": [{"type": "conv", "out_channels": 32, "kernel": 3, "stride": 2}],
              "stages": [{"block": {"type": "basic"}, "depth": 1, "out_channels": 64, "stride": 2},
                         {"block": {"type": "bottleneck"}, "depth": 1, "out_channels": 128, "stride": 2}]}
"""The reference network: 3x3 and 1x1 convolutions, compute- and memory-bound, about 0.3 ms at
`PROBE_SIZE` on one core of the development machine."""
PROBE_SIZE = (64, 64)
PROBE_RUNS = 9
"""Timed runs per probe (the median is its time): about 3 ms in all."""
SLOW_TOLERANCE = 0.06
"""A probe more than this share above the process's fastest marks a slow phase."""
SPELL_WAITS = 3
"""Waits in a row that ran out without a fast phase, after which measurements stop waiting for
one (a slow spell) until a probe is fast again. On the development machine fast phases were at
times absent for minutes: a search's 36 design kernels then took 0.6-4 s each, nearly all of it
waiting out `MAX_WAIT_S`, with 35 of the 36 kept from slow phases all the same."""


def is_fast(ratio: float) -> bool:
    """Whether a probe ratio (`SpeedProbe.ratio`) says the machine is in a fast phase."""
    return ratio <= 1 + SLOW_TOLERANCE


class SpeedProbe:
    """Times `PROBE_SPEC` on ONNX Runtime's CPU provider with the measurement's threads and clock,
    and remembers the fastest probe of the process."""

    def __init__(self, threads: int, clock: str):
        from archspec import validate
        from archspec.compiler import lower
        from archspec.compiler.onnx_writer import graph_to_onnx
        from archspec.compiler.runtime import bind_random_input, create_session, timer_for

        graph = lower(validate(PROBE_SPEC))
        self.session = create_session(graph_to_onnx(graph, PROBE_SIZE).SerializeToString(), provider="cpu",
                                      threads=threads)
        self.timer = timer_for(clock, threads)
        self.binding = bind_random_input(self.session, (1, 3, *PROBE_SIZE))  # a probe times the runs alone
        self.session.run_with_iobinding(self.binding)
        self.fastest = min(self.time_ms() for _ in range(3))
        self.waits_out = 0
        """Waits in a row that ran out (`SPELL_WAITS`)."""

    def time_ms(self) -> float:
        """Median ms of `PROBE_RUNS` runs."""
        samples = []
        for _ in range(PROBE_RUNS):
            start = self.timer()
            self.session.run_with_iobinding(self.binding)
            samples.append(self.timer() - start)
        return sorted(samples)[len(samples) // 2] * 1e3

    def ratio(self) -> float:
        """This probe's time over the fastest probe so far (at least 1)."""
        ms = self.time_ms()
        self.fastest = min(self.fastest, ms)
        return ms / self.fastest

    def wait_fast(self, deadline: float) -> float:
        """Probe until the machine is in a fast phase (ratio within `SLOW_TOLERANCE`) or
        `time.perf_counter()` passes `deadline`; returns the last ratio. In a slow spell (the
        last `SPELL_WAITS` waits ran out) it probes once, without waiting."""
        if self.waits_out >= SPELL_WAITS:
            deadline = 0.0
        probes = 0
        while True:
            ratio = self.ratio()
            probes += 1
            if is_fast(ratio):
                self.waits_out = 0
                return ratio
            if time.perf_counter() >= deadline:
                self.waits_out += probes > 1  # it waited, for nothing
                return ratio


@functools.lru_cache(maxsize=8)
def speed_probe(threads: int, clock: str) -> SpeedProbe:
    """The process's probe for `threads` and `clock` (built once)."""
    return SpeedProbe(threads, clock)
