"""Fit the head model's identity shape to a 3D scan: a similarity alignment of the landmarks,
then Adam on shape (and a refinement of the alignment) against landmarks and the scan surface.

Conventions: the alignment maps scan -> model, `x_model = s * R @ x_scan + t`. The model is
evaluated with zero expression and zero pose (a neutral scan). Losses are sums of per-item
negative log-likelihoods (landmarks with std `sigma_landmark`, surface points through a
Geman-McClure kernel of width `sigma_surface`, shape coefficients ~ N(0, 1)), so adding
scan points sharpens the fit instead of re-weighting the terms.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import time

import numpy as np
import torch

from flame_fit.geometry import (SurfaceIndex, face_normals_at, face_region_mask, geman_mcclure,
                                points_on_faces)
from flame_fit.lbs import batch_rodrigues

N_SHAPE = 100
N_EXPRESSION = 50
CONTOUR = slice(0, 17)      # iBUG jaw contour: view-dependent on a scan


# ----------------------------------------------------------------------------- similarity
def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            scale: float | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity `dst ~ s * R @ src + t` (Umeyama 1991), optionally weighted.

    src, dst: (N, 3); weights: (N,) >= 0; scale: a known s (then only R and t are fitted; the
    optimal R does not depend on s). Returns s (float), R (3, 3) proper rotation, t (3,).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs                      # (3, 3) = sum w dst src^T
    var_s = float(w @ (xs ** 2).sum(axis=1))
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:        # reflection -> flip the weakest axis
        sign[2, 2] = -1.0
    r = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign) / var_s) if scale is None else float(scale)
    t = mu_d - s * r @ mu_s
    return s, r, t


def apply_similarity(points: np.ndarray, s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """s * R @ p + t for points (N, 3)."""
    return s * np.asarray(points) @ np.asarray(r).T + np.asarray(t)


def invert_similarity(s: float, r: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The inverse of x -> s R x + t."""
    ri = np.asarray(r).T
    return 1.0 / s, ri, -(ri @ np.asarray(t)) / s


# ----------------------------------------------------------------------------- model access
def neutral_forward(model, shape: torch.Tensor):
    """Vertices (B, V, 3) and landmarks (B, 68, 3) of `shape` (B, 100) with zero expression/pose."""
    b = shape.shape[0]
    z = lambda n: torch.zeros(b, n, dtype=shape.dtype, device=shape.device)  # noqa: E731
    out = model(shape=shape, expression=z(N_EXPRESSION), global_orient=z(3), neck_pose=z(3),
                jaw_pose=z(3), eye_pose=z(6))
    return out.vertices, out.landmarks


class NeutralBasis:
    """The model at zero expression and pose as the linear map it is: vertices = v0 + B_v beta,
    landmarks = l0 + B_l beta.

    With every rotation the identity, LBS leaves the shaped template unchanged (no pose
    correctives, identity skinning), so the neutral head is exactly linear in the shape. The
    basis is read off the model's own forward pass once (101 evaluations, one batch), which makes
    each optimiser step a (V*3, 100) product instead of a full forward and backward through LBS.
    """

    def __init__(self, model, device: torch.device | str = "cpu"):
        device = torch.device(device)
        with torch.no_grad():
            shape = torch.cat([torch.zeros(1, N_SHAPE), torch.eye(N_SHAPE)]).to(device)
            v, l = neutral_forward(model, shape)
            self.v0, self.l0 = v[0], l[0]                                  # (V, 3), (68, 3)
            self.bv = (v[1:] - v[:1]).permute(1, 2, 0).contiguous()        # (V, 3, 100)
            self.bl = (l[1:] - l[:1]).permute(1, 2, 0).contiguous()        # (68, 3, 100)
            # guard the linearity the class relies on with one random shape
            beta = torch.linspace(-1.5, 1.5, N_SHAPE, device=device)[None]
            v_ref, _ = neutral_forward(model, beta)
            err = float((self(beta[0])[0] - v_ref[0]).abs().max())
            scale = float(self.v0.abs().max())
        if err > 1e-4 * scale:
            raise ValueError(f"head model is not linear in shape at zero pose (error {err:g})")

    def __call__(self, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """beta (100,) -> vertices (V, 3), landmarks (68, 3)."""
        return self.vertices(beta), self.landmarks(beta)

    def vertices(self, beta: torch.Tensor) -> torch.Tensor:
        return self.v0 + self.bv @ beta

    def landmarks(self, beta: torch.Tensor) -> torch.Tensor:
        return self.l0 + self.bl @ beta


def neutral_mesh(model, shape: np.ndarray, device: torch.device | str = "cpu"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and landmarks (68, 3) as float64 numpy for one shape (100,)."""
    with torch.no_grad():
        v, l = neutral_forward(model, torch.as_tensor(np.asarray(shape, np.float32)[None], device=device))
    return v[0].cpu().double().numpy(), l[0].cpu().double().numpy()


# ----------------------------------------------------------------------------- fit
@dataclasses.dataclass(frozen=True)
class ScanFitConfig:
    """Fit settings; lengths are in model units (FLAME: metres)."""
    max_iters: int = 3000
    min_iters: int = 60
    tolerance: float = 5e-5            # relative change of the mean loss between `window`s
    # ... and the largest vertex displacement of the neutral head between the mean shapes of the
    # last `shape_windows` windows and of the ones before (model units; None: the loss alone
    # decides). The loss is dominated by what the model cannot explain (hair, holes, noise), so it
    # settles while the shape still slides along the surface: on the four truth captures the loss
    # rule alone stopped at 180-400 iterations, up to 0.47 mm (given landmarks) and 0.45 mm
    # (automatic ones) short of where 3000 iterations end. Means over 100 iterations average out
    # Adam's scatter (about 0.01 mm between successive 20-iteration means); 0.01 mm stopped 14 fits
    # within 0.013 mm of where 3000 iterations end.
    shape_tolerance: float | None = 1e-5
    shape_windows: int = 5
    window: int = 20
    lr_shape: float = 0.1
    lr_rotation: float = 5e-3          # rad
    lr_translation: float = 1e-3       # model units
    lr_log_scale: float = 5e-3
    lr_decay: float = 0.999            # per iteration
    sigma_landmark: float = 0.001      # 1 mm (the pipeline sets it from [scan_fit] landmark_sigma_mm)
    sigma_surface: float = 0.002       # 2 mm kernel width
    tangential_weight: float = 0.1     # point-to-point share next to point-to-plane
    # weight of sum(beta^2) (beta ~ N(0, 1)). The data terms' widths (2 mm surface kernel, 1 mm
    # landmarks) exceed the scan's noise (0.3 mm), so the prior weighs more than its share: with
    # landmarks given, 1.0 left two of six generated scans at 0.52 and 0.76 mm (mean vertex error)
    # where 0.3 fits all six and the four truth captures under 0.5 mm
    shape_prior: float = 0.3
    contour_weight: float = 0.1        # jaw-contour landmarks are view-dependent on a scan
    # face region: within this x outer-eye-corner distance of a landmark (forehead, cheeks, chin,
    # the front of the neck) and at most `region_behind` x that distance behind the rearmost one
    # (in front of the ears' back); the robust kernel handles what hair and holes leave inside
    # (1.6 / 3.0 / 4000 lowered the truth capture's error from a zero start, 0.74 -> 0.49 mm, but
    # from the monocular start the fit pulled the face onto the hair cap: 6.8 mm; kept narrow)
    region_radius: float = 1.0
    region_behind: float = 1.5
    max_points: int = 2000
    # starts probed before the full fit: the landmark similarity scaled about the face by each
    # factor, plus its robust ICP refinement (icp_iters 0: none); each probe runs probe_iters
    scale_starts: tuple = (0.94, 1.0, 1.06)
    icp_iters: int = 30
    probe_iters: int = 120
    rebuild_every: int = 10            # closest-point correspondences are refreshed this often
    seed: int = 0
    # scan -> model scale when the scan's units are known (a metric light-stage scan: 1e-3 for mm
    # and a model in metres); None: fitted. A free scale trades against the size directions of
    # the shape space (the prior buys a smaller head, the scale makes up the size).
    fixed_scale: float | None = None


@dataclasses.dataclass
class ScanFitResult:
    shape: np.ndarray                  # (100,) float32
    scale: float                       # scan -> model
    rotation: np.ndarray               # (3, 3)
    translation: np.ndarray            # (3,)
    iterations: int
    converged: bool
    shape_change: float                # model units: the last comparison of mean shapes (inf: none)
    seconds: float
    before: dict                       # residuals in model units at the start
    after: dict                        # ... and at the end
    losses: list                       # loss every `window` iterations
    n_region_points: int
    warnings: list


def landmark_weights(n: int = 68, contour_weight: float = 0.1, valid: np.ndarray | None = None) -> np.ndarray:
    """(68,) weights: 1 for the 51 static landmarks, `contour_weight` for the jaw contour,
    0 where `valid` (68,) bool is False."""
    w = np.ones(n)
    w[CONTOUR] = contour_weight
    if valid is not None:
        w = w * np.asarray(valid, dtype=bool)
    return w


def residuals(model_vertices: np.ndarray, faces: np.ndarray, model_landmarks: np.ndarray,
              scan_points: np.ndarray, scan_landmarks: np.ndarray, weights: np.ndarray) -> dict:
    """Landmark and surface residuals, all in model units (points already in the model frame).

    model_vertices (V, 3), faces (F, 3), model_landmarks (68, 3), scan_points (N, 3),
    scan_landmarks (68, 3), weights (68,). Surface distances are point-to-triangle.
    """
    used = weights > 0
    lmk = np.linalg.norm(model_landmarks - scan_landmarks, axis=1)[used]
    surf = SurfaceIndex(model_vertices, faces).distance(scan_points)
    return {"landmark_mean": float(lmk.mean()), "landmark_median": float(np.median(lmk)),
            "landmark_max": float(lmk.max()),
            "surface_median": float(np.median(surf)), "surface_mean": float(surf.mean()),
            "surface_p95": float(np.percentile(surf, 95))}


def select_face_points(points_model: np.ndarray, landmarks_model: np.ndarray, config: ScanFitConfig,
                       forward: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Indices (M,) of scan points (model frame, (N, 3)) in the face region, at most
    `config.max_points`, subsampled deterministically."""
    eye = float(np.linalg.norm(landmarks_model[36] - landmarks_model[45]))
    static = landmarks_model[17:]
    mask = face_region_mask(points_model, static, config.region_radius * eye, forward,
                            config.region_behind * eye)
    idx = np.flatnonzero(mask)
    if len(idx) > config.max_points:
        rng = np.random.default_rng(config.seed)
        idx = np.sort(rng.choice(idx, config.max_points, replace=False))
    return idx


def icp_similarity(model_vertices: np.ndarray, faces: np.ndarray, model_landmarks: np.ndarray,
                   scan_points: np.ndarray, scan_landmarks: np.ndarray, weights: np.ndarray,
                   init: tuple, config: ScanFitConfig) -> tuple[float, np.ndarray, np.ndarray]:
    """Refine a scan -> model similarity against the initial model surface (robust ICP).

    Landmarks a detector found can sit a few mm off in a consistent direction, which biases the
    landmark similarity's scale; the shape fit hardly undoes that (a global scale of the scan and
    the size directions of the shape space explain the face region almost equally well), so this
    start lets the surface decide the scale first. model_vertices (V, 3), faces (F, 3),
    model_landmarks (68, 3); scan_points (N, 3) and scan_landmarks (68, 3) in scan units;
    weights (68,).
    Returns (s, R, t) scan -> model.
    """
    s, r, t = init
    index = SurfaceIndex(model_vertices, faces)
    used = weights > 0
    lmk_w = weights[used] / weights[used].sum()
    for _ in range(config.icp_iters):
        q = apply_similarity(scan_points, s, r, t)
        _, _, foot = index.closest(q)
        d2 = np.sum((q - foot) ** 2, axis=1)
        # Geman-McClure IRLS weights, normalised so the surface counts as len(points) observations
        w = (config.sigma_surface ** 2 / (d2 + config.sigma_surface ** 2)) ** 2
        src = np.concatenate([scan_points, scan_landmarks[used]])
        dst = np.concatenate([foot, model_landmarks[used]])
        lw = lmk_w * 68.0 * (config.sigma_surface / config.sigma_landmark) ** 2
        s, r, t = umeyama(src, dst, np.concatenate([w, lw]), scale=config.fixed_scale)
    return s, r, t


def _optimise(basis: NeutralBasis, faces: torch.Tensor, faces_np: np.ndarray, region_scan: np.ndarray,
              scan_landmarks: np.ndarray, weights: np.ndarray, beta0: np.ndarray, sim0: tuple,
              config: ScanFitConfig, device: torch.device, progress=None) -> dict:
    """Adam on shape and a refinement of the similarity from one start.

    region_scan (N, 3) and scan_landmarks (68, 3) in scan units, sim0 = (s, R, t) scan -> model.
    Returns {'shape' (100,), 'sim', 'iterations', 'converged', 'shape_change' (model units, the last
    comparison of mean shapes; inf before the first), 'loss' (mean of the last window),
    'losses'}.
    """
    dt = torch.float32
    s0, r0, t0_ = sim0
    pts = torch.as_tensor(apply_similarity(region_scan, s0, r0, t0_), dtype=dt, device=device)
    lmk_target = torch.as_tensor(apply_similarity(scan_landmarks, s0, r0, t0_), dtype=dt, device=device)
    w = torch.as_tensor(weights / weights.sum(), dtype=dt, device=device)
    beta = torch.tensor(beta0, dtype=dt, device=device, requires_grad=True)
    rot = torch.zeros(3, dtype=dt, device=device, requires_grad=True)
    trans = torch.zeros(3, dtype=dt, device=device, requires_grad=True)
    log_s = torch.zeros(1, dtype=dt, device=device, requires_grad=config.fixed_scale is None)
    groups = [{"params": [beta], "lr": config.lr_shape}, {"params": [rot], "lr": config.lr_rotation},
              {"params": [trans], "lr": config.lr_translation}]
    if config.fixed_scale is None:
        groups.append({"params": [log_s], "lr": config.lr_log_scale})
    opt = torch.optim.Adam(groups)
    # a gentle decay lets the last iterations settle instead of jittering at the Adam step size
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=config.lr_decay)

    def transform(x: torch.Tensor) -> torch.Tensor:
        # refinement of the alignment, applied in the model frame
        return torch.exp(log_s) * x @ batch_rodrigues(rot[None])[0].T + trans

    # landmark loss ~ sum over landmarks, surface loss ~ sum over points: weight both as
    # likelihoods; the landmark sum counts as 68 observations.
    lmk_scale = 68.0 / config.sigma_landmark ** 2
    foot0 = foot_basis = normal = None
    losses, history = [], []
    beta_sum = torch.zeros_like(beta.detach())
    k = config.shape_windows
    recent = collections.deque(maxlen=2 * k)   # the mean shape (100,) of each of the last 2k windows
    shape_change = float("inf")
    converged = False
    it = 0
    for it in range(1, config.max_iters + 1):
        q = transform(pts)
        if foot0 is None or (it - 1) % config.rebuild_every == 0:
            with torch.no_grad():
                verts = basis.vertices(beta)
            ids, bc, _ = SurfaceIndex(verts.cpu().numpy(), faces_np).closest(q.detach().cpu().numpy())
            face_ids = torch.as_tensor(ids, device=device)
            bary = torch.as_tensor(bc, dtype=dt, device=device)
            # between rebuilds each foot point is linear in the shape and its normal is held
            # fixed (as in point-to-plane ICP): foot = foot0 + foot_basis @ beta
            foot0 = points_on_faces(basis.v0, faces, face_ids, bary)                 # (N, 3)
            corners = basis.bv[faces[face_ids]]                                        # (N, 3, 3, 100)
            foot_basis = (corners * bary[:, :, None, None]).sum(dim=1)                 # (N, 3, 100)
            normal = face_normals_at(verts, faces, face_ids)
        foot = foot0 + foot_basis @ beta
        lmk = basis.landmarks(beta)
        r = q - foot
        rn = (r * normal).sum(-1)
        sq = rn ** 2 + config.tangential_weight * (r ** 2).sum(-1)
        loss_surf = geman_mcclure(sq, config.sigma_surface).sum()
        loss_lmk = lmk_scale * (w * ((lmk - transform(lmk_target)) ** 2).sum(-1)).sum()
        loss_prior = config.shape_prior * (beta ** 2).sum()
        loss = loss_surf + loss_lmk + loss_prior
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        beta_sum += beta.detach()
        if progress is not None:
            progress.update(1)
        if it % config.window == 0:
            losses.append(history[-1])
            recent.append(beta_sum / config.window)
            beta_sum = torch.zeros_like(beta_sum)
            if len(recent) == recent.maxlen:
                means = torch.stack(tuple(recent))                                    # (2k, 100)
                step = means[k:].mean(0) - means[:k].mean(0)
                shape_change = float((basis.bv @ step).norm(dim=-1).max())
            if it >= config.min_iters and len(history) > config.window:
                prev = float(np.mean(history[-2 * config.window:-config.window]))
                cur = float(np.mean(history[-config.window:]))
                still = config.shape_tolerance is None or shape_change <= config.shape_tolerance
                if abs(prev - cur) <= config.tolerance * max(abs(cur), 1e-12) and still:
                    converged = True
                    break

    with torch.no_grad():
        s_ref = float(torch.exp(log_s))
        r_ref = batch_rodrigues(rot[None])[0].cpu().double().numpy()
        t_ref = trans.cpu().double().numpy()
    # compose: x_model = s_ref R_ref (s0 R0 x + t0) + t_ref
    scale = s_ref * s0
    rotation = r_ref @ r0
    translation = s_ref * r_ref @ t0_ + t_ref
    return {"shape": beta.detach().cpu().numpy().astype(np.float32), "sim": (scale, rotation, translation),
            "iterations": it, "converged": converged, "losses": losses, "shape_change": shape_change,
            "loss": float(np.mean(history[-config.window:]))}


def fit_scan(model, scan_points: np.ndarray, scan_landmarks: np.ndarray, weights: np.ndarray,
             init_shape: np.ndarray | None = None, config: ScanFitConfig = ScanFitConfig(),
             device: torch.device | str = "cpu", progress=None) -> ScanFitResult:
    """Fit shape (100,) and a similarity (scan -> model) to a scan.

    model: FlameModel; scan_points: (N, 3) scan vertices in scan units; scan_landmarks: (68, 3)
    in scan units; weights: (68,) per-landmark weights (0 = unused); init_shape: (100,) or None
    (zeros). `progress` (optional) gets `.update(1)` per iteration.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    faces_np = model.faces.detach().cpu().numpy().astype(np.int64)
    faces = torch.as_tensor(faces_np, device=device)
    beta0 = (np.zeros(N_SHAPE, np.float32) if init_shape is None
             else np.asarray(init_shape, np.float32).reshape(N_SHAPE))
    weights = np.asarray(weights, dtype=np.float64)
    if (weights > 0).sum() < 4:
        raise ValueError("need at least 4 landmarks with weight > 0 for the similarity alignment")

    # 1. similarity alignment of the landmarks (scan -> model), static ones dominating
    verts0, lmk0 = neutral_mesh(model, beta0, device)
    s0, r0, t0_ = umeyama(scan_landmarks, lmk0, weights, scale=config.fixed_scale)
    pts0 = apply_similarity(scan_points, s0, r0, t0_)
    lmk_scan0 = apply_similarity(scan_landmarks, s0, r0, t0_)

    # 2. face-region scan points (chosen once: the alignment only moves by millimetres later)
    region = select_face_points(pts0, lmk0, config)
    warnings = []
    if len(region) < 200:
        warnings.append(f"only {len(region)} scan points in the face region: the surface term is weak")
    before = residuals(verts0, faces_np, lmk0, pts0[region], lmk_scan0, weights)

    # 3. the fit: short probes from several starts (the landmark similarity scaled about the face
    # by `scale_starts`, and its robust ICP refinement), then the full fit from the probe that
    # ended with the lowest loss (same points and terms, so the losses compare). A detector's
    # landmarks can bias the similarity's scale by several percent, and from there Adam settles
    # in a valley where the size directions of the shape compensate the scale.
    basis = NeutralBasis(model, device)
    centre = lmk0[17:].mean(axis=0)
    factors = config.scale_starts if config.fixed_scale is None else (1.0,)
    starts = [(f * s0, r0, f * t0_ + (1 - f) * centre) for f in factors]
    if config.icp_iters > 0 and len(region) >= 20:
        starts.append(icp_similarity(verts0, faces_np, lmk0, scan_points[region], scan_landmarks, weights,
                                     (s0, r0, t0_), config))
    region_scan = scan_points[region]
    if len(starts) > 1:
        probe = dataclasses.replace(config, max_iters=config.probe_iters, min_iters=config.probe_iters)
        runs = [_optimise(basis, faces, faces_np, region_scan, scan_landmarks, weights, beta0, start,
                          probe, device, progress) for start in starts]
        best = min(runs, key=lambda r: r["loss"])
        beta_start, sim_start = best["shape"], best["sim"]
    else:
        beta_start, sim_start = beta0, starts[0]
    best = _optimise(basis, faces, faces_np, region_scan, scan_landmarks, weights, beta_start, sim_start,
                     config, device, progress)
    shape, (scale, rotation, translation) = best["shape"], best["sim"]
    it, converged, losses = best["iterations"], best["converged"], best["losses"]
    shape_change = best["shape_change"]
    verts1, lmk1 = neutral_mesh(model, shape, device)
    after = residuals(verts1, faces_np, lmk1,
                      apply_similarity(scan_points[region], scale, rotation, translation),
                      apply_similarity(scan_landmarks, scale, rotation, translation), weights)
    if not converged:
        moved = ("" if not math.isfinite(shape_change) else
                 f" ({shape_change * 1000:.3g} mm at model scale over the last "
                 f"{config.shape_windows * config.window} iterations)")
        warnings.append(f"fit did not converge in {config.max_iters} iterations: the relative loss change "
                        f"stayed above {config.tolerance:g} or the head kept moving{moved}")
    if after["surface_median"] > 3 * config.sigma_surface:
        warnings.append(f"median surface residual {after['surface_median'] * 1000:.1f} mm (model scale) "
                        "is large: "
                        "check the landmarks and the picture")
    return ScanFitResult(shape=shape, scale=scale, rotation=rotation, translation=translation,
                         iterations=it, converged=converged, shape_change=shape_change,
                         seconds=time.perf_counter() - t0,
                         before=before, after=after, losses=losses, n_region_points=int(len(region)),
                         warnings=warnings)
