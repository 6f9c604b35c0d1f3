"""A training process for tests/test_alerting_e2e.py, steered through its standard input.

``python tests/alert_driver.py CONFIG_JSON ALGORITHM RUN_ID`` initialises otel-rl with the JSON config, starts the
run and records an iteration every 0.2 s, then prints one JSON line (``instance``: its address on the pull path,
its ``service.instance.id`` on the push path) and obeys one command a line, answering ``ok <command>`` once done:

* ``stall`` / ``resume``: stop / restart recording iterations (the run stays active);
* ``fail``: the run fails (``record_training_failed``, error type training_error);
* ``nan``: a NaN policy loss, which otel-rl drops and counts;
* ``start RUN_ID``: start another run of the same algorithm in this process.

End of input shuts telemetry down and exits.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import otel_rl


def main() -> None:
    config, algorithm, run_id = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    telemetry = otel_rl.init_telemetry(config)
    iterating = threading.Event()
    stop = threading.Event()
    state = {"run_id": run_id, "iteration": 0}
    lock = threading.Lock()

    def iterate() -> None:
        while not stop.wait(0.2):
            if iterating.is_set():
                with lock:
                    state["iteration"] += 1
                    otel_rl.record_training_iteration(algorithm, state["iteration"], state["run_id"])

    otel_rl.record_training_start(algorithm, run_id)
    iterating.set()
    ticker = threading.Thread(target=iterate, daemon=True)
    ticker.start()
    if "otlp" in config.get("exporters", ()):
        instance = telemetry.resource.attributes["service.instance.id"]
    else:
        instance = f"127.0.0.1:{telemetry.prometheus_port}"
    print(json.dumps({"instance": instance, "host": socket.gethostname()}), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "stall":
            iterating.clear()
        elif command == "resume":
            iterating.set()
        elif command == "fail":
            iterating.clear()
            otel_rl.record_training_failed(algorithm, "training_error")
        elif command == "nan":
            otel_rl.record_loss_metrics(algorithm, policy_loss=float("nan"))
        elif command == "start":
            with lock:
                state["run_id"] = args[0]
                otel_rl.record_training_start(algorithm, args[0])
            iterating.set()
        print(f"ok {command}", flush=True)
    stop.set()
    ticker.join()
    telemetry.shutdown()


if __name__ == "__main__":
    main()
