"""What the Hydra entry points (``camlab-train``, ``camlab-eval``) run around their work.

- :mod:`camlab.runtime.app`: ``run_app`` (how every entry point runs its body) and ``describe_error`` (bad input
  as one line naming the config key).
- :mod:`camlab.runtime.config`: instantiating config groups, the checkpoint to start from, where an argument
  is set in the config.
- :mod:`camlab.runtime.ddp`: the command Lightning's DDP launcher runs for each child process; clean-up.
- :mod:`camlab.runtime.trackers`: the W&B run's identity and its end.
- :mod:`camlab.runtime.process`: process-wide settings (glibc malloc, matmul precision, quieter logs).
- :mod:`camlab.runtime.summary`: the end-of-run summary.
- :mod:`camlab.runtime.outputs`: the run dir is checked writable before Hydra writes it (a Hydra callback).

The library (models, data, metrics) does not import this package: its errors (:mod:`camlab.errors`) speak in
argument names, and this package adds the config keys.
"""
