"""Continuous 6D rotation representation (Zhou et al. 2019) and pose conversions.

The optimiser works on the 6D form because it has no singularities or double cover, so Adam steps are smooth;
the matrix is rebuilt with Gram-Schmidt. Convention: the 6D vector is the first two COLUMNS of R, and
points map as x' = R @ x (column vectors), i.e. ``points @ R.T``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) proper rotation via Gram-Schmidt on the two column vectors."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, the inverse of :func:`rotation_6d_to_matrix`."""
    return torch.cat((matrix[..., :, 0], matrix[..., :, 1]), dim=-1)


def rotation_vector_to_matrix(omega: torch.Tensor) -> torch.Tensor:
    """(N,3) rotation vectors -> (N,3,3) rotations (Rodrigues' exponential), exact and differentiable at 0.

    The Levenberg-Marquardt step differentiates at omega = 0 itself; smplx's ``batch_rodrigues`` adds 1e-8 to
    the vector to avoid 0 / 0, which biases every turn by that much. Near 0 the series stands in."""
    theta2 = (omega * omega).sum(-1)
    theta = (theta2 + 1e-20).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta2 + 1e-20))
    zero = torch.zeros_like(omega[:, 0])
    k = torch.stack((zero, -omega[:, 2], omega[:, 1], omega[:, 2], zero, -omega[:, 0],
                     -omega[:, 1], omega[:, 0], zero), dim=-1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype).expand_as(k)
    return eye + a[:, None, None] * k + b[:, None, None] * (k @ k)


def matrix_to_quaternion_xyzw(matrix: np.ndarray) -> np.ndarray:
    """(3,3) rotation -> unit quaternion (x, y, z, w), the geometry_msgs/Quaternion order, with w >= 0."""
    quat = Rotation.from_matrix(np.asarray(matrix, dtype=np.float64)).as_quat()
    return quat if quat[3] >= 0 else -quat


def quaternion_xyzw_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3,3) rotation."""
    return Rotation.from_quat(np.asarray(quat, dtype=np.float64)).as_matrix()


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Geodesic angle between two rotations, in degrees."""
    rel = np.asarray(r_a, dtype=np.float64).T @ np.asarray(r_b, dtype=np.float64)
    cos = np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))
