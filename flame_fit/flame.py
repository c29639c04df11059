"""FLAME in PyTorch, batched, float32, exactly as DECA/EMOCA evaluate it.

`FlameModel.forward` gives vertices, joints and the 68 iBUG landmarks (17 yaw-dependent contour
points, then the 51 static ones); `FlameModel.landmarks` gives the same landmarks while only
evaluating the few hundred vertices the landmark faces use (for per-frame optimisation).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flame_fit import lbs as L
from flame_fit.flame_io import N_SHAPE_SPACE, load_flame_arrays, load_landmark_embedding

N_SHAPE = 100
N_EXPR = 50
PROCEDURAL_NAME = "procedural head model, not FLAME"


@dataclass
class FlameOutput:
    vertices: torch.Tensor      # (B,V,3)
    joints: torch.Tensor        # (B,5,3) posed joints: root, neck, jaw, left eye, right eye
    landmarks: torch.Tensor     # (B,68,3) iBUG order, dynamic contour (DECA/EMOCA landmarks2d)


def _f32(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


class FlameModel(nn.Module):
    """FLAME with 100 identity and 50 expression components (the DECA/EMOCA configuration).

    Built from the arrays of `flame_io.load_flame_arrays` and `flame_io.load_landmark_embedding`.
    All buffers are float32 and move with `.to(device)`.

    Buffers other modules may use (stable names): v_template (V,3), shapedirs (V,3,150),
    posedirs (36,3V), J_regressor (5,V), lbs_weights (V,5), parents (5,); for landmark-only work
    sub_vertex_ids (S,), sub_v_template (S,3), sub_shapedirs (S,3,150), sub_posedirs (36,3S),
    sub_lbs_weights (S,5), sub_faces (F,3) (indices into the S subset; valid for landmark faces
    only), J_template (5,3) and J_shapedirs (5,3,150) with joints = J_template + J_shapedirs @ betas;
    `landmark_tables(full_pose)` gives the per-frame landmark faces and barycentric coordinates.
    """

    def __init__(self, model: dict, embedding: dict, name: str = "FLAME", *, is_real: bool,  # no default
                 n_shape: int = N_SHAPE, n_expr: int = N_EXPR):
        super().__init__()
        self.name, self.is_real = name, bool(is_real)
        self.n_shape, self.n_expr = n_shape, n_expr
        sd = np.asarray(model["shapedirs"], dtype=np.float64)
        if sd.shape[2] < N_SHAPE_SPACE + n_expr:
            raise ValueError(f"shapedirs has {sd.shape[2]} columns, need {N_SHAPE_SPACE + n_expr}")
        # Betas = cat(shape, expression): identity columns 0..n_shape-1, expression from column 300.
        shapedirs = np.concatenate([sd[:, :, :n_shape], sd[:, :, N_SHAPE_SPACE:N_SHAPE_SPACE + n_expr]],
                                   axis=2)
        v_template = np.asarray(model["v_template"], dtype=np.float64)
        posedirs = np.asarray(model["posedirs"], dtype=np.float64)            # (V,3,36)
        J_reg = np.asarray(model["J_regressor"], dtype=np.float64)            # (5,V)
        weights = np.asarray(model["weights"], dtype=np.float64)
        faces = np.asarray(model["faces"], dtype=np.int64)
        V = v_template.shape[0]

        self.register_buffer("v_template", _f32(v_template))
        self.register_buffer("shapedirs", _f32(shapedirs))
        self.register_buffer("posedirs", _f32(posedirs.reshape(V * 3, -1).T))  # (36, 3V)
        self.register_buffer("J_regressor", _f32(J_reg))
        self.register_buffer("lbs_weights", _f32(weights))
        self.register_buffer("faces_tensor", torch.as_tensor(faces))
        parents = np.asarray(model["parents"], dtype=np.int64)
        self.register_buffer("parents", torch.as_tensor(parents))
        self.kin_chain = L.neck_kin_chain(parents.tolist())

        emb = embedding
        self.register_buffer("static_lmk_faces_idx", torch.as_tensor(emb["static_lmk_faces_idx"]))
        self.register_buffer("static_lmk_bary", _f32(emb["static_lmk_bary_coords"]))
        self.register_buffer("dynamic_lmk_faces_idx", torch.as_tensor(emb["dynamic_lmk_faces_idx"]))
        self.register_buffer("dynamic_lmk_bary", _f32(emb["dynamic_lmk_bary_coords"]))
        self.register_buffer("full_lmk_faces_idx", torch.as_tensor(emb["full_lmk_faces_idx"]))
        self.register_buffer("full_lmk_bary", _f32(emb["full_lmk_bary_coords"]))

        # Landmark-only evaluation: the vertices of every face a landmark can sit on.  Joints
        # still depend on all vertices, but J_regressor is linear, so J = J_template + J_dirs @ betas
        # exactly (precomputed in float64).
        lmk_faces = np.concatenate([emb["static_lmk_faces_idx"].ravel(), emb["dynamic_lmk_faces_idx"].ravel(),
                                    emb["full_lmk_faces_idx"].ravel()])
        sub = np.unique(faces[lmk_faces].ravel())
        remap = np.full(V, -1, dtype=np.int64)
        remap[sub] = np.arange(sub.size)
        self.register_buffer("sub_vertex_ids", torch.as_tensor(sub))
        # only landmark faces are used
        self.register_buffer("sub_faces", torch.as_tensor(remap[faces].clip(min=0)))
        self.register_buffer("sub_v_template", _f32(v_template[sub]))
        self.register_buffer("sub_shapedirs", _f32(shapedirs[sub]))
        self.register_buffer("sub_posedirs", _f32(posedirs[sub].reshape(sub.size * 3, -1).T))
        self.register_buffer("sub_lbs_weights", _f32(weights[sub]))
        self.register_buffer("J_template", _f32(J_reg @ v_template))                     # (5,3)
        self.register_buffer("J_shapedirs", _f32(np.einsum("jv,vkl->jkl", J_reg, shapedirs)))  # (5,3,L)

    # -- parameters ---------------------------------------------------------------------------
    @property
    def faces(self) -> torch.Tensor:
        """(F,3) long."""
        return self.faces_tensor

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def _full_pose(self, shape, expression, global_orient, neck_pose, jaw_pose, eye_pose):
        given = [x for x in (shape, expression, global_orient, neck_pose, jaw_pose, eye_pose)
                 if x is not None]
        if not given:
            raise ValueError("give at least one parameter tensor (the batch size comes from it)")
        B = given[0].shape[0]
        dtype, device = self.v_template.dtype, self.v_template.device

        def prep(x, n, name):
            if x is None:
                return torch.zeros(B, n, dtype=dtype, device=device)
            x = x.to(dtype)
            if x.shape != (B, n):
                raise ValueError(f"{name} has shape {tuple(x.shape)}, want ({B},{n})")
            return x

        shape = prep(shape, self.n_shape, "shape")
        expression = prep(expression, self.n_expr, "expression")
        betas = torch.cat([shape, expression], dim=1)
        pose = torch.cat([prep(global_orient, 3, "global_orient"),
                          prep(neck_pose, 3, "neck_pose"),
                          prep(jaw_pose, 3, "jaw_pose"), prep(eye_pose, 6, "eye_pose")], dim=1)
        return betas, pose

    def landmark_tables(self, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full pose (B,15) -> face ids (B,68) and bary coords (B,68,3) of the 68 landmarks:
        the yaw-selected contour row (17), then the static 51."""
        B = pose.shape[0]
        rows = L.dynamic_contour_rows(pose, self.kin_chain, yaw_sign=1.0)          # DECA/EMOCA sign
        dyn_idx = self.dynamic_lmk_faces_idx[rows]                                  # (B,17)
        dyn_bary = self.dynamic_lmk_bary[rows]                                      # (B,17,3)
        idx = torch.cat([dyn_idx, self.static_lmk_faces_idx.expand(B, -1)], dim=1)
        bary = torch.cat([dyn_bary, self.static_lmk_bary.expand(B, -1, -1)], dim=1)
        return idx, bary

    _landmark_tables = landmark_tables      # older name, used by flame_fit.refine

    # -- evaluation ---------------------------------------------------------------------------
    def forward(self, shape: torch.Tensor, expression: torch.Tensor, global_orient: torch.Tensor,
                neck_pose: torch.Tensor | None = None, jaw_pose: torch.Tensor | None = None,
                eye_pose: torch.Tensor | None = None) -> FlameOutput:
        """shape (B,100), expression (B,50), global_orient / neck_pose / jaw_pose (B,3) and
        eye_pose (B,6) axis-angle (None = zeros) -> FlameOutput."""
        betas, pose = self._full_pose(shape, expression, global_orient, neck_pose, jaw_pose, eye_pose)
        verts, joints = L.lbs(betas, pose, self.v_template, self.shapedirs, self.posedirs,
                              self.J_regressor, self.parents, self.lbs_weights)
        idx, bary = self.landmark_tables(pose)
        lmk = L.vertices2landmarks(verts, self.faces_tensor, idx, bary)
        return FlameOutput(vertices=verts, joints=joints, landmarks=lmk)

    def landmarks(self, shape: torch.Tensor, expression: torch.Tensor, global_orient: torch.Tensor,
                  neck_pose: torch.Tensor | None = None, jaw_pose: torch.Tensor | None = None,
                  eye_pose: torch.Tensor | None = None) -> torch.Tensor:
        """The 68 landmarks (B,68,3) of `forward`, evaluating only the landmark faces' vertices."""
        betas, pose = self._full_pose(shape, expression, global_orient, neck_pose, jaw_pose, eye_pose)
        B = betas.shape[0]
        v_shaped = self.sub_v_template + L.blend_shapes(betas, self.sub_shapedirs)
        J = self.J_template + torch.einsum("bl,jkl->bjk", betas, self.J_shapedirs)
        rot_mats = L.batch_rodrigues(pose.reshape(-1, 3)).reshape(B, -1, 3, 3)
        v_posed = v_shaped + torch.matmul(L.pose_features(rot_mats), self.sub_posedirs).reshape(B, -1, 3)
        _, A = L.batch_rigid_transform(rot_mats, J, self.parents)
        verts = L.skin(v_posed, self.sub_lbs_weights, A)
        idx, bary = self.landmark_tables(pose)
        return L.vertices2landmarks(verts, self.sub_faces, idx, bary)

    def landmarks3d_static(self, vertices: torch.Tensor) -> torch.Tensor:
        """DECA's `landmarks3d`: the 68 fixed-contour landmarks (B,68,3) of vertices (B,V,3)."""
        return L.vertices2landmarks(vertices, self.faces_tensor, self.full_lmk_faces_idx, self.full_lmk_bary)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, is_real={self.is_real}, V={self.n_vertices}, "
                f"F={int(self.faces.shape[0])}")


def load_flame(model_path: str | Path, landmark_embedding_path: str | Path) -> FlameModel:
    """FlameModel from a FLAME pickle (2020/2023 or the procedural one) and a landmark embedding.

    Raises flame_io.FlameFileError naming the file and the fix when either file is unusable.
    """
    model = load_flame_arrays(model_path)
    emb = load_landmark_embedding(landmark_embedding_path, n_faces=model["faces"].shape[0])
    if model["procedural"]:
        return FlameModel(model, emb, name=PROCEDURAL_NAME, is_real=False)
    name = "FLAME 2023" if "2023" in Path(model_path).name else "FLAME"
    return FlameModel(model, emb, name=name, is_real=True)
