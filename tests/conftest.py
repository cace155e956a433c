"""Test-wide settings.

One torch thread: on a shared 2-core machine two OpenMP threads spin-waiting on each other
made tiny-model training about 12x slower (40 s vs 3.4 s, measured); tiny models gain
nothing from a second thread anyway.
"""

import torch

torch.set_num_threads(1)
