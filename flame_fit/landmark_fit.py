"""The weight-free per-frame estimator: FLAME fitted to 2D landmarks, one segment at a time.

A STAND-IN for EMOCA v2 (used when no EMOCA checkpoint is configured): one shape for the whole
segment and, per frame, expression, jaw, global pose and the orthographic camera, fitted to the
68 detected landmarks with FLAME's landmark-only forward. All frames are optimised as one batch.

Energy (per segment), residuals in units of each frame's landmark-box size so near and far faces
weigh the same:
    data   = mean over frames with landmarks, weighted mean over the 68 points of
             |proj - target|^2 / size^2 (the jaw contour weighs `contour_weight`)
    priors = w_shape |shape|^2 + w_expr mean_t |expr_t|^2 + jaw limits (opening in [0, max_jaw],
             small sideways/twist) + global pose beyond `max_global` radians
    smooth = w_smooth mean_t |x_{t+1} - x_t|^2 over expression, jaw, global, camera (optional)
Frames without landmarks get no data term and, after the fit, their values are interpolated
from the nearest frames that had landmarks (held at the ends).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from flame_fit.camera import orth_project, pixels_to_ndc
from flame_fit.outliers import interpolate_frames

STAND_IN_NAME = "weight-free landmark-fit estimator (stand-in for EMOCA v2)"


@dataclass
class FitParams:
    rigid_iters: int = 40       # camera + global pose only
    iters: int = 100            # everything
    lr: float = 0.04
    w_shape: float = 1e-4
    w_expr: float = 2e-4
    w_jaw: float = 0.1          # jaw rotation about y/z (sideways, twist)
    # weight of the 17 jaw-contour landmarks (the 51 others weigh 1): Dlib's contour follows the
    # visible outline of the face, which at yaw is not where the model's contour points are
    contour_weight: float = 0.1
    max_jaw: float = 0.5        # radians of opening
    max_global: float = 1.2     # radians
    w_smooth: float = 3e-2
    # full stage: "adam" (iters steps at lr) or "lbfgs" (at most iters steps, line search). Neither
    # converges at the default 100 Adam steps, and that is kept on purpose: on exact landmarks a
    # converged fit halves the jaw error (3.2 -> 1.0 degrees), but on Dlib's landmarks of the truth
    # capture it follows the detector's small lip gap (jaw 1.1 -> 3.8 degrees, lips 4.8 -> 10.9 mm);
    # see bench/fit_oracle.py
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in ("adam", "lbfgs"):   # a misspelt one would silently run Adam
            raise ValueError(f"FitParams.optimizer is 'adam' or 'lbfgs', not {self.optimizer!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def landmark_boxes_ndc(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """target (T,68,2) -> centre (T,2) and size (T,) = sqrt(w*h) of the landmark boxes."""
    lo, hi = target.min(1).values, target.max(1).values
    wh = (hi - lo).clamp(min=1e-6)
    return (lo + hi) / 2, torch.sqrt(wh[:, 0] * wh[:, 1])


def init_camera(target: torch.Tensor, model_lmk: torch.Tensor) -> torch.Tensor:
    """Orthographic camera that puts the neutral model's landmark box on each frame's box.

    target (T,68,2) NDC (y down), model_lmk (68,3) neutral landmarks -> cam (T,3) [s, tx, ty].
    ndc_x = s (X + tx), ndc_y = -s (Y + ty).
    """
    c_t, s_t = landmark_boxes_ndc(target)
    lo, hi = model_lmk[:, :2].min(0).values, model_lmk[:, :2].max(0).values
    c_m = (lo + hi) / 2
    s_m = torch.sqrt((hi - lo).clamp(min=1e-9).prod())
    s = s_t / s_m
    tx = c_t[:, 0] / s - c_m[0]
    ty = -c_t[:, 1] / s - c_m[1]
    return torch.stack([s, tx, ty], dim=1)


def interpolate_missing(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """values (T, ...) ; rows where ok is False get linear interpolation of the ok rows
    (held at the ends). Returns a copy."""
    return interpolate_frames(values, ~np.asarray(ok, bool))


def _smooth(x: torch.Tensor) -> torch.Tensor:
    return ((x[1:] - x[:-1]) ** 2).sum(-1).mean() if x.shape[0] > 1 else x.sum() * 0


def landmark_weights(contour_weight: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(68,) weights of the data term: `contour_weight` for the 17 jaw-contour landmarks, 1 for the
    51 others, scaled to mean 1 (so the data term is a weighted mean over the points)."""
    lmk_w = torch.ones(68, device=device)
    lmk_w[:17] = contour_weight
    return lmk_w / lmk_w.mean()


def energy_terms(proj: torch.Tensor, target: torch.Tensor, size: torch.Tensor, weight: torch.Tensor,
                 lmk_w: torch.Tensor, shape: torch.Tensor, expr: torch.Tensor, glob: torch.Tensor,
                 jaw: torch.Tensor, log_s: torch.Tensor, trans: torch.Tensor, p: FitParams
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The energy of the module doc, term by term.

    proj, target (T,68,2) NDC; size (T,) landmark-box sizes; weight (T,) 1 where a frame has
    landmarks, 0 where not; lmk_w (68,) (landmark_weights); shape (1,S); expr (T,E); glob, jaw (T,3);
    log_s (T,1), trans (T,2) the camera. Returns data, prior, smooth (scalars) and the per-frame data
    error err (T,).
    """
    err = (((proj - target) ** 2).sum(-1) * lmk_w).mean(-1) / size ** 2   # (T,)
    data = (err * weight).sum() / weight.sum()
    prior = p.w_shape * (shape ** 2).sum() + p.w_expr * (expr ** 2).sum(-1).mean()
    prior = prior + p.w_jaw * (jaw[:, 1:] ** 2).sum(-1).mean()
    prior = prior + (torch.relu(-jaw[:, 0]) ** 2 + torch.relu(jaw[:, 0] - p.max_jaw) ** 2).mean()
    prior = prior + (torch.relu(glob.abs() - p.max_global) ** 2).sum(-1).mean()
    smooth = p.w_smooth * (_smooth(expr) + _smooth(jaw) + _smooth(glob)
                           + _smooth(trans) * 1e-2 + _smooth(log_s))
    return data, prior, smooth, err


def fit_segment(model, landmarks_px: np.ndarray, ok: np.ndarray, image_size: int,
                params: FitParams | None = None, device: torch.device | str = "cpu") -> dict:
    """Fit one segment.

    model: flame_fit.flame.FlameModel; landmarks_px (T,68,2) portrait pixels; ok (T,) bool;
    image_size: the square portrait's size. Returns numpy float32: shape (100,), expression (T,50),
    global_orient (T,3), jaw_pose (T,3), cam (T,3) (portrait-frame camera), rmse_px (T,) landmark
    error per frame (NaN where no landmarks), and `loss` (float).
    """
    p = params or FitParams()
    device = torch.device(device)
    torch.manual_seed(p.seed)
    lm = np.asarray(landmarks_px, dtype=np.float32)
    ok = np.asarray(ok, dtype=bool)
    T = lm.shape[0]
    if lm.shape != (T, 68, 2) or ok.shape != (T,):
        raise ValueError(f"landmarks {lm.shape} / ok {ok.shape}: want (T,68,2) / (T,)")
    if not ok.any():
        raise ValueError("no frame of the segment has landmarks")
    # Frames without landmarks are fitted to their held value, with zero weight.
    lm = np.where(ok[:, None, None], lm, lm[np.flatnonzero(ok)[0]])
    lm = np.nan_to_num(lm)
    model = model.to(device)
    n_shape, n_expr = int(model.n_shape), int(model.n_expr)
    target = pixels_to_ndc(torch.as_tensor(lm, device=device), image_size)
    weight = torch.as_tensor(ok, dtype=torch.float32, device=device)
    _, size = landmark_boxes_ndc(target)
    # Without landmarks, a frame's box size is the nearest good frame's: only used as a scale.
    size = size.clamp(min=1e-3)

    zeros = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    with torch.no_grad():
        neutral = model.landmarks(zeros(1, n_shape), zeros(1, n_expr), zeros(1, 3))[0]
    cam0 = init_camera(target, neutral)

    shape = zeros(1, n_shape).requires_grad_(True)
    expr = zeros(T, n_expr).requires_grad_(True)
    glob = zeros(T, 3).requires_grad_(True)
    jaw = zeros(T, 3).requires_grad_(True)
    log_s = torch.log(cam0[:, :1]).clone().requires_grad_(True)
    trans = cam0[:, 1:].clone().requires_grad_(True)

    lmk_w = landmark_weights(p.contour_weight, device)

    def energy(full: bool):
        cam = torch.cat([log_s.exp(), trans], dim=1)
        lmk3d = model.landmarks(shape.expand(T, -1), expr, glob, None, jaw)
        proj = orth_project(lmk3d, cam)
        data, prior, smooth, err = energy_terms(proj, target, size, weight, lmk_w, shape, expr, glob, jaw,
                                                log_s, trans, p)
        return data + (prior if full else 0) + smooth, err, proj

    for stage, (vars_, iters) in enumerate((([glob, log_s, trans], p.rigid_iters),
                                             ([shape, expr, glob, jaw, log_s, trans], p.iters))):
        if stage == 1 and p.optimizer == "lbfgs":
            opt = torch.optim.LBFGS(vars_, lr=1.0, max_iter=iters, history_size=20, tolerance_grad=1e-12,
                                    tolerance_change=1e-14, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad(set_to_none=True)
                loss, _, _ = energy(True)
                loss.backward()
                return loss

            opt.step(closure)
            continue
        opt = torch.optim.Adam(vars_, lr=p.lr)
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss, _, _ = energy(stage == 1)
            loss.backward()
            opt.step()

    with torch.no_grad():
        loss, err, proj = energy(True)
        cam = torch.cat([log_s.exp(), trans], dim=1)
        px_err = ((proj - target) ** 2).sum(-1).mean(-1).sqrt() * image_size / 2
    rmse = px_err.cpu().numpy().astype(np.float32)
    rmse[~ok] = np.nan
    out = {
        "shape": shape.detach()[0].cpu().numpy().astype(np.float32),
        "expression": interpolate_missing(expr.detach().cpu().numpy(), ok).astype(np.float32),
        "global_orient": interpolate_missing(glob.detach().cpu().numpy(), ok).astype(np.float32),
        "jaw_pose": interpolate_missing(jaw.detach().cpu().numpy(), ok).astype(np.float32),
        "cam": interpolate_missing(cam.cpu().numpy(), ok).astype(np.float32),
        "rmse_px": rmse,
        "loss": float(loss),
    }
    return out
