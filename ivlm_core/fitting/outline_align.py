"""The mask term as the misfit of the object's visible outline to the mask's outline: smooth and pixel-accurate.

Why: the fit's smooth mask term compares blurred silhouettes on a coarse grid, and its minimum sits a few
degrees from the pose the exact mask score (``exact_mask``) prefers; the exact score has no gradient, and a
random search does not find its valley, about a pixel of outline wide (docs/fit_recovery.md, tenth
session). Measured along the outline instead, the same quantity is smooth in the pose: the area between the
object's outline moved out by one shared offset (the mask too wide or too narrow) and the mask's outline is
the line integral of their distance; divided by the mask's area it is about ``1 - IoU``. A Huber kernel makes
it quadratic (smaller) within a fraction of a pixel, where the mask's pixel steps are as large as the misfit,
so that a least-squares fit averages them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ivlm_core.fitting.silhouette import project_points
from ivlm_core.fitting.zbuffer import render_depth
from ivlm_core.geometry.raster import project_pinhole

_Z_NEAR = 1e-4  # metres: render_depth does not draw faces with a corner closer than this
_MIN_POINTS = 12  # fewer visible outline points than this say too little to align to
_SHIFT_SLACK_PX = 1.0  # a part this much thinner than the erosion (or gap than the dilation) still counts


@dataclass(frozen=True)
class OutlineSamples:
    """The visible outline of one pose: points on the mesh (its own frame, so that they move with the pose),
    the outline length each stands for (pixels) and the mask outline's offset from them (pixels, > 0: the
    mask is wider)."""

    local: torch.Tensor  # (n,3)
    length: torch.Tensor  # (n,)
    shift: float


@dataclass(frozen=True)
class OutlineTarget:
    """One mask's outline, the body in front of the object, and the object mesh (centred frame: a pose
    x_cam = R x + t turns about the mesh's origin)."""

    vertices: np.ndarray  # (V,3)
    faces: np.ndarray  # (F,3)
    edges: np.ndarray  # (E,2) vertex pairs of the edges shared by exactly two faces
    edge_faces: np.ndarray  # (E,2) those two faces
    opposite: np.ndarray  # (E,2) each of those faces' corner off the edge
    signed: torch.Tensor  # (H,W) float64 distance (pixels) to the mask's outline at pixel centres, > 0 outside it
    signed_t: torch.Tensor  # the same, float32 (the fit's precision)
    mask_pixels: int
    body_depth: np.ndarray  # (H,W) metres, inf where the body is not drawn
    camera_k: np.ndarray  # (3,3)
    closed: bool  # the mesh encloses a volume: its faces turned to the camera alone cover its silhouette
    max_shift_px: int  # the farthest the mask's outline is taken to be off the object's (the fit's mask shifts)

    @classmethod
    def build(cls, vertices: np.ndarray, faces: np.ndarray, mask: np.ndarray, body_depth: np.ndarray,
              camera_k: np.ndarray, closed: bool = False, max_shift_px: int = 8) -> OutlineTarget:
        faces = np.asarray(faces, dtype=np.int64)
        sides = np.stack((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]), axis=1).reshape(-1, 2)
        unique, inverse, counts = np.unique(np.sort(sides, axis=1), axis=0, return_inverse=True,
                                            return_counts=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        shared = np.nonzero(counts == 2)[0]
        first = np.searchsorted(inverse[order], shared)
        half_edges = np.stack((order[first], order[first + 1]), axis=1)  # (E,2) face * 3 + side
        edge_faces = half_edges // 3
        opposite = faces[edge_faces, (half_edges % 3 + 2) % 3]
        padded = np.pad(np.asarray(mask, dtype=bool), 1).view(np.uint8)
        inside = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        outside = cv2.distanceTransform(1 - padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        # the outline runs between pixel centres: half a pixel before the nearest pixel of the other side
        signed = np.where(padded > 0, 0.5 - inside, outside - 0.5)[1:-1, 1:-1].astype(np.float64)
        return cls(np.asarray(vertices, dtype=np.float64), faces, unique[shared], edge_faces, opposite,
                   torch.as_tensor(signed), torch.as_tensor(signed, dtype=torch.float32), int(np.count_nonzero(mask)),
                   np.asarray(body_depth), np.asarray(camera_k, dtype=np.float64), bool(closed), int(max_shift_px))

    def samples(self, rotation: np.ndarray, translation: np.ndarray) -> OutlineSamples | None:
        """The visible outline at this pose: points along the edges between a face turned to the camera and
        one turned away, whose outer side is not the object (not a fold inside the silhouette) and that the
        body does not hide; None when fewer than 12 are."""
        posed = self.vertices @ rotation.T + translation
        if (posed[:, 2] <= _Z_NEAR).any():
            return None
        tri = posed[self.faces]
        front = (np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) * tri.mean(1)).sum(1) < 0
        rim = front[self.edge_faces[:, 0]] != front[self.edge_faces[:, 1]]
        k = self.camera_k
        pix = project_pinhole(posed, k, _Z_NEAR)[0]
        edges = self.edges[rim]
        inner = np.where(front[self.edge_faces[rim, 0]], self.opposite[rim, 0], self.opposite[rim, 1])
        a, b = pix[edges[:, 0]], pix[edges[:, 1]]
        along = b - a
        length = np.linalg.norm(along, axis=1)
        out = np.stack((along[:, 1], -along[:, 0]), axis=1) / np.maximum(length, 1e-12)[:, None]
        out *= np.where(((a - pix[inner]) * out).sum(1) < 0, -1.0, 1.0)[:, None]  # away from the front face
        # two points an edge (2-point Gauss-Legendre: the line integral exact for a misfit linear along it)
        t = 0.5 + np.array([-0.5, 0.5]) / np.sqrt(3.0)
        local = (self.vertices[edges[:, 0], None] * (1 - t)[:, None]
                 + self.vertices[edges[:, 1], None] * t[:, None]).reshape(-1, 3)
        cam = local @ rotation.T + translation
        pixels = project_pinhole(cam, k, _Z_NEAR)[0]
        out, length = np.repeat(out, 2, axis=0), np.repeat(length / 2.0, 2)
        height, width = self.signed.shape
        probe = np.rint(pixels + 1.5 * out).astype(np.int64)
        keep = (probe[:, 0] >= 0) & (probe[:, 0] < width) & (probe[:, 1] >= 0) & (probe[:, 1] < height)
        keep &= (pixels[:, 0] >= 0) & (pixels[:, 0] <= width - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= height - 1)
        if keep.sum() < _MIN_POINTS:
            return None
        # the object's own cover, in a window around the outline (and as far out as the mask's outline may be
        # moved): a point with the object just outside it is on a fold or hidden behind another part
        margin = self.max_shift_px + 2
        u0, v0 = max(int(probe[keep, 0].min()) - margin, 0), max(int(probe[keep, 1].min()) - margin, 0)
        u1, v1 = min(int(probe[keep, 0].max()) + margin + 1, width), min(int(probe[keep, 1].max()) + margin + 1, height)
        window_k = k.copy()
        window_k[0, 2] -= u0
        window_k[1, 2] -= v0
        drawn = self.faces[front] if self.closed else self.faces  # (half the rasterising)
        depth = render_depth([(posed, drawn)], window_k, (v1 - v0, u1 - u0)).depth
        covered = np.isfinite(depth)
        inside = np.clip(probe[:, 1] - v0, 0, v1 - v0 - 1), np.clip(probe[:, 0] - u0, 0, u1 - u0 - 1)
        keep &= ~covered[inside]
        near = np.clip(np.rint(pixels).astype(np.int64), 0, [width - 1, height - 1])
        keep &= self.body_depth[near[:, 1], near[:, 0]] >= cam[:, 2] - 0.005  # 5 mm: the object's own rim
        if keep.sum() < _MIN_POINTS:
            return None
        shift = self._offset(pixels[keep])
        if abs(shift) >= 1.0:
            # an eroded mask has lost the parts thinner than twice the erosion, a dilated one has filled the gaps
            # narrower than twice the dilation: the outline there has no counterpart in the mask (its distance to
            # the mask's outline would say the pose is wrong), so it is not compared, and the offset is read again
            visible = covered & (depth <= self.body_depth[v0:v1, u0:u1])  # what the mask can show of the object
            if visible.any():
                padded = np.pad(visible, 1).view(np.uint8)
                room = cv2.distanceTransform(padded if shift < 0 else 1 - padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                moved = np.rint(pixels + shift * out).astype(np.int64) - [u0 - 1, v0 - 1]
                moved = np.clip(moved, 0, [room.shape[1] - 1, room.shape[0] - 1])
                # a pixel centre that deep has the outline about half a pixel nearer: the shifted point keeps
                # its part when that part reaches |shift| from the moved outline point
                keep &= room[moved[:, 1], moved[:, 0]] - 0.5 >= abs(shift) - _SHIFT_SLACK_PX
                if keep.sum() < _MIN_POINTS:
                    return None
                shift = self._offset(pixels[keep])
        return OutlineSamples(torch.as_tensor(local[keep], dtype=torch.float32),
                              torch.as_tensor(length[keep], dtype=torch.float32), shift)

    def _offset(self, pixels: np.ndarray) -> float:
        """The mask's outline off these (n,2) outline pixels, the median (pixels, > 0: the mask is wider)."""
        return -float(np.median(_bilinear(self.signed, *torch.as_tensor(pixels).T).numpy()))

    def misfit(self, samples: OutlineSamples, rotation: torch.Tensor, translation: torch.Tensor,
               robust_px: float) -> torch.Tensor:
        """(B,) area between the outline moved by its shift and the mask's outline over the mask's area (at most
        about 1 - IoU), at poses (B,3,3), (B,3) of these samples; a Huber kernel of ``robust_px`` keeps it
        smooth where the two outlines meet. Differentiable in the poses."""
        cam = samples.local @ rotation.transpose(1, 2) + translation[:, None]  # (B,n,3)
        pixels = project_points(cam, torch.as_tensor(self.camera_k, dtype=cam.dtype))
        residual = _bilinear(self.signed_t, pixels[..., 0], pixels[..., 1]) + samples.shift
        size = residual.abs()
        huber = torch.where(size < robust_px, 0.5 * residual * residual / robust_px, size - 0.5 * robust_px)
        return (huber * samples.length).sum(-1) / max(self.mask_pixels, 1)


def _bilinear(image: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """image sampled at continuous (...) pixel coordinates u, v (pixel centres on integers), clamped to the
    image; differentiable in them."""
    height, width = image.shape
    u = u.clamp(0, width - 1.000001)
    v = v.clamp(0, height - 1.000001)
    u0, v0 = u.detach().floor().long(), v.detach().floor().long()
    du, dv = u - u0, v - v0
    return (image[v0, u0] * (1 - du) * (1 - dv) + image[v0, u0 + 1] * du * (1 - dv)
            + image[v0 + 1, u0] * (1 - du) * dv + image[v0 + 1, u0 + 1] * du * dv)
