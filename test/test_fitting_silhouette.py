import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from ivlm_core.fitting.silhouette import (
    EdgeTable,
    SilhouetteGrid,
    _SeparableKernels,
    decimate_by_clustering,
    project_points,
    silhouette_centroid,
    soft_silhouette,
)
from ivlm_core.fitting.zbuffer import render_depth

K = torch.tensor([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])


def _posed(mesh: trimesh.Trimesh, offset=(0.05, 0.02, 1.5)) -> torch.Tensor:
    rot = Rotation.from_rotvec([0.4, -0.7, 0.3]).as_matrix()
    return torch.tensor(mesh.vertices @ rot.T + np.asarray(offset), dtype=torch.float32)


def _grid_and_mask(verts: torch.Tensor, faces: np.ndarray):
    pix = project_points(verts, K).numpy()
    grid = SilhouetteGrid.around_box((pix[:, 0].min(), pix[:, 1].min(), pix[:, 0].max(), pix[:, 1].max()), (480, 640))
    hard = render_depth([(verts.numpy(), faces)], K.numpy(), (480, 640)).mask
    return grid, grid.downsample_mask(hard), hard


def test_soft_silhouette_matches_the_hard_render_without_seams():
    # finely tessellated meshes: many internal edges and triangles smaller than the blur
    for mesh in (trimesh.creation.box((0.2, 0.1, 0.05)).subdivide().subdivide(), trimesh.creation.capsule(0.15, 0.02)):
        verts = _posed(mesh)
        grid, target, _ = _grid_and_mask(verts, mesh.faces)
        sil = soft_silhouette(verts, torch.as_tensor(mesh.faces), K, grid, sigma=0.5)
        assert abs(float(sil.sum()) - float(target.sum())) < 0.02 * float(target.sum())
        assert float((sil - target).abs().mean()) < 0.03
        full = (target > 0.999).numpy()
        interior = full.copy()  # cells 1.5+ cells inside the outline, where the blur has died out
        interior[1:-1, 1:-1] &= full[:-2, 1:-1] & full[2:, 1:-1] & full[1:-1, :-2] & full[1:-1, 2:]
        interior[[0, -1], :] = False
        interior[:, [0, -1]] = False
        assert interior.sum() > 10 and float(sil[torch.from_numpy(interior)].min()) > 0.98  # no seams


def test_open_meshes_render_from_behind_without_culling():
    box = trimesh.creation.box((0.2, 0.1, 0.05)).subdivide()
    sheet = trimesh.Trimesh(box.vertices, box.faces[box.face_normals[:, 2] > 0.9], process=False)
    sheet.remove_unreferenced_vertices()
    verts = torch.tensor(sheet.vertices + np.array([0.0, 0.0, 1.5]), dtype=torch.float32)  # seen from its back side
    grid, target, _ = _grid_and_mask(verts, sheet.faces)
    faces = torch.as_tensor(sheet.faces)
    assert float(soft_silhouette(verts, faces, K, grid, cull_backfaces=True).sum()) == 0.0
    both = soft_silhouette(verts, faces, K, grid, cull_backfaces=False)
    assert abs(float(both.sum()) - float(target.sum())) < 0.02 * float(target.sum())


def test_gradient_moves_the_silhouette_towards_the_mask():
    mesh = trimesh.creation.box((0.15, 0.1, 0.08))
    verts = _posed(mesh)
    grid, target, hard = _grid_and_mask(verts, mesh.faces)
    shift = torch.zeros(3, requires_grad=True)
    moved = verts + torch.tensor([0.02, -0.01, 0.0]) + shift
    sil = soft_silhouette(moved, torch.as_tensor(mesh.faces), K, grid, edge_table=EdgeTable.from_faces(mesh.faces))
    iou = (sil * target).sum() / (sil + target - sil * target).sum()
    (1 - iou).backward()
    assert shift.grad[0] > 0 and shift.grad[1] < 0  # descending moves back left (-x) and down (+y)
    rows, cols = np.nonzero(hard)
    centroid = silhouette_centroid(soft_silhouette(verts, torch.as_tensor(mesh.faces), K, grid), grid)
    assert np.allclose(centroid.numpy(), [cols.mean(), rows.mean()], atol=0.5)


def test_visibility_hides_occluded_cells_and_grid_downsampling_is_exact():
    mesh = trimesh.creation.box((0.15, 0.1, 0.08))
    verts = _posed(mesh)
    grid, target, hard = _grid_and_mask(verts, mesh.faces)
    assert np.isclose(float(target.sum()) * grid.step**2, hard.sum())
    hidden = torch.ones(grid.height, grid.width)
    hidden[:, : grid.width // 2] = 0
    sil = soft_silhouette(verts, torch.as_tensor(mesh.faces), K, grid, visibility=hidden)
    assert float(sil[:, : grid.width // 2].sum()) == 0 and float(sil.sum()) > 0


def test_decimation_keeps_the_outline():
    mesh = trimesh.creation.icosphere(4, 0.1)
    small_v, small_f = decimate_by_clustering(np.asarray(mesh.vertices), np.asarray(mesh.faces), 600)
    assert len(small_f) <= 600
    assert np.abs(np.linalg.norm(small_v, axis=1) - 0.1).max() < 0.02


def test_blurred_mask_target_matches_the_silhouette_of_the_true_pose():
    mesh = trimesh.creation.box((0.2, 0.1, 0.05))
    verts = _posed(mesh)
    grid, area_target, hard = _grid_and_mask(verts, mesh.faces)
    sil = soft_silhouette(verts, torch.as_tensor(mesh.faces), K, grid, sigma=0.5)
    blurred = grid.blurred_mask(hard, 0.5)
    assert float((sil - blurred).abs().mean()) < 0.3 * float((sil - area_target).abs().mean())


def test_separable_kernels_gradient_matches_finite_differences():
    """The hand-written gradient of the Phi/Gaussian kernels (points near and beyond the cut-offs)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(200, dtype=torch.float64, generator=gen) * 40 - 5).requires_grad_()
    y = (torch.rand(200, dtype=torch.float64, generator=gen) * 30 - 2).requires_grad_()
    amplitude = torch.randn(200, dtype=torch.float64, generator=gen).requires_grad_()
    cols, rows = torch.arange(30, dtype=torch.float64), torch.arange(25, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, y, a: _SeparableKernels.apply(x, y, a, cols, rows, 0.5), (x, y, amplitude)
    )
