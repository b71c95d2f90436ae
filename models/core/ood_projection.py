"""A learned linear map of the served model's pooled features onto a teacher's embedding space, for the
hidden-state part of an OOD detector (models/core/ood.py).

Why: fine-tuning for one task collapses what a pretrained encoder knew about genre and topic (sentiment's MiniLM
was trained as a sentence-embedding model; after fine-tuning its features place a sentence of Austen near a
one-line review). The fit (training/core/ood_fit.py) embeds training texts once with a sentence-embedding model
(the teacher: sentiment's base model; for the other tasks the same MiniLM, a second opinion on English text) and
fits a ridge regression from the served features to those embeddings; serving applies it to the features it
already has, so the detector measures distances in (an estimate of) the teacher's space at the cost of one
[d_in, d_out] product, with no second model.

Tensors (saved with the detector's other statistics): "proj_weight" [d_in, d_out], "proj_in_mean" [d_in],
"proj_out_mean" [d_out]. `project` maps L2-normalised features [B, d_in] to L2-normalised [B, d_out]:
normalise((x − in_mean) @ weight + out_mean). A detector without these tensors scores its features unmapped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

TENSORS = ("proj_weight", "proj_in_mean", "proj_out_mean")


def fit_projection(features: torch.Tensor, teacher: torch.Tensor, ridge: float) -> dict[str, torch.Tensor]:
    """Ridge regression of `teacher` [N, d_out] on `features` [N, d_in] (both rows of the same N training inputs),
    in float64. `ridge` is relative: the penalty is ridge × the mean eigenvalue of the centred features' Gram
    matrix, so one setting means the same for any N and scale. ValueError on mismatched or tiny inputs."""
    if features.ndim != 2 or teacher.ndim != 2 or features.shape[0] != teacher.shape[0] or features.shape[0] < 2:
        raise ValueError(f"need [N >= 2, d] features and teacher rows, got {tuple(features.shape)} and "
                         f"{tuple(teacher.shape)}")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    x, y = features.double(), teacher.double()
    in_mean, out_mean = x.mean(dim=0), y.mean(dim=0)
    centred = x - in_mean
    gram = centred.T @ centred
    penalty = ridge * float(gram.diagonal().mean()) or ridge
    weight = torch.linalg.solve(gram + penalty * torch.eye(x.shape[1], dtype=x.dtype), centred.T @ (y - out_mean))
    return {"proj_weight": weight.float().contiguous(), "proj_in_mean": in_mean.float(),
            "proj_out_mean": out_mean.float()}


def project(tensors: Mapping[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """`features` [B, d_in] mapped onto the teacher's space and L2-normalised (module docstring); unchanged when
    `tensors` hold no projection."""
    if "proj_weight" not in tensors:
        return features
    x = features.float()
    mapped = (x - tensors["proj_in_mean"].to(x.device)) @ tensors["proj_weight"].to(x.device)
    return torch.nn.functional.normalize(mapped + tensors["proj_out_mean"].to(x.device), dim=-1)


def input_dim(tensors: Mapping[str, torch.Tensor], default: int) -> int:
    """The feature dimension a detector with these tensors takes: the projection's input, else `default`."""
    return int(tensors["proj_weight"].shape[0]) if "proj_weight" in tensors else default


def problems(tensors: Mapping[str, torch.Tensor], output_dim: int) -> list[str]:
    """What is wrong with the projection tensors among `tensors` (none: fine), given the dimension the feature
    statistics expect (`output_dim`)."""
    present = [n for n in TENSORS if n in tensors]
    if not present:
        return []
    if len(present) != len(TENSORS):
        return [f"projection tensors {present} without the rest of {list(TENSORS)}"]
    weight, in_mean, out_mean = (tensors[n] for n in TENSORS)
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() and bool(torch.isfinite(t).all())
               for t in (weight, in_mean, out_mean)):
        return ["projection tensors must be finite floating-point tensors"]
    if weight.ndim != 2 or tuple(in_mean.shape) != (weight.shape[0],) or tuple(out_mean.shape) != (weight.shape[1],):
        return [f"projection shapes do not match: weight {tuple(weight.shape)}, in_mean {tuple(in_mean.shape)}, "
                f"out_mean {tuple(out_mean.shape)}"]
    if weight.shape[1] != output_dim:
        return [f"projection maps to {weight.shape[1]} dimensions, the statistics have {output_dim}"]
    return []
