"""Test-wide settings.

Ray start-up: Ray waits 30 s by default for the GCS to publish its port; a loaded machine
(another CPU-heavy job beside the suite) can need longer. Subprocesses inherit the setting.

One torch thread: on a shared 2-core machine two OpenMP threads spin-waiting on each other
made tiny-model training about 12x slower (40 s vs 3.4 s, measured); tiny models gain
nothing from a second thread anyway.
"""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "180")
