import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ivlm_core.fitting.rotation import (
    matrix_to_quaternion_xyzw,
    matrix_to_rotation_6d,
    quaternion_xyzw_to_matrix,
    rotation_6d_to_matrix,
    rotation_vector_to_matrix,
)


def test_6d_round_trip_and_gram_schmidt_gives_proper_rotations():
    rots = torch.as_tensor(Rotation.random(16, random_state=0).as_matrix(), dtype=torch.float64)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(rots)), rots, atol=1e-10)
    raw = rotation_6d_to_matrix(torch.randn(16, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    eye = torch.eye(3, dtype=torch.float64).expand(16, 3, 3)
    assert torch.allclose(raw.transpose(1, 2) @ raw, eye, atol=1e-10)
    assert torch.allclose(torch.linalg.det(raw), torch.ones(16, dtype=torch.float64), atol=1e-10)


def test_quaternion_is_xyzw_like_geometry_msgs():
    quarter_turn_z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    q = matrix_to_quaternion_xyzw(quarter_turn_z)
    assert np.allclose(q, [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    assert np.allclose(quaternion_xyzw_to_matrix(q), quarter_turn_z)
    assert matrix_to_quaternion_xyzw(Rotation.from_rotvec([0, 3.0, 0]).as_matrix())[3] >= 0


def test_rotation_vectors_exponential_is_exact_and_differentiable_at_zero():
    rng = np.random.default_rng(0)
    vectors = np.concatenate((rng.normal(size=(6, 3)), [[0.0, 0.0, 0.0], [1e-6, -2e-6, 0.0], [0.0, 0.0, 3.0]]))
    got = rotation_vector_to_matrix(torch.tensor(vectors, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(vectors).as_matrix(), atol=1e-10)
    omega = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    (jac,) = torch.autograd.grad(rotation_vector_to_matrix(omega)[0, 2, 1], omega)  # d R / d w at 0: the cross matrix
    np.testing.assert_allclose(jac.numpy(), [[1.0, 0.0, 0.0]], atol=1e-12)
