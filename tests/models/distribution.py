"""Compare a fast MC-dropout path with the library's own train-mode dropout, sample by sample statistics.

The two draw different masks (seeded per row vs torch's global generator), so only their distributions can
agree: per feature (one logit at one position), the mean and the standard deviation over N samples.
"""

from __future__ import annotations

import torch


def assert_same_distribution(fast: torch.Tensor, ref: torch.Tensor, *, max_z: float = 5.0,
                             std_band: tuple[float, float] = (0.9, 1.1)) -> None:
    """`fast` and `ref` are [N, ...] samples of the same features. Every feature must agree in mean within
    `max_z` standard errors of a difference of two means and in standard deviation within `std_band`
    (ratio fast / ref); a feature constant in `ref` (no dropout reaches it) must be the same constant.

    With a few hundred features and N in the thousands, correct code stays near |z| 3.5 and ratios within
    ±6 %; a dropout site that is missing, misplaced or at the wrong rate moves some feature far past both."""
    assert fast.shape == ref.shape, (fast.shape, ref.shape)
    n = fast.shape[0]
    fast, ref = fast.reshape(n, -1).double(), ref.reshape(n, -1).double()
    fast_mean, fast_std, ref_mean, ref_std = fast.mean(0), fast.std(0), ref.mean(0), ref.std(0)
    constant = ref_std == 0
    torch.testing.assert_close(fast_mean[constant], ref_mean[constant], rtol=1e-4, atol=1e-5)
    assert bool((fast_std[constant] == 0).all()), "a feature no dropout reaches in the library varies here"
    live = ~constant
    assert bool(live.any()), "the reference shows no dropout at all"
    z = (fast_mean[live] - ref_mean[live]).abs() / (ref_std[live] * (2.0 / n) ** 0.5)
    ratio = fast_std[live] / ref_std[live]
    assert z.max().item() < max_z, f"means differ: max |z| {z.max().item():.1f}"
    low, high = std_band
    assert low < ratio.min().item() and ratio.max().item() < high, (
        f"standard deviations differ: ratio in [{ratio.min().item():.3f}, {ratio.max().item():.3f}]")
