"""Motion refinement: outlier replacement, landmark smoothing and the pose/neck/camera fit (Eq. 1).

Eq. 1 of the paper, per segment, over per-frame global orientation g_t, neck pose n_t and
camera c_t = [s, tx, ty], with the subject's shape and the per-frame expression and jaw fixed:

    lambda_l * sum_t sum_k || P(c_t, FLAME(g_t, n_t)_k) - l_t,k ||^2         (landmarks, NDC units)
  + lambda_s * sum_t ( ||g_t+1 - g_t||^2 + ||n_t+1 - n_t||^2 + ||u_t+1 - u_t||^2 )
  + lambda_r * sum_t ( ||g_t||^2 + neck_reg_scale * ||n_t||^2 )

l_t are the smoothed landmarks, P the orthographic camera of flame_fit.camera, and
u_t = [log s_t, s_ref tx_t, s_ref ty_t] the camera in image units (s_ref the segment's median
scale), so that one smoothness weight suits rotations (radians) and camera (NDC) alike.

Global orientation and neck rotate the face's landmarks the same way (they differ only in the
rotation centre, which the camera translation absorbs, and in FLAME's small pose correctives), so
landmarks cannot tell them apart: the regulariser decides how the head rotation is split. With
equal weights its minimum shares the rotation equally between the two joints; the default
`neck_reg_scale` (1e4) keeps the neck near zero, as EMOCA (which has no neck) and the per-frame
initialisation (global = whole head rotation, neck = 0) assume, so a true neck motion ends up in
the global orientation (bench/motion.py reports how much).

After Eq. 1, `fit_expression` re-fits the expression with the subject's shape (jaw, pose and
camera fixed), anchored to the per-frame values: the per-frame estimator fitted it with its own
shape, so without the re-fit the refined motion explained the landmarks worse than the per-frame
estimate did (`lambda_anchor` = 0 keeps the per-frame expression, as the paper does).

Options off by default (bench/fit_oracle.py measures them; notes of issue 20 item 2): `refit_jaw`
re-fits the jaw with the expression, `refit_rounds` alternates Eq. 1 and that re-fit, and
`smooth_order = 2` penalises the acceleration instead of the speed of pose and camera. Measured
first on one head-v1 truth capture: with exact landmarks and the true shape they brought the jaw
from 3.2 to 0.3 degrees, the lips from 4.4 to 1.5 mm and the head from 1.5 to 0.4-0.9 degrees; with
Dlib's landmarks the jaw and lips followed the detector's errors (jaw 1.1 -> 3.1-6.7 degrees). So the
library defaults keep the paper's Eq. 1 and the per-frame jaw.

Landmarks with little jitter get them: with `close_fit_noise_px` > 0, a segment whose landmark
tracks measure at most that much noise (`landmark_noise_px`, from their third differences, the
noisiest of contour, mouth and the rest) is refined with CLOSE_FIT's values instead of the given
ones (`fits_closely`; the QC record says which, with the noise and the values used). Whole-pixel
detectors such as Dlib measure at least 0.29 px (rounding), so they qualify only under a limit set
above that; exact or sub-pixel landmarks qualify. Jitter is not accuracy: a detector that is steady
but biased (Dlib's inner-lip gap is off the truth's by 1.0-1.4 mm on average on the truth captures)
would be followed as closely, so raise the limit only for a detector measured against truth.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from flame_fit import lbs as L
from flame_fit.camera import ndc_to_pixels, orth_project, pixels_to_ndc
from flame_fit.outliers import (boxplot_outliers, interpolate_frames, outlier_fractions,
                                replace_group_outliers, running_median_distances)
from flame_fit.smoothing import smooth_landmarks

PARAM_GROUPS = ("expression", "jaw_pose", "global_orient", "cam")


@dataclass
class RefineParams:
    """Every setting of the refinement (recorded next to its output)."""
    outlier_scale: float = 1.5          # box-plot fence factor s
    landmark_window: int = 7            # running-median window for landmark outliers (frames)
    smooth_weight: float = 0.3          # w_s of the landmark smoother (data weight w_d = 1, pixels)
    smoother: str = "exact"             # "exact" (banded solve) or "adam" (the paper's)
    lambda_landmark: float = 1.0
    lambda_smooth: float = 12.0
    lambda_reg: float = 1e-3
    neck_reg_scale: float = 1e4         # neck regulariser weight relative to the global one
    # 1: the paper's first differences (speed); 2: second differences (acceleration), which leave
    # a steady turn or nod unpenalised
    smooth_order: int = 1
    contour_weight: float = 1.0         # landmark-term weight of the 17 jaw-contour landmarks
    # after Eq. 1 the expression is re-fitted with the subject's shape (the per-frame estimator
    # fitted it with its own shape), pulled towards the per-frame values with this weight; 0: kept
    lambda_anchor: float = 1e-2
    refit_iters: int = 200              # L-BFGS iterations of that re-fit at most
    refit_jaw: bool = False             # re-fit the jaw with the expression (same anchor)
    refit_contour_weight: float = 0.0   # landmark-term weight of the jaw contour in that re-fit
    refit_rounds: int = 1               # Eq. 1 and the re-fit alternated this many times
    # landmarks whose measured noise (landmark_noise_px) is at most this many pixels are fitted
    # closely, with CLOSE_FIT's values instead (fits_closely); 0: never
    close_fit_noise_px: float = 0.0
    lr: float = 0.01                    # Adam step, radians / NDC
    lr_floor: float = 0.125             # the step is halved on stalls down to lr * lr_floor
    max_iters: int = 2000
    tolerance: float = 1e-7             # relative loss decrease per iteration that counts as converged
    check_every: int = 5                # iterations between convergence checks
    image_size: int = 1024              # portrait frame size in pixels
    seed: int = 0


# The refinement of landmarks with little jitter (landmark_noise_px <= close_fit_noise_px): the jaw is
# re-fitted with the expression, nearly unanchored, in two rounds with Eq. 1, and the landmarks and the
# pose are smoothed lightly. bench/end_to_end.py's run (a) (exact landmarks, true shape), four head-v3
# truth captures: head 1.24-1.69 -> 0.53-0.66 degrees, jaw 3.9-4.4 -> 0.15-0.45 degrees, lips 5.6-6.3 ->
# 1.4-1.8 mm. With 1 px of Gaussian noise added to those landmarks it still wins (bench/fit_oracle.py,
# three captures: head 0.54-0.67 degrees, jaw 0.9-1.1 degrees, lips 2.0-2.6 mm; the pipeline's values
# give 1.3-1.7, 4.1-4.3 and 6.0-6.2 on two of them). On Dlib's landmarks (noise 3.3-4.6 px, an inner-lip
# gap 1.0-1.4 mm off the truth's, too small on two captures and too large on a third) the same values
# let the jaw and lips follow the detector's bias (fit_oracle, two captures: jaw 1.3-1.8 -> 3.8-7.1
# degrees, lips 3.7-3.8 -> 18-23 mm, jitter 2.2-2.4x the truth's), so they are used only for landmarks
# with little jitter.
CLOSE_FIT = {"refit_jaw": True, "lambda_anchor": 1e-7, "refit_rounds": 2, "smooth_order": 2,
             "lambda_smooth": 10.0, "smooth_weight": 0.01}

# A detector that reports whole pixels is at least this far off (the standard deviation of rounding,
# 1/sqrt(12) px), however still its points stand.
ROUNDING_NOISE_PX = 1.0 / math.sqrt(12.0)


# ----------------------------------------------------------------------------- small helpers
# landmark groups whose noise is measured apart: the jaw contour, the mouth, the rest (brows, nose, eyes)
NOISE_GROUPS = (slice(0, 17), slice(48, 68), slice(17, 48))


def landmark_noise_px(landmarks: np.ndarray, ok: np.ndarray) -> float:
    """Per-coordinate noise (pixels) of landmark tracks. landmarks (T,68,2), ok (T,) -> float.

    Per group of NOISE_GROUPS, the median absolute third difference over runs of four consecutive good
    frames, scaled to a Gaussian's standard deviation (white noise of s.d. sigma has third differences
    of s.d. sigma sqrt(20); a median absolute value is 0.6745 s.d.); the noisiest group counts, so a
    detector steady on eyes and nose but not on the mouth is not taken for a precise one. Third
    differences cancel a face's smooth motion (second differences kept 0.2-0.4 px of it on fast
    synthetic singing), and the median lets its fastest moments pass: exact landmarks of the truth
    captures measure 0.020-0.024 px, of fast synthetic motion (demo.synthetic_motion) 0.04-0.13 px;
    Dlib's on the truth captures 3.3-4.6 px (their contour). Whole-pixel landmarks count at least
    ROUNDING_NOISE_PX. inf when no four consecutive frames are good.
    """
    ok = np.asarray(ok, bool)
    run = ok[:-3] & ok[1:-2] & ok[2:-1] & ok[3:]
    if not run.any():
        return math.inf
    x = np.asarray(landmarks, np.float64)
    d3 = np.abs(np.diff(x, n=3, axis=0)[run])                                  # (R,68,2)
    noise = max(float(np.median(d3[:, g])) for g in NOISE_GROUPS) / (0.6745 * math.sqrt(20.0))
    good = x[ok]
    if np.array_equal(good, np.round(good)):
        noise = max(noise, ROUNDING_NOISE_PX)
    return noise


def fits_closely(noise_px: float, limit_px: float) -> bool:
    """Whether a segment with this landmark noise is refined with CLOSE_FIT: a limit of 0 never."""
    return limit_px > 0 and noise_px <= limit_px


def jitter(x: np.ndarray) -> float:
    """Mean absolute second difference over time and dimensions. x: (T, ...)."""
    x = np.asarray(x, np.float64)
    return float(np.abs(np.diff(x, n=2, axis=0)).mean()) if len(x) > 2 else 0.0


def landmark_rmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared per-landmark Euclidean error (pixels) over the frames in `mask`.
    pred, target: (T,68,2); mask: (T,) bool or None (all frames)."""
    d2 = ((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2).sum(-1)   # (T,68)
    if mask is not None:
        d2 = d2[np.asarray(mask, bool)]
    return float(np.sqrt(d2.mean())) if d2.size else float("nan")


def camera_units(cam: torch.Tensor, s_ref: float) -> torch.Tensor:
    """cam (T,3) = [s, tx, ty] -> (T,3) [log s, s_ref tx, s_ref ty]: scale change and NDC shift."""
    return torch.cat([torch.log(cam[:, :1]), s_ref * cam[:, 1:]], dim=1)


def sq_diff(x: torch.Tensor, order: int = 1) -> torch.Tensor:
    """Sum of squared first (order 1) or second (order 2) differences over time. x: (T, D) -> scalar."""
    d = x[1:] - x[:-1]
    if order == 2:
        d = d[1:] - d[:-1]
    return (d ** 2).sum()


def small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., n, k) x (..., k, m) -> (..., n, m) for small n, k, m, as a broadcast sum.

    Hand-written because on CPU torch's bmm loops over the batch for 3x3 / 4x4 matrices, which
    made those products the largest cost of an optimisation step for 240 frames.
    """
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def rodrigues(rot_vecs: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Axis-angle (N,3) -> (N,3,3), as lbs.batch_rodrigues (same epsilon), with K @ K written as
    k k^T - (k.k) I so that no batched matrix product is needed (see small_matmul)."""
    angle = torch.norm(rot_vecs + epsilon, dim=1, keepdim=True)                    # (N,1)
    k = rot_vecs / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    kx, ky, kz = k.unbind(1)
    zeros = torch.zeros_like(kx)
    K = torch.stack([zeros, -kz, ky, kz, zeros, -kx, -ky, kx, zeros], dim=1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=k.dtype, device=k.device)
    KK = k[:, :, None] * k[:, None, :] - (k * k).sum(1)[:, None, None] * eye
    return eye + sin * K + (1 - cos) * KK


def contour_rows(rel: torch.Tensor) -> torch.Tensor:
    """Dynamic-contour table rows (T,) of the head's world rotations rel (T,3,3), as
    lbs.dynamic_contour_rows computes them (DECA's sign); only used to notice when the rows change."""
    yaw = torch.round(torch.clamp(L.rot_mat_to_euler(rel) * (180.0 / math.pi), max=39)).to(torch.long)
    return torch.where(yaw < 0, torch.where(yaw < -39, torch.full_like(yaw, 78), 39 - yaw), yaw)


class PoseLandmarks:
    """`FlameModel.landmarks` of one segment as a function of global orientation and neck only.

    In Eq. 1 shape, expression and jaw are fixed, so blend shapes, joints and the jaw's pose
    correctives are computed once here; each call then only does what depends on the rotations
    being fitted (model.landmarks recomputes everything and skins with per-vertex 4x4 products,
    which costs most of an optimisation step for a 240-frame batch on CPU). Skinning is linear,
    so only the corners of the landmark faces are skinned. Equality with model.landmarks is
    checked in tests/test_refine.py.
    """

    def __init__(self, model, shape: torch.Tensor, expression: torch.Tensor, jaw_pose: torch.Tensor):
        """shape (100,) or (T,100), expression (T,50), jaw_pose (T,3), on the model's device."""
        self.model = model
        T = expression.shape[0]
        dtype = model.v_template.dtype
        shape = shape.expand(T, -1) if shape.dim() == 1 else shape
        betas = torch.cat([shape, expression], dim=1).to(dtype)
        self.jaw = jaw_pose.to(dtype)
        self.eyes = torch.zeros(T, 6, dtype=dtype, device=betas.device)
        with torch.no_grad():
            v_shaped = model.sub_v_template + L.blend_shapes(betas, model.sub_shapedirs)        # (T,S,3)
            self.joints = model.J_template + torch.einsum("bl,jkl->bjk", betas, model.J_shapedirs)  # (T,5,3)
            zero = torch.zeros_like(self.jaw)
            rest = torch.cat([zero, zero, self.jaw, self.eyes], dim=1)
            feats = L.pose_features(L.batch_rodrigues(rest.reshape(-1, 3)).reshape(T, -1, 3, 3))
            # pose correctives of every joint but the neck (the neck's are added per call)
            feats[:, :9] = 0.0
            self.v_base = (v_shaped + torch.matmul(feats, model.sub_posedirs).reshape(T, -1, 3)).contiguous()
            self.neck_dirs = model.sub_posedirs[:9]                                                 # (9, 3S)
            jaw_eyes = torch.cat([self.jaw, self.eyes], dim=1).reshape(-1, 3)
            self.R_rest = L.batch_rodrigues(jaw_eyes).reshape(T, -1, 3, 3)
        self.S = self.v_base.shape[1]
        self.frame_offset = self.S * torch.arange(T, device=betas.device)[:, None, None]
        self.parents = [int(p) for p in model.parents.tolist()]
        self._cache = None          # landmark corners and weights for the last contour rows

    def __call__(self, global_orient: torch.Tensor, neck_pose: torch.Tensor) -> torch.Tensor:
        """(T,3), (T,3) -> landmarks (T,68,3)."""
        m = self.model
        T = global_orient.shape[0]
        head = torch.cat([global_orient, neck_pose], dim=1)
        R_head = rodrigues(head.reshape(-1, 3)).reshape(T, 2, 3, 3)
        R_local = [R_head[:, 0], R_head[:, 1]] + list(self.R_rest.unbind(1))
        # forward kinematics (lbs.batch_rigid_transform) with small_matmul
        Rw, tw = [], []
        for j, p in enumerate(self.parents):
            if p < 0:
                Rw.append(R_local[j])
                tw.append(self.joints[:, j])
            else:
                Rw.append(small_matmul(Rw[p], R_local[j]))
                tw.append(tw[p] + (Rw[p] * (self.joints[:, j] - self.joints[:, p])[:, None, :]).sum(-1))
        with torch.no_grad():                       # the contour rows are discrete: no gradient
            rows = contour_rows(Rw[1])
            if self._cache is None or not torch.equal(rows, self._cache[0]):
                pose = torch.cat([head, self.jaw, self.eyes], dim=1)
                idx, bary = m._landmark_tables(pose)                                # (T,68), (T,68,3)
                corners = m.sub_faces[idx].reshape(-1)                              # (T*68*3,)
                flat = (corners.reshape(T, -1) + self.frame_offset[:, :, 0]).reshape(-1)
                w = m.sub_lbs_weights.index_select(0, corners).reshape(T, -1, m.sub_lbs_weights.shape[1])
                base = self.v_base.reshape(-1, 3).index_select(0, flat).reshape(T, -1, 3)
                ones = torch.ones(T, base.shape[1], 1, dtype=base.dtype, device=base.device)
                self._cache = (rows, flat, base, w, bary.to(base.dtype), ones)
            _, flat, base, w, bary, ones = self._cache
        neck_feat = (R_local[1] - torch.eye(3, dtype=base.dtype, device=base.device)).reshape(T, 9)
        correctives = torch.matmul(neck_feat, self.neck_dirs).reshape(T * self.S, 3).index_select(0, flat)
        v = torch.cat([base + correctives.reshape(T, -1, 3), ones], dim=2)    # posed rest corners (T,204,4)
        # sum_j w_j (R_j v + t_j - R_j J_j): one (204 x 4)(4 x 3J) product per frame, then the
        # weighted sum (slicing per coordinate instead makes autograd fill a zero tensor per slice)
        J = len(Rw)
        R = torch.stack(Rw, dim=1)                                                  # (T,J,3,3)
        t = torch.stack(tw, dim=1) - (R * self.joints[:, :, None, :]).sum(-1)      # (T,J,3)
        M = torch.cat([R.permute(0, 3, 1, 2), t[:, None]], dim=1).reshape(T, 4, J * 3)
        x = (torch.bmm(v, M).reshape(T, -1, J, 3) * w[..., None]).sum(2)           # (T,204,3)
        return (x.reshape(T, -1, 3, 3) * bary[..., None]).sum(2)


# ----------------------------------------------------------------------------- Eq. 1
def fit_pose_camera(model, shape: np.ndarray, expression: np.ndarray, jaw_pose: np.ndarray,
                    global_init: np.ndarray, cam_init: np.ndarray, target_px: np.ndarray,
                    params: RefineParams, frame_weight: np.ndarray | None = None,
                    device: str | torch.device | None = None) -> dict:
    """Minimise Eq. 1 (module doc) with Adam for all T frames in one batch, on the model's device.

    shape (100,), expression (T,50), jaw_pose (T,3): fixed. global_init (T,3), cam_init (T,3):
    starting values (neck starts at 0). target_px (T,68,2): smoothed landmarks in portrait pixels.
    frame_weight (T,): landmark-term weight per frame (default 1).
    Stops when the loss's relative decrease per iteration, averaged over `check_every` iterations,
    falls below `tolerance` at the smallest step size (the step is halved on each stall), or at
    `max_iters`. Returns {global_orient, neck_pose, cam (T,3) float64 numpy, iterations, loss,
    loss_terms, converged, seconds}.
    """
    t_start = time.perf_counter()
    torch.manual_seed(params.seed)
    dev = model.v_template.device
    if device is not None and torch.device(device).type != dev.type:
        raise ValueError(f"the head model is on {dev}, not {device}: load it there (get_head_model(device))")
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
    T = len(expression)
    lmk_fn = PoseLandmarks(model, f32(shape), f32(expression), f32(jaw_pose))
    g0, c0 = f32(global_init), f32(cam_init)
    if torch.any(c0[:, 0] <= 0):
        raise ValueError("camera scale must be positive in every frame")
    target = pixels_to_ndc(f32(target_px), params.image_size).double()
    w = f32(np.ones(T) if frame_weight is None else frame_weight).double()[:, None, None]
    lmk_w = torch.ones(68, dtype=torch.float64, device=dev)
    lmk_w[:17] = params.contour_weight
    w = w * lmk_w[None, :, None]
    s_ref = float(torch.median(c0[:, 0]))

    # Adam works on offsets in radians / NDC so one step size suits every parameter.
    d_glob = torch.zeros(T, 3, device=dev, requires_grad=True)
    neck = torch.zeros(T, 3, device=dev, requires_grad=True)
    d_logs = torch.zeros(T, 1, device=dev, requires_grad=True)
    d_trans = torch.zeros(T, 2, device=dev, requires_grad=True)
    variables = [d_glob, neck, d_logs, d_trans]
    opt = torch.optim.Adam(variables, lr=params.lr)

    def evaluate():
        glob = g0 + d_glob
        cam = torch.cat([c0[:, :1] * torch.exp(d_logs), c0[:, 1:] + d_trans / s_ref], dim=1)
        pred = orth_project(lmk_fn(glob, neck), cam).double()
        data = (w * (pred - target) ** 2).sum()
        o = params.smooth_order
        smooth = (sq_diff(glob, o).double() + sq_diff(neck, o).double()
                  + sq_diff(camera_units(cam, s_ref), o).double())
        reg = (glob ** 2).sum().double() + params.neck_reg_scale * (neck ** 2).sum().double()
        loss = params.lambda_landmark * data + params.lambda_smooth * smooth + params.lambda_reg * reg
        return loss, (data, smooth, reg), glob, cam

    min_lr = params.lr * params.lr_floor
    prev, converged, it = None, False, 0
    for it in range(1, params.max_iters + 1):
        opt.zero_grad(set_to_none=True)
        loss, _, _, _ = evaluate()
        loss.backward()
        opt.step()
        if it % params.check_every == 0:
            value = float(loss.detach())
            if prev is not None:
                rel = (prev - value) / max(abs(value), 1e-30) / params.check_every
                if rel < params.tolerance:
                    group = opt.param_groups[0]
                    if group["lr"] <= min_lr:
                        converged = True
                        break
                    # Adam circles the minimum at a distance set by its step: shrink the step
                    # when progress stalls instead of guessing an iteration count.
                    for g in opt.param_groups:
                        g["lr"] = max(g["lr"] * 0.5, min_lr)
            prev = value
    with torch.no_grad():
        loss, (data, smooth, reg), glob, cam = evaluate()
    return {
        "global_orient": glob.cpu().double().numpy(), "neck_pose": neck.detach().cpu().double().numpy(),
        "cam": cam.cpu().double().numpy(), "iterations": it, "converged": converged,
        "loss": float(loss),
        "loss_terms": {"landmark": float(data), "smooth": float(smooth), "reg": float(reg)},
        "seconds": time.perf_counter() - t_start,
    }


def fit_expression(model, shape: np.ndarray, expression: np.ndarray, jaw_pose: np.ndarray,
                   global_orient: np.ndarray, neck_pose: np.ndarray, cam: np.ndarray,
                   target_px: np.ndarray, params: RefineParams, frame_weight: np.ndarray | None = None
                   ) -> dict:
    """The expression with the subject's shape, pose, jaw and camera fixed (after Eq. 1).

    The per-frame estimator fitted the expression together with its own shape; with the subject's
    shape (the scan's) the same expression no longer reproduces the landmarks, so a shape that
    explains the face better made the landmark fit worse after refinement than before. Minimises,
    with L-BFGS on the offsets from the per-frame expression e0:
        lambda_l * sum_t sum_k || P(c_t, FLAME(shape, e_t, j_t, g_t, n_t))_k - l_t,k ||^2  (k: the 51
                   landmarks inside the face)
      + lambda_anchor * sum_t ||e_t - e0_t||^2
    No smoothness term: the per-frame expression is already smooth where the face is (the
    estimator's own term and the smoothed landmarks), and Eq. 1's lambda_s flattened real
    expression changes (landmark error 1.6 -> 6.7 px on a demo.synthetic_motion sequence).
    The jaw contour is left out: Dlib's contour follows the visible outline, not the model's contour
    points, and fitting it bends the expression. The jaw is kept (unless `refit_jaw`): re-fitted with
    it, it followed the detector's lip gap (drawn smaller than the true one): jaw error 2.4 -> 4.7
    degrees on the truth capture in a trial. The anchor keeps what the per-frame estimate saw: at 1e-2
    the truth capture's face error rose 1.15 -> 1.24 mm and lip error fell 7.32 -> 7.25 mm; at 3e-3 the
    landmarks fit closer but face and lips got worse (1.35, 7.81 mm): the expression then follows
    the detector.
    shape (100,), the rest (T, .) as in fit_pose_camera; target_px (T,68,2) smoothed landmarks.
    Returns {expression (T,50) float64 numpy, iterations, converged, seconds}.
    """
    t_start = time.perf_counter()
    dev = model.v_template.device
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
    T = len(expression)
    e0, jaw = f32(expression), f32(jaw_pose)
    shp = f32(shape).reshape(1, -1).expand(T, -1)
    glob, neck, c = f32(global_orient), f32(neck_pose), f32(cam)
    target = pixels_to_ndc(f32(target_px), params.image_size).double()
    w = f32(np.ones(T) if frame_weight is None else frame_weight).double()[:, None, None]
    lmk_w = torch.ones(68, dtype=torch.float64, device=dev)
    lmk_w[:17] = params.refit_contour_weight
    w = w * lmk_w[None, :, None]
    d_expr = torch.zeros_like(e0, requires_grad=True)
    d_jaw = torch.zeros_like(jaw, requires_grad=params.refit_jaw)

    def evaluate():
        expr = e0 + d_expr
        pred = orth_project(model.landmarks(shp, expr, glob, neck, jaw + d_jaw), c).double()
        data = (w * (pred - target) ** 2).sum()
        anchor = (d_expr ** 2).sum().double() + (d_jaw ** 2).sum().double()
        loss = params.lambda_landmark * data + params.lambda_anchor * anchor
        return loss, expr

    # Pose, jaw and camera fixed, the energy is smooth and nearly quadratic in the offsets: L-BFGS
    # with a line search converges in tens of steps where Adam needs thousands.
    opt = torch.optim.LBFGS([d_expr, d_jaw] if params.refit_jaw else [d_expr], lr=1.0,
                            max_iter=params.refit_iters, history_size=20,
                            tolerance_grad=1e-10, tolerance_change=params.tolerance * 1e-3,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss, _ = evaluate()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[d_expr]
    it = int(state.get("n_iter", 0))
    # L-BFGS also stops when its function evaluations (max_eval, 1.25 x max_iter) run out, which the
    # line search can do before max_iter iterations: that is no convergence either
    out_of_evals = int(state.get("func_evals", 0)) >= opt.param_groups[0]["max_eval"]
    with torch.no_grad():
        _, expr = evaluate()
    return {"expression": expr.cpu().double().numpy(),
            "jaw_pose": (jaw + d_jaw).detach().cpu().double().numpy(),
            "iterations": it,
            "converged": it < params.refit_iters and not out_of_evals, "seconds": time.perf_counter() - t_start}


@torch.no_grad()
def project_landmarks_px(model, shape: np.ndarray, expression: np.ndarray, global_orient: np.ndarray,
                         neck_pose: np.ndarray, jaw_pose: np.ndarray, cam: np.ndarray, size: int
                         ) -> np.ndarray:
    """The model's 68 landmarks in portrait pixels. shape (100,) or (T,100), the rest (T,.) -> (T,68,2)."""
    dev = model.v_template.device
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
    T = len(expression)
    shp = f32(shape)
    shp = shp.expand(T, -1) if shp.dim() == 1 else shp
    lmk = model.landmarks(shp, f32(expression), f32(global_orient), f32(neck_pose), f32(jaw_pose))
    return ndc_to_pixels(orth_project(lmk, f32(cam)), size).cpu().double().numpy()


# ----------------------------------------------------------------------------- the whole stage
def compose_np(global_orient: np.ndarray, neck_pose: np.ndarray) -> np.ndarray:
    """Axis-angle (T,3) of R_global R_neck: the whole head rotation, the start of a later Eq. 1 round
    (which starts the neck at zero)."""
    return (Rotation.from_rotvec(global_orient) * Rotation.from_rotvec(neck_pose)).as_rotvec()


def clean_landmarks(landmarks: np.ndarray, ok: np.ndarray, params: RefineParams
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flag gross landmark detections (box-plot on the distance to a running median of the good
    frames) and smooth. landmarks (T,68,2), ok (T,) -> (smoothed (T,68,2), outlier mask (T,))."""
    ok = np.asarray(ok, bool)
    outlier = np.zeros(len(ok), bool)
    if ok.sum() >= 4:
        good_idx = np.flatnonzero(ok)
        # failed frames are bridged first so that their garbage never enters a median
        filled = interpolate_frames(np.asarray(landmarks, np.float64), ~ok)
        d = running_median_distances(filled, params.landmark_window)
        outlier[good_idx] = boxplot_outliers(d[good_idx], params.outlier_scale)
    smoothed = smooth_landmarks(landmarks, ok & ~outlier, 1.0, params.smooth_weight, method=params.smoother)
    return smoothed, outlier


def refine_motion(model, frames: dict, shape: np.ndarray, params: RefineParams | None = None,
                  fps: float = 30.0, device=None) -> tuple[dict, dict]:
    """Per-frame estimates of one segment -> (motion arrays, QC record).

    frames: the arrays of frames/segment_NNN.npz (landmarks (T,68,2), landmark_ok (T,), shape (T,100),
    expression (T,50), global_orient, jaw_pose, cam (T,3)). shape: the subject's (100,).
    Motion: expression (T,50), global_orient, neck_pose, jaw_pose, cam (T,3), shape (100,), fps;
    all float32.
    """
    params = params or RefineParams()
    t0 = time.perf_counter()
    T = len(frames["expression"])
    lmk_obs = np.asarray(frames["landmarks"], np.float64)
    ok = np.asarray(frames["landmark_ok"], bool)
    noise = landmark_noise_px(lmk_obs, ok)
    close_fit = fits_closely(noise, params.close_fit_noise_px)
    if close_fit:
        params = replace(params, **CLOSE_FIT)
    groups = {k: np.asarray(frames[k], np.float64) for k in PARAM_GROUPS}
    clean, masks = replace_group_outliers(groups, params.outlier_scale)
    smoothed, lmk_out = clean_landmarks(lmk_obs, ok, params)
    masks["landmarks"] = lmk_out
    t_pre = time.perf_counter() - t0

    expression, jaw_pose, refit = clean["expression"], clean["jaw_pose"], None
    glob0, cam0 = clean["global_orient"], clean["cam"]
    for _ in range(max(int(params.refit_rounds), 1)):
        # later rounds: Eq. 1 again with the re-fitted expression and jaw, from the last pose
        fit = fit_pose_camera(model, shape, expression, jaw_pose, glob0, cam0, smoothed, params,
                              device=device)
        if params.lambda_anchor <= 0:
            break
        refit = fit_expression(model, shape, expression, jaw_pose, fit["global_orient"],
                               fit["neck_pose"], fit["cam"], smoothed, params)
        expression, jaw_pose = refit["expression"], refit["jaw_pose"]
        glob0, cam0 = compose_np(fit["global_orient"], fit["neck_pose"]), fit["cam"]
    motion = {
        "expression": expression.astype(np.float32),
        "global_orient": fit["global_orient"].astype(np.float32),
        "neck_pose": fit["neck_pose"].astype(np.float32),
        "jaw_pose": jaw_pose.astype(np.float32),
        "cam": fit["cam"].astype(np.float32),
        "shape": np.asarray(shape, np.float32).reshape(-1),
        "fps": np.float32(fps),
    }

    size = params.image_size
    zeros = np.zeros((T, 3))
    before_px = project_landmarks_px(model, frames["shape"], groups["expression"], groups["global_orient"],
                                     zeros, groups["jaw_pose"], groups["cam"], size)
    after_px = project_landmarks_px(model, motion["shape"], motion["expression"], motion["global_orient"],
                                    motion["neck_pose"], motion["jaw_pose"], motion["cam"], size)
    good = ok & ~lmk_out
    deg = 180.0 / math.pi
    qc = {
        "frames": T,
        "landmark_noise_px": noise,            # inf without four consecutive good frames (the QC file: null)
        "close_fit": close_fit,
        "landmark_rmse_px": {
            "before": landmark_rmse(before_px, lmk_obs, good),
            "after": landmark_rmse(after_px, lmk_obs, good),
            "after_vs_smoothed": landmark_rmse(after_px, smoothed),
            "frames_measured": int(good.sum()),
        },
        "jitter": {
            "global_orient_deg": {"before": jitter(groups["global_orient"]) * deg,
                                  "after": jitter(motion["global_orient"]) * deg},
            "neck_pose_deg": {"before": 0.0, "after": jitter(motion["neck_pose"]) * deg},
            "cam": {"before": jitter(groups["cam"]), "after": jitter(motion["cam"])},
            "jaw_pose_deg": {"before": jitter(groups["jaw_pose"]) * deg,
                             "after": jitter(motion["jaw_pose"]) * deg},
            "expression": {"before": jitter(groups["expression"]), "after": jitter(motion["expression"])},
            "landmarks_px": {"before": jitter(interpolate_frames(lmk_obs, ~ok)), "after": jitter(after_px)},
        },
        "outlier_fraction": outlier_fractions(masks),
        "landmark_detections_failed": float(np.mean(~ok)),
        "iterations": fit["iterations"],
        "converged": fit["converged"],
        "loss": fit["loss"],
        "loss_terms": fit["loss_terms"],
        "expression_refit": (None if refit is None else
                             {"iterations": refit["iterations"], "converged": refit["converged"]}),
        "seconds": {"outliers_and_smoothing": t_pre, "fit": fit["seconds"],
                    "expression_refit": 0.0 if refit is None else refit["seconds"],
                    "total": time.perf_counter() - t0},
        "params": asdict(params),
    }
    return motion, qc
