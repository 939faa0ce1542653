"""torchvision's resize-and-normalise transform, telling recorded candidates their scale.

The detectors select their detections in the resized image the network sees;
``GeneralizedRCNNTransform.postprocess`` then maps the final ``boxes`` back to the input
image's pixels. :class:`CandidateScaleTransform` does the same and, for a result holding
``"candidates"`` (see :func:`eiou.scoring.record_candidates`), adds ``candidates["scale"]``:
the ``(4,)`` float32 factors ``(sx, sy, sx, sy)`` that postprocessing multiplied the boxes
by. ``candidates["boxes"] * scale`` after selection is then bit for bit what the detector
returned, so rescoring the candidates reproduces its detections exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

__all__ = ["CandidateScaleTransform"]


class CandidateScaleTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose ``postprocess`` records the candidates' scale."""

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform) -> CandidateScaleTransform:
        """A copy of ``transform`` (sizes, mean, std, divisibility) of this class."""
        return cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            transform.size_divisible,
            transform.fixed_size,
            _skip_resize=transform._skip_resize,
        )

    def postprocess(  # type: ignore[override]
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for pred, size, original in zip(result, image_shapes, original_image_sizes, strict=True):
            candidates = pred.get("candidates")
            if isinstance(candidates, dict):
                ones = torch.ones(1, 4, device=pred["boxes"].device)
                # the very factors resize_boxes multiplied the final boxes by
                candidates["scale"] = resize_boxes(ones, size, original)[0]
        return result
