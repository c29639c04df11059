"""Linear blend skinning for FLAME, written from the published model (Loper et al. 2015 SMPL,
Li et al. 2017 FLAME) and matching the smplx / DECA / EMOCA implementations term by term.

Small pure functions on torch tensors; B = batch, V = vertices, J = joints (5 for FLAME),
L = blend-shape coefficients, P = 9 * (J - 1) pose-corrective features.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def batch_rodrigues(rot_vecs: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Axis-angle (N,3) -> rotation matrices (N,3,3).

    The epsilon is added to the vector before taking its norm (as smplx does) so that a zero
    rotation gives the identity without a division by zero.
    """
    dtype, device = rot_vecs.dtype, rot_vecs.device
    angle = torch.norm(rot_vecs + epsilon, dim=1, keepdim=True)           # (N,1)
    rot_dir = rot_vecs / angle
    cos = torch.unsqueeze(torch.cos(angle), dim=1)                        # (N,1,1)
    sin = torch.unsqueeze(torch.sin(angle), dim=1)
    rx, ry, rz = torch.split(rot_dir, 1, dim=1)
    zeros = torch.zeros_like(rx)
    K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    ident = torch.eye(3, dtype=dtype, device=device).unsqueeze(0)
    return ident + sin * K + (1 - cos) * torch.bmm(K, K)


def blend_shapes(betas: torch.Tensor, shape_disps: torch.Tensor) -> torch.Tensor:
    """Coefficients (B,L) x directions (V,3,L) -> displacements (B,V,3)."""
    return torch.einsum("bl,mkl->bmk", betas, shape_disps)


def vertices2joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Regressor (J,V) applied to vertices (B,V,3) -> joints (B,J,3)."""
    return torch.einsum("bik,ji->bjk", vertices, J_regressor)


def transform_mat(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rotations (N,3,3) and translations (N,3,1) -> homogeneous transforms (N,4,4)."""
    return torch.cat([F.pad(R, [0, 0, 0, 1]), F.pad(t, [0, 0, 0, 1], value=1)], dim=2)


def batch_rigid_transform(rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics.

    rot_mats (B,J,3,3) local rotations, joints (B,J,3) rest joints, parents (J,) long with
    parents[0] = -1 and every parent before its child.
    Returns posed joints (B,J,3) and the skinning transforms (B,J,4,4) that map rest-pose
    points to posed points (world transform with the rest joint position removed).
    """
    joints = joints.unsqueeze(-1)                                         # (B,J,3,1)
    rel_joints = joints.clone()
    rel_joints[:, 1:] -= joints[:, parents[1:]]
    B, J = joints.shape[:2]
    transforms_mat = transform_mat(rot_mats.reshape(-1, 3, 3),
                                   rel_joints.reshape(-1, 3, 1)).reshape(B, J, 4, 4)
    chain = [transforms_mat[:, 0]]
    for i in range(1, J):
        chain.append(torch.matmul(chain[int(parents[i])], transforms_mat[:, i]))
    transforms = torch.stack(chain, dim=1)                                 # (B,J,4,4)
    posed_joints = transforms[:, :, :3, 3]
    joints_homogen = F.pad(joints, [0, 0, 0, 1])                          # (B,J,4,1)
    rel_transforms = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0, 0, 0, 0, 0, 0, 0])
    return posed_joints, rel_transforms


def pose_features(rot_mats: torch.Tensor) -> torch.Tensor:
    """Rotations (B,J,3,3) -> pose-corrective features (B,9*(J-1)): (R - I) of joints 1.. (lrotmin)."""
    B = rot_mats.shape[0]
    ident = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - ident).reshape(B, -1)


def skin(points: torch.Tensor, lbs_weights: torch.Tensor, rel_transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning of rest-pose points (B,V,3) with weights (V,J) and transforms (B,J,4,4)."""
    B, J = rel_transforms.shape[:2]
    T = torch.matmul(lbs_weights, rel_transforms.reshape(B, J, 16)).reshape(B, -1, 4, 4)
    homogen = F.pad(points, [0, 1], value=1.0).unsqueeze(-1)              # (B,V,4,1)
    return torch.matmul(T, homogen)[:, :, :3, 0]


def lbs(betas: torch.Tensor, pose: torch.Tensor, v_template: torch.Tensor, shapedirs: torch.Tensor,
        posedirs: torch.Tensor, J_regressor: torch.Tensor, parents: torch.Tensor,
        lbs_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FLAME/SMPL forward pass.

    betas (B,L) shape+expression coefficients, pose (B,3J) axis-angle per joint,
    v_template (V,3), shapedirs (V,3,L), posedirs (P,3V), J_regressor (J,V), parents (J,),
    lbs_weights (V,J).  Returns vertices (B,V,3) and posed joints (B,J,3).
    """
    B = betas.shape[0]
    v_shaped = v_template + blend_shapes(betas, shapedirs)
    J = vertices2joints(J_regressor, v_shaped)
    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).reshape(B, -1, 3, 3)
    v_posed = v_shaped + torch.matmul(pose_features(rot_mats), posedirs).reshape(B, -1, 3)
    J_transformed, A = batch_rigid_transform(rot_mats, J, parents)
    return skin(v_posed, lbs_weights, A), J_transformed


def vertices2landmarks(vertices: torch.Tensor, faces: torch.Tensor, lmk_faces_idx: torch.Tensor,
                       lmk_bary_coords: torch.Tensor) -> torch.Tensor:
    """Barycentric points on mesh faces.

    vertices (B,V,3), faces (F,3) long, lmk_faces_idx (L,) or (B,L) long,
    lmk_bary_coords (L,3) or (B,L,3) -> landmarks (B,L,3) = sum_k bary[l,k] * V[faces[idx[l],k]].
    """
    B = vertices.shape[0]
    if lmk_faces_idx.dim() == 1:
        lmk_faces_idx = lmk_faces_idx.unsqueeze(0).expand(B, -1)
    if lmk_bary_coords.dim() == 2:
        lmk_bary_coords = lmk_bary_coords.unsqueeze(0).expand(B, -1, -1)
    L = lmk_faces_idx.shape[1]
    lmk_vert_idx = faces[lmk_faces_idx.reshape(-1)].reshape(B, L * 3)     # (B,3L)
    lmk_vertices = torch.gather(vertices, 1, lmk_vert_idx.unsqueeze(-1).expand(-1, -1, 3))
    lmk_vertices = lmk_vertices.reshape(B, L, 3, 3)                       # (B,L,corner,xyz)
    return torch.einsum("blfi,blf->bli", lmk_vertices, lmk_bary_coords.to(vertices.dtype))


def rot_mat_to_euler(rot_mats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N,3,3) -> the yaw angle (N,) in radians (rotation about y)."""
    sy = torch.sqrt(rot_mats[:, 0, 0] ** 2 + rot_mats[:, 1, 0] ** 2)
    return torch.atan2(-rot_mats[:, 2, 0], sy)


def neck_kin_chain(parents: list[int] | torch.Tensor, neck_idx: int = 1) -> list[int]:
    """Joint ids from the neck up to the root: [1, 0] for FLAME."""
    parents = [int(p) for p in parents]
    chain, cur = [neck_idx], neck_idx
    while parents[cur] != -1:
        cur = parents[cur]
        chain.append(cur)
    return chain


def dynamic_contour_rows(full_pose: torch.Tensor, kin_chain: list[int],
                         yaw_sign: float = 1.0) -> torch.Tensor:
    """Row of the (79,17) dynamic-contour tables for each pose: full_pose (B,3J) -> (B,) long.

    The yaw of R_root @ R_neck in whole degrees, clamped to 39; rows 0..39 hold yaw 0..39,
    rows 40..78 yaw -1..-39.  DECA/EMOCA use yaw_sign=+1 (smplx and FLAME_PyTorch use -1);
    +1 reproduces EMOCA's 2D landmarks.
    """
    B = full_pose.shape[0]
    aa = full_pose.reshape(B, -1, 3)[:, kin_chain]                        # (B,C,3)
    rot = batch_rodrigues(aa.reshape(-1, 3)).reshape(B, len(kin_chain), 3, 3)
    rel = torch.eye(3, dtype=full_pose.dtype, device=full_pose.device).expand(B, 3, 3)
    for i in range(len(kin_chain)):
        rel = torch.bmm(rot[:, i], rel)
    yaw_deg = yaw_sign * rot_mat_to_euler(rel) * (180.0 / math.pi)
    angle = torch.round(torch.clamp(yaw_deg, max=39)).to(torch.long)
    neg = angle < 0
    neg_rows = torch.where(angle < -39, torch.full_like(angle, 78), 39 - angle)
    return torch.where(neg, neg_rows, angle)
