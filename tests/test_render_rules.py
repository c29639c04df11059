"""flame_fit.render rule by rule, against references computed here: the pixel rays are the inverse of the
pipeline's camera (flame_fit.camera.orth_project), a flat quad covers exactly the pixels whose centres its
projection holds and is shaded ambient + (1 - ambient) * max(0, n.l) in its colour (lit on both sides), and
the uint8 image rounds. The head itself is drawn in test_preview.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flame_fit.camera import ndc_to_pixels, orth_project
from flame_fit.geometry import vertex_normals
from flame_fit.render import pixel_rays, render_mesh, render_mesh_mask

SIZE = 24


@pytest.mark.parametrize("cam", [(1.0, 0.0, 0.0), (2.5, 0.1, -0.3), (0.7, -0.4, 0.25)])
def test_each_ray_starts_where_the_camera_sees_its_pixel_centre_and_looks_down_minus_z(cam):
    rays = pixel_rays(np.array(cam), SIZE, depth=3.5)
    assert rays.shape == (SIZE * SIZE, 6) and rays.dtype == np.float32
    ndc = orth_project(torch.as_tensor(rays[None, :, :3], dtype=torch.float64),
                       torch.tensor([cam], dtype=torch.float64))[0].numpy()
    px = ndc_to_pixels(ndc, SIZE)
    v, u = np.divmod(np.arange(SIZE * SIZE), SIZE)                 # row-major: v is the row
    np.testing.assert_allclose(px, np.stack([u + 0.5, v + 0.5], 1), atol=1e-4)
    np.testing.assert_array_equal(rays[:, 2], 3.5)
    np.testing.assert_array_equal(rays[:, 3:], np.tile([0.0, 0.0, -1.0], (SIZE * SIZE, 1)))


def _quad(normal_tilt: float, flip: bool = False, half: float = 0.5, z: float = 0.0):
    """A square of side 2*half in x and y (two triangles), tilted about the x axis so that its normal is
    (0, -sin t, cos t) (z rises with y); flip reverses the winding (normal away from the camera)."""
    y = np.array([-half, -half, half, half])
    v = np.stack([np.array([-half, half, half, -half]), y, z + np.tan(normal_tilt) * y], 1)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    return v, (f[:, ::-1] if flip else f)


def _inside_pixels(half: float, cam, size: int) -> np.ndarray:
    """(size, size) bool: pixel centres that the camera maps inside |x|, |y| < half (model space)."""
    s, tx, ty = cam
    c = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    x = c[None, :] / s - tx
    y = -c[:, None] / s - ty
    return (np.abs(x) < half) & (np.abs(y) < half)


@pytest.mark.parametrize("tilt, flip", [(0.0, False), (0.5, False), (-0.7, False), (0.5, True)])
def test_a_flat_quad_is_one_lambert_shade_over_exactly_its_pixels(tilt, flip):
    cam = (1.3, 0.05, -0.1)
    v, f = _quad(tilt, flip, half=0.45)
    # the background's channels are 30.7, 100.8 and 200.6 grey levels: rounded 31, 101, 201, not truncated
    color, light, ambient = (0.9, 0.6, 0.3), (-0.4, 0.5, 1.0), 0.25
    bg = (30.7 / 255, 100.8 / 255, 200.6 / 255)
    img, mask = render_mesh_mask(v, f, np.array(cam), SIZE, color=color, background=bg, light=light,
                                 ambient=ambient)
    want_mask = _inside_pixels(0.45, cam, SIZE)
    assert mask.sum() > 100
    np.testing.assert_array_equal(mask, want_mask)
    n = np.array([0.0, -np.sin(tilt), np.cos(tilt)])              # towards the camera, both windings
    ldir = np.array(light) / np.linalg.norm(light)
    shade = ambient + (1 - ambient) * max(0.0, float(n @ ldir))
    want = np.round(np.array(color) * shade * 255).astype(int)
    assert np.abs(img[mask].astype(int) - want).max() <= 1
    np.testing.assert_array_equal(img[~mask], np.tile([31, 101, 201], ((~mask).sum(), 1)))
    np.testing.assert_array_equal(render_mesh(v, f, np.array(cam), SIZE, color=color, background=bg,
                                              light=light, ambient=ambient), img)


def test_a_surface_facing_away_from_the_light_gets_the_ambient_only():
    v, f = _quad(0.0, half=2.0)
    img, mask = render_mesh_mask(v, f, np.array([1.0, 0.0, 0.0]), 8, color=(1.0, 1.0, 1.0), light=(0, 0, -1),
                                 ambient=79.7 / 255)
    assert mask.all()
    np.testing.assert_array_equal(img, np.full((8, 8, 3), 80, np.uint8))


def test_the_nearest_surface_is_drawn_and_the_default_look():
    """Two quads along a ray: the front one (larger z) is seen. Defaults: skin colour, dark background."""
    front, f = _quad(0.6, half=0.3, z=0.2)
    back, _ = _quad(-0.6, half=0.9, z=-0.5)
    v = np.concatenate([front, back])
    faces = np.concatenate([f, f + 4])
    img, mask = render_mesh_mask(v, faces, np.array([1.0, 0.0, 0.0]), SIZE)
    both = _inside_pixels(0.3, (1.0, 0.0, 0.0), SIZE)
    ldir = np.array([-0.4, 0.5, 1.0]) / np.linalg.norm([-0.4, 0.5, 1.0])
    for region, tilt in ((both, 0.6), (mask & ~both, -0.6)):
        n = np.array([0.0, -np.sin(tilt), np.cos(tilt)])
        want = np.round(np.array([0.80, 0.72, 0.66]) * (0.25 + 0.75 * max(0.0, n @ ldir)) * 255)
        assert np.abs(img[region].astype(int) - want.astype(int)).max() <= 1
    np.testing.assert_array_equal(img[~mask][0], np.round(np.array([0.12, 0.12, 0.14]) * 255))


def test_an_empty_view_is_all_background():
    v, f = _quad(0.0, half=0.1)
    img, mask = render_mesh_mask(v, f, np.array([1.0, 5.0, 5.0]), 8)     # the quad is far off screen
    assert not mask.any()
    np.testing.assert_array_equal(img, np.full((8, 8, 3), [31, 31, 36], np.uint8))    # the default background


def _tent(half: float = 0.5, z_ridge: float = 0.3):
    """Two triangles folded along the y axis (ridge at x = 0, z = z_ridge, the outer edges at z = 0), seen
    from +z: its vertex normals differ (ridge: straight up the middle; outer corners: their face's)."""
    v = np.array([[0.0, -half, z_ridge], [0.0, half, z_ridge], [-half, 0.0, 0.0], [half, 0.0, 0.0]])
    f = np.array([[0, 1, 2], [1, 0, 3]])
    return v, f


def _phong_reference(v, f, cam, size, color, background, light, ambient):
    """Expected image, computed here: for each pixel centre, the triangle that holds it in the image
    plane (orthographic along z), its barycentric coordinates from the 2D solve, the vertex normals
    (flame_fit.geometry.vertex_normals, turned towards the camera) blended and normalised, Lambert +
    ambient."""
    vn = vertex_normals(v, f)
    vn *= np.where(vn[:, 2:] < 0, -1.0, 1.0)       # one winding throughout: face the camera either way
    s, tx, ty = cam
    c = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    img = np.tile(np.asarray(background, float), (size, size, 1))
    mask = np.zeros((size, size), bool)
    ldir = np.asarray(light, float) / np.linalg.norm(light)
    for r in range(size):
        for q in range(size):
            p = np.array([c[q] / s - tx, -c[r] / s - ty])
            for tri in f:
                a, b, d = v[tri, :2]
                m = np.array([b - a, d - a]).T
                l1, l2 = np.linalg.solve(m, p - a)
                if l1 >= -1e-9 and l2 >= -1e-9 and l1 + l2 <= 1 + 1e-9:
                    n = (1 - l1 - l2) * vn[tri[0]] + l1 * vn[tri[1]] + l2 * vn[tri[2]]
                    n /= np.linalg.norm(n)
                    img[r, q] = np.asarray(color) * (ambient + (1 - ambient) * max(0.0, float(n @ ldir)))
                    mask[r, q] = True
                    break
    return np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask


@pytest.mark.parametrize("flip", [False, True])
def test_normals_are_interpolated_across_each_triangle(flip):
    """On a folded surface the shade changes across each triangle as the blended vertex normals turn
    (Phong interpolation from the hit's barycentric coordinates), on both windings."""
    v, f = _tent()
    f = f[:, ::-1] if flip else f
    cam = np.array([1.6, 0.0, 0.0])
    kw = dict(color=(0.9, 0.8, 0.7), background=(0.0, 0.0, 0.0), light=(-0.6, 0.3, 0.8), ambient=0.1)
    want, want_mask = _phong_reference(v, f, cam, 20, **kw)
    img, mask = render_mesh_mask(v, f, cam, 20, **kw)
    assert mask.sum() > 60
    inner = want_mask & mask                # pixel centres exactly on an edge may go either way
    assert (mask ^ want_mask).sum() <= 2
    assert np.abs(img[inner].astype(int) - want[inner].astype(int)).max() <= 1
    assert len(np.unique(img[inner][:, 0])) > 10                  # the shade does vary across the tent


def test_the_defaults_are_one_look_for_both_entry_points():
    """render_mesh and render_mesh_mask draw the same picture with no style given: skin colour (0.80, 0.72,
    0.66) lit from the upper left (-0.4, 0.5, 1.0) with ambient 0.25, on (0.12, 0.12, 0.14)."""
    v, f = _tent()
    c, s = np.cos(0.7), np.sin(0.7)
    v = v @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])    # the ridge turned: normals in x and y
    cam = np.array([1.6, 0.1, 0.0])
    want, want_mask = _phong_reference(v, f, cam, 20, color=(0.80, 0.72, 0.66), background=(0.12, 0.12, 0.14),
                                       light=(-0.4, 0.5, 1.0), ambient=0.25)
    img, mask = render_mesh_mask(v, f, cam, 20)
    inner = want_mask & mask
    assert np.abs(img[inner].astype(int) - want[inner].astype(int)).max() <= 1
    np.testing.assert_array_equal(img[~mask], want[~mask])
    np.testing.assert_array_equal(render_mesh(v, f, cam, 20), img)


def test_a_mesh_far_in_front_of_the_origin_is_still_seen():
    """The rays start in front of the mesh's nearest point wherever the mesh is (here 5 units towards the
    camera, beyond its height and width)."""
    v, f = _quad(0.3, half=0.4, z=5.0)
    _, mask = render_mesh_mask(v, f, np.array([1.0, 0.0, 0.0]), 16)
    np.testing.assert_array_equal(mask, _inside_pixels(0.4, (1.0, 0.0, 0.0), 16))


def test_colours_outside_zero_to_one_are_clipped_and_near_white_rounds_to_the_nearest_level():
    v, f = _quad(0.0, half=0.2)
    img, mask = render_mesh_mask(v, f, np.array([1.0, 0.0, 0.0]), 8, background=(-0.3, 250.7 / 255, 1.4),
                                 color=(2.0, -1.0, 0.5), light=(0.0, 0.0, 1.0), ambient=0.2)
    np.testing.assert_array_equal(img[~mask][0], [0, 251, 255])
    np.testing.assert_array_equal(img[mask][0], [255, 0, 128])
