"""Joint-model splitter: derives a human and an object variant of the V view tokens by attention over them.

The joint model ([HSEG]/[OSEG]) shares one mask decoder, so the splitter is what makes the human and the
object prompts differ. Single head, scaled by sqrt(hidden), attending across the V view tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ivlm_core.errors import InvalidInputError


class AttentionSplitter(nn.Module):
    """out_h = output_proj(softmax(q_h k^T / sqrt(hidden)) v); out_o the same with q_o (k, v shared)."""

    def __init__(self, dim: int = 256, hidden: int = 128) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.input_proj = nn.Linear(dim, hidden)
        self.query_human = nn.Linear(hidden, hidden)
        self.query_object = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.output_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,V,dim) view tokens -> (human (B,V,dim), object (B,V,dim))."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise InvalidInputError(f"splitter input must be (B,V,{self.dim}), got {tuple(x.shape)}")
        x = x.to(self.input_proj.weight.dtype)
        projected = self.input_proj(x)
        keys = self.key(projected)
        values = self.value(projected)
        outputs = []
        for query_layer in (self.query_human, self.query_object):
            scores = query_layer(projected) @ keys.transpose(-2, -1) / math.sqrt(self.hidden)
            outputs.append(self.output_proj(torch.softmax(scores, dim=-1) @ values))
        return outputs[0], outputs[1]
