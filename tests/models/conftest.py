"""One intra-op thread for the model tests.

Their tensors are tiny: threads gain nothing, and on a shared 2-core box a busy neighbour turns intra-op
spin-waiting into 10-100x slowdowns (measured: a tiny Marian beam search, 0.7 s on one thread, 14 s on two).
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
