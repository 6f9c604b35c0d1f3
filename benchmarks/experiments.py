"""Hot-path experiments: python benchmarks/experiments.py

Each experiment monkeypatches a candidate change into otel_rl *in this process only* and times it against the
unpatched code, interleaved, median of repetitions. Nothing here changes the package; the numbers back the
proposals in docs/performance.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import run  # noqa: E402  (the suite's helpers)
import results_dicts  # noqa: E402

REPS = 9


def show(title: str, times: dict[str, list[float]], base: str, scale: float = 1e6, unit: str = "us") -> None:
    print(title)
    for name, values in times.items():
        ratio = run.median(run.ratios(times, name, base))
        print(f"  {name:<58} {run.median(values) * scale:10.2f} {unit}  {ratio:.3f}x")


def timed(func, n: int):
    def go() -> float:
        started = time.perf_counter()
        for _ in range(n):
            func()
        return (time.perf_counter() - started) / n
    return go


def exp_recording() -> None:
    """_never_raises wrapper and the gauge lock on the per-iteration sequence."""
    import otel_rl
    from otel_rl._internal import store

    names = ("record_training_iteration", "record_episode_metrics", "record_performance_metrics",
             "record_loss_metrics", "record_environment_steps", "record_episode")

    class Unwrapped:
        pass

    for name in names:
        setattr(Unwrapped, name, staticmethod(getattr(otel_rl, name).__wrapped__))
    current = run.iteration_loop(otel_rl)
    unwrapped = run.iteration_loop(Unwrapped)
    original_set = store.Gauge.set

    def set_without_lock_for_known_keys(self, key, value):
        # A dict store of an existing key is atomic under the GIL; only new keys need the lock (limit check).
        if type(value) is float and value - value == 0.0:
            series = self._series
            if key in series:
                series[key] = value
                return
        original_set(self, key, value)

    def patched(n: int) -> float:
        store.Gauge.set = set_without_lock_for_known_keys
        try:
            return unwrapped(n)
        finally:
            store.Gauge.set = original_set

    for f in (current, unwrapped, patched):
        f(200)
    n = 3000
    times = run.interleave({"current": lambda: current(n), "without _never_raises wrapper": lambda: unwrapped(n),
                            "... and lock-free Gauge.set of known keys": lambda: patched(n)}, REPS)
    show("[recording] one seed iteration (31 updates)", times, "current")


def exp_train_step() -> None:
    """Cost split of @train_step, and recording only this iteration's episodes from hist_stats."""
    import otel_rl
    from otel_rl._internal import decorators
    from otel_rl._internal.results import parse_result

    original = decorators.parse_result

    def trimmed(result):
        parsed = original(result)
        this_iter = result.get("episodes_this_iter", result.get("sampler_results", {}).get("episodes_this_iter"))
        if isinstance(this_iter, int) and parsed.episode_rewards:
            parsed.episode_rewards = parsed.episode_rewards[-this_iter:] if this_iter else []
            parsed.episode_lengths = parsed.episode_lengths[-this_iter:] if this_iter else []
        return parsed

    for label, result in (("old nested", results_dicts.old_api_nested()),
                          ("old flattened", results_dicts.old_api_flat()), ("new", results_dicts.new_api())):
        step = otel_rl.train_step(algorithm="PPO", run_id="x")(lambda: result)
        bare = timed(lambda: result, 200)
        current = timed(step, 200)

        def with_trim() -> float:
            decorators.parse_result = trimmed
            try:
                return current()
            finally:
                decorators.parse_result = original

        parse_only = timed(lambda: parse_result(result), 200)
        times = run.interleave({"bare": bare, "current": current, "hist_stats trimmed to episodes_this_iter":
                                with_trim, "parse_result alone": parse_only}, REPS)
        show(f"[train_step] {label}", times, "current")


def exp_vector() -> None:
    """A slimmer RecordVectorEpisodeMetrics.step (fewer numpy calls per step)."""
    import gymnasium as gym
    import numpy as np

    from otel_rl.integrations.gymnasium import RecordVectorEpisodeMetrics

    def slim_step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        np.add(self._returns, rewards, out=self._returns)
        self._lengths += 1
        self._pending += self.num_envs - self._resetting
        self._resetting = 0
        if terminations.any() or truncations.any():
            self._finish(np.flatnonzero(terminations | truncations), infos)
        elif self._pending >= self._flush_every:
            self.flush()
        return obs, rewards, terminations, truncations, infos

    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(3000, 8))
    envs = {"bare": gym.make_vec("CartPole-v1", num_envs=8),
            "current wrapper": RecordVectorEpisodeMetrics(gym.make_vec("CartPole-v1", num_envs=8)),
            "slim step": RecordVectorEpisodeMetrics(gym.make_vec("CartPole-v1", num_envs=8))}
    envs["slim step"].step = slim_step.__get__(envs["slim step"])

    def loop(env):
        env.reset(seed=0)

        def go() -> float:
            started = time.perf_counter()
            for row in actions:
                env.step(row)
            return (time.perf_counter() - started) / len(actions)
        return go

    times = run.interleave({k: loop(v) for k, v in envs.items()}, REPS)
    show("[gymnasium] make_vec CartPole x8 step", times, "bare")


def exp_export_profile() -> None:
    """Where an OTLP export of 10k series spends its CPU."""
    import cProfile
    import io
    import pstats

    import otel_rl
    from otel_rl.testing import reset

    sink, port = run.start_sink()
    try:
        reset()
        handle = otel_rl.init_telemetry(run.otlp_config(port, 3600.0, limit=10000))
        run.populate(otel_rl, 10000)
        handle.force_flush(30.0)
        reader = handle.readers[-1]
        profile = cProfile.Profile()
        profile.enable()
        reader.collect(timeout_millis=30_000)  # collect + export on this thread, so the profile sees it
        profile.disable()
        handle.shutdown()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
        print("[export] cProfile of one collect+export, 10k series (cumulative)")
        print("\n".join(out.getvalue().splitlines()[:45]))
    finally:
        sink.terminate()
        reset()


if __name__ == "__main__":
    import logging

    logging.getLogger("opentelemetry").setLevel(60)
    wanted = sys.argv[1:] or ["recording", "train_step", "vector", "export", "exemplar"]
    for name in wanted:
        if name == "exemplar":
            continue  # run at the end of the module
        {"recording": exp_recording, "train_step": exp_train_step, "vector": exp_vector,
         "export": exp_export_profile}[name]()


def exp_exemplar_filter() -> None:
    """Export CPU for 10k series with the MeterProvider's exemplar filter off (bridge.Bridge.__init__)."""
    import functools

    import otel_rl
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOffExemplarFilter

    from otel_rl._internal import bridge
    from otel_rl.testing import reset

    sink, port = run.start_sink()
    results: dict[str, list[float]] = {"current": [], "exemplar_filter=AlwaysOff": []}
    try:
        for rep in range(6):
            for name in (list(results) if rep % 2 == 0 else list(results)[::-1]):
                bridge.MeterProvider = (functools.partial(MeterProvider, exemplar_filter=AlwaysOffExemplarFilter())
                                        if name != "current" else MeterProvider)
                reset()
                handle = otel_rl.init_telemetry(run.otlp_config(port, 3600.0, limit=10000))
                run.populate(otel_rl, 10000)
                handle.force_flush(30.0)
                started = time.process_time()
                handle.force_flush(30.0)
                results[name].append(time.process_time() - started)
                handle.shutdown()
    finally:
        bridge.MeterProvider = MeterProvider
        sink.terminate()
        reset()
    show("[export] CPU per OTLP export, 10k series", results, "current", 1e3, "ms")


if __name__ == "__main__" and ("exemplar" in sys.argv[1:] or not sys.argv[1:]):
    exp_exemplar_filter()
