"""The synthetic speaker's face: a real photograph moved by warps of its facial landmarks.

The photo is scikit-image's ``astronaut`` (Eileen Collins, a public-domain NASA portrait). Its
478 MediaPipe face-mesh landmarks (with depth) were computed once and ship as
``astronaut_mesh.npz``; rendering needs no landmark model. Each frame:

1. start from the landmarks, set the lips (opening, width), jaw, eyelids and brows for this
   frame's viseme, blink and emotion;
2. rotate the face points in 3-D about a pivot behind the face (yaw, pitch, roll) and project;
   a ring around hair and jaw follows the head, an outer ring and the frame border stay put;
3. warp the photo piecewise-affinely from the source triangles to the moved ones (far triangles
   drawn first, so the nose can cover a turning cheek), then paint the mouth interior (dark
   cavity under the upper teeth) where the lips have parted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.spatial import Delaunay


# MediaPipe face-mesh indices (the photo's left = the subject's right)
INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
UPPER_LIDS = ([246, 161, 160, 159, 158, 157, 173], [466, 388, 387, 386, 385, 384, 398])
LOWER_LIDS = ([7, 163, 144, 145, 153, 154, 155], [249, 390, 373, 374, 380, 381, 382])
LID_FOLDS = ([247, 30, 29, 27, 28, 56, 190], [467, 260, 259, 257, 258, 286, 414])
IRISES = (list(range(468, 473)), list(range(473, 478)))
BROWS_INNER = [107, 66, 55, 65, 336, 296, 285, 295]
BROWS_OUTER = [70, 63, 46, 53, 300, 293, 276, 283]
BROWS_MID = [105, 52, 334, 282]
CHEEKS = [205, 425, 50, 280, 187, 411]
MOUTH_CORNERS = [61, 291, 78, 308]

# The photo (512 px) is framed head-and-shoulders: this square of it becomes the video frame.
CROP = (76, 0, 300)  # x0, y0, side
# Points around hair and jaw that move with the head, in photo pixels.
HEAD_RING = [(226, 12), (265, 18), (293, 44), (304, 80), (302, 116), (292, 150), (272, 186), (250, 200),
             (226, 206), (200, 200), (180, 186), (160, 150), (149, 116), (151, 78), (162, 44), (189, 18)]
# Ends of the mouth interior, as a fraction of the photo's lip gap: the upper teeth's edge.
TEETH_EDGE = 0.62
MAX_GAP = 20.0  # lip gap (photo px) at mouth_open = 1
PIVOT_DEPTH = 70.0  # the head turns about a point this far behind the face plane (photo px)


@dataclass
class FaceState:
    """Everything that changes from frame to frame (the ground truth of that frame).

    pose: yaw, pitch, roll in degrees: the face is rotated by R = Rz(roll)·Rx(pitch)·Ry(yaw) in
    image axes (x right, y down, z away from the camera). mouth_open: lip gap in [0, 1]. mouth_width: relative
    change of mouth width (−0.4 … 0.3). blink: eyelid closure in [0, 1]. emotion: intensities
    of happy, sad, angry, surprised in [0, 1].
    """

    pose: np.ndarray = field(default_factory=lambda: np.zeros(3))
    mouth_open: float = 0.0
    mouth_width: float = 0.0
    blink: float = 0.0
    emotion: np.ndarray = field(default_factory=lambda: np.zeros(4))

    @classmethod
    def from_truth(cls, truth: dict, k: int, emotion: np.ndarray | None = None) -> FaceState:
        """Frame ``k`` of a clip's truth (``talker synth``'s truth/<id>.npz), with ``emotion`` in
        place of the frame's own where given."""
        return cls(pose=truth["pose"][k], mouth_open=float(truth["mouth_open"][k]),
                   mouth_width=float(truth["mouth_width"][k]), blink=float(truth["blink"][k]),
                   emotion=truth["emotion"][k] if emotion is None else emotion)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


class SyntheticFace:
    """Renders the astronaut photo in any :class:`FaceState` at ``resolution`` × ``resolution``."""

    def __init__(self, resolution: int = 256):
        from skimage import data

        self.resolution = resolution
        with resources.files(__package__).joinpath("astronaut_mesh.npz").open("rb") as f:
            mesh = np.load(f, allow_pickle=False)
            self.mesh = mesh["points"].astype(np.float64)  # (478, 3) photo px; z < 0 is nearer
        x0, y0, side = CROP
        photo = data.astronaut()
        self.scale = resolution / side
        self.image = cv2.resize(photo[y0 : y0 + side, x0 : x0 + side], (resolution, resolution),
                                interpolation=cv2.INTER_AREA if self.scale < 1 else cv2.INTER_CUBIC)
        self.offset = np.array([x0, y0], np.float64)

        face = self.mesh[:, :2]
        self.center = np.array([face[:, 0].mean(), face[[33, 263], 1].mean() + 25.0])
        self.face_width = face[:, 0].max() - face[:, 0].min()
        gap = self.mesh[INNER_LOWER, 1] - self.mesh[INNER_UPPER, 1]
        teeth = self.mesh[INNER_UPPER, :2] + TEETH_EDGE * np.stack([np.zeros_like(gap), gap], 1)
        self.teeth_src = teeth[1:-1]  # the corners are the lips' own points
        self.source_gap = gap
        ring = np.asarray(HEAD_RING, np.float64)
        fixed = self._fixed_points()
        self.n_mesh, self.n_teeth, self.n_ring = len(face), len(self.teeth_src), len(ring)
        self.src = np.concatenate([face, self.teeth_src, ring, fixed])  # photo px
        self.src_out = (self.src - self.offset) * self.scale  # output px
        self.triangles = Delaunay(self.src).simplices.astype(np.int32)
        t = self.src_out[self.triangles]
        self._src_area = np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))
        self._grid = np.stack(np.meshgrid(np.arange(resolution), np.arange(resolution)), -1).reshape(-1, 2)
        self._grid = np.concatenate([self._grid + 0.5, np.ones((len(self._grid), 1))], 1)  # pixel centres

        # lid shape, for blinking: lower-lid height at each upper-lid point
        self._lid_target = []
        for up, low in zip(UPPER_LIDS, LOWER_LIDS, strict=True):
            lx, ly = self.mesh[low, 0], self.mesh[low, 1]
            order = np.argsort(lx)
            self._lid_target.append(np.interp(self.mesh[up, 0], lx[order], ly[order]))
        self.teeth_color = np.median(photo[124:130, 216:236].reshape(-1, 3), axis=0)

    def _fixed_points(self) -> np.ndarray:
        x0, y0, side = CROP
        t = np.linspace(0, side, 9)
        border = np.concatenate([
            np.stack([x0 + t, np.full_like(t, y0)], 1), np.stack([x0 + t, np.full_like(t, y0 + side)], 1),
            np.stack([np.full_like(t[1:-1], x0), y0 + t[1:-1]], 1), np.stack([np.full_like(t[1:-1], x0 + side), y0 + t[1:-1]], 1),
        ])
        a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        outer = np.stack([226 + 112 * np.cos(a), 122 + 138 * np.sin(a)], 1)
        inside = (outer[:, 0] > x0 + 2) & (outer[:, 0] < x0 + side - 2) & (outer[:, 1] > y0 + 2) & (outer[:, 1] < y0 + side - 2)
        return np.concatenate([border, outer[inside]])

    # --- geometry -----------------------------------------------------------------------------

    def _gaussian_push(self, pts, idx, delta, radius):
        """Move points ``idx`` by ``delta`` (photo px) and their neighbourhood with a Gaussian falloff."""
        anchor = pts[idx, :2].mean(0)
        w = np.exp(-np.sum((pts[:, :2] - anchor) ** 2, 1) / radius**2)
        w[idx] = 1.0
        pts[:, :2] += w[:, None] * np.asarray(delta, np.float64)

    def landmarks(self, state: FaceState) -> tuple[np.ndarray, np.ndarray]:
        """Target positions (photo px) and depths of all warp points for ``state``."""
        p = self.mesh.copy()
        teeth = self.teeth_src.copy()
        happy, sad, angry, surprised = np.clip(state.emotion, 0, 1)
        side = np.sign(p[MOUTH_CORNERS, 0] - self.center[0])

        # expression: brows, lids, mouth corners (from a neutral face: the photo smiles)
        for i, s in zip(MOUTH_CORNERS, side, strict=True):
            dy = 2.5 - 6.0 * happy + 3.5 * sad + 1.5 * angry
            dx = s * (-2.0 + 3.5 * happy - 1.0 * angry)
            self._gaussian_push(p, [i], (dx, dy), 9.0)
        self._gaussian_push(p, CHEEKS, (0, -2.0 * happy), 14.0)
        for k, brow in enumerate((BROWS_INNER[:4], BROWS_INNER[4:])):
            toward = 1 if k == 0 else -1
            self._gaussian_push(p, brow, (toward * (3.0 * angry + 1.0 * sad), -4.5 * sad + 5.5 * angry - 6.0 * surprised), 10.0)
        self._gaussian_push(p, BROWS_OUTER + BROWS_MID, (0, 1.0 * sad + 2.0 * angry - 5.5 * surprised), 14.0)

        # lips: a closed mouth along the photo's mid-lip line, parted by mouth_open
        mid = (p[INNER_UPPER, :2] + p[INNER_LOWER, :2]) / 2
        mouth_c = mid.mean(0)
        k = np.linspace(0, 1, len(INNER_UPPER))
        roundness = np.clip(-state.mouth_width, 0, 1)
        profile = np.sin(np.pi * k) ** (0.8 - 0.4 * roundness)
        gap = float(np.clip(state.mouth_open, 0, 1.2)) * MAX_GAP * profile
        width = 1.0 + 0.28 * state.mouth_width
        # jaw: everything below the mouth drops with the lower lip, less towards the sides
        drop = 0.75 * float(np.clip(state.mouth_open, 0, 1.2)) * MAX_GAP
        below = p[:, 1] > mouth_c[1] + 2
        lateral = np.exp(-(((p[:, 0] - mouth_c[0]) / (0.55 * self.face_width)) ** 2))
        ramp = np.clip((p[:, 1] - mouth_c[1]) / 12.0, 0, 1)
        p[:, 1] += np.where(below, drop * lateral * ramp, 0.0)
        lip_idx = INNER_UPPER + INNER_LOWER + OUTER_UPPER + OUTER_LOWER
        lip_idx = list(dict.fromkeys(lip_idx))
        # width: lips (and a little of the cheeks) pulled towards or away from the centre
        w = np.exp(-np.sum((p[:, :2] - mouth_c) ** 2, 1) / 18.0**2)
        w[lip_idx] = 1.0
        p[:, 0] = mouth_c[0] + (p[:, 0] - mouth_c[0]) * (1 + (width - 1) * w)
        mid_x = mouth_c[0] + (mid[:, 0] - mouth_c[0]) * width
        mid_y = mid[:, 1]
        upper = np.stack([mid_x, mid_y - 0.25 * gap], 1)
        lower = np.stack([mid_x, mid_y + 0.75 * gap], 1)
        # outer lips keep their thickness around the inner ones
        p[OUTER_UPPER, :2] = upper + (self.mesh[OUTER_UPPER, :2] - self.mesh[INNER_UPPER, :2]) * [width, 1]
        p[OUTER_LOWER, :2] = lower + (self.mesh[OUTER_LOWER, :2] - self.mesh[INNER_LOWER, :2]) * [width, 1]
        p[INNER_UPPER, :2], p[INNER_LOWER, :2] = upper, lower
        teeth = upper[1:-1] + np.stack([np.zeros(len(teeth)), np.minimum(TEETH_EDGE * self.source_gap[1:-1], gap[1:-1])], 1)

        # eyes: surprise and anger open or narrow them; a blink brings the upper lid down
        for up, low, fold, iris, target in zip(UPPER_LIDS, LOWER_LIDS, LID_FOLDS, IRISES, self._lid_target, strict=True):
            p[up, 1] += -2.5 * surprised + 1.0 * angry + 1.2 * sad
            p[low, 1] -= 1.2 * happy
            b = float(np.clip(state.blink, 0, 1))
            lid_y = p[up, 1] + b * (target + (p[low, 1] - self.mesh[low, 1]).mean() - p[up, 1]) * 0.95
            p[fold, 1] += 0.45 * (lid_y - p[up, 1])
            p[iris, 1] += 0.5 * b * (target.mean() - p[iris, 1])
            p[up, 1] = lid_y

        # head pose: rotate the face in 3-D about a pivot behind it; the head ring follows
        rot = _rotation(*state.pose)
        pivot = np.array([self.center[0], self.center[1], PIVOT_DEPTH])
        face3 = (p - pivot) @ rot.T + pivot
        teeth3 = np.concatenate([teeth, np.full((len(teeth), 1), p[13, 2] + 4.0)], 1)
        teeth3 = (teeth3 - pivot) @ rot.T + pivot
        ring = np.asarray(HEAD_RING, np.float64)
        ring3 = np.concatenate([ring, np.full((len(ring), 1), PIVOT_DEPTH - 40.0)], 1)
        ring3 = (ring3 - pivot) @ rot.T + pivot
        fixed = self.src[self.n_mesh + self.n_teeth + self.n_ring :]
        points = np.concatenate([face3[:, :2], teeth3[:, :2], ring3[:, :2], fixed])
        depth = np.concatenate([face3[:, 2], teeth3[:, 2], ring3[:, 2], np.full(len(fixed), 1e3)])
        return points, depth

    # --- rendering ----------------------------------------------------------------------------

    def render(self, state: FaceState) -> np.ndarray:
        """One frame, (resolution, resolution, 3) uint8 RGB."""
        pts, depth = self.landmarks(state)
        dst = (pts - self.offset) * self.scale
        src = self.source_map(dst, depth) - 0.5
        frame = cv2.remap(self.image, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return self._paint_mouth(frame, dst, state)

    def drawn_triangles(self, dst: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(resolution, resolution) int32: the mesh triangle (of :attr:`triangles`) whose copy of
        the photo each pixel shows, for warp points moved to ``dst`` (output pixels) at ``depth``
        (:meth:`landmarks`): where moved triangles overlap (a lid raised past the iris's top, the
        nose over a turning cheek) the nearer one; a pixel on a triangle squeezed to a sliver
        (between closed lips, under a shut lid) takes the nearest drawn one."""
        tri = self.triangles
        # far triangles first, so nearer ones (nose over cheek) win
        order = np.argsort(-depth[tri].mean(1))
        # slivers are left out: their pixels take the neighbouring lip or lid instead of a
        # squeezed copy of the teeth
        area = np.abs(np.cross(dst[tri[:, 1]] - dst[tri[:, 0]], dst[tri[:, 2]] - dst[tri[:, 0]]))
        order = order[area[order] > 0.08 * self._src_area[order]]
        index = np.full((self.resolution, self.resolution), -1, np.int32)
        fixed_pt = np.round(dst * 16).astype(np.int32)
        for t in order:
            cv2.fillConvexPoly(index, fixed_pt[tri[t]], int(t), lineType=cv2.LINE_8, shift=4)
        holes = index < 0
        if holes.any():
            _, (iy, ix) = distance_transform_edt(holes, return_indices=True)
            index = index[iy, ix]
        return index

    def _triangle_maps(self, dst: np.ndarray, onto: np.ndarray) -> np.ndarray:
        """(T, 3, 2): for every mesh triangle, the affine map (homogeneous pixel → pixel) taking its
        corners at ``dst`` to its corners at ``onto`` (a collapsed one nudged to stay solvable)."""
        tri = self.triangles
        a = np.concatenate([dst[tri], np.ones((len(tri), 3, 1))], 2)  # (T, 3, 3)
        a[np.abs(np.linalg.det(a)) < 1e-6] += np.array([[0, 0, 0], [1e-3, 0, 0], [0, 1e-3, 0]])
        return np.linalg.solve(a, onto[tri])

    def source_map(self, dst: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(resolution, resolution, 2) float32: the point of the unmoved photo (output pixels,
        :attr:`src_out`'s frame) that each pixel's centre shows, for warp points moved to ``dst``
        (output pixels) at ``depth``: each pixel mapped by the affine map of the triangle it shows
        (:meth:`drawn_triangles`)."""
        maps = self._triangle_maps(dst, self.src_out)  # output pixel → source pixel
        flat = self.drawn_triangles(dst, depth).reshape(-1)
        valid = flat >= 0
        src = np.empty((flat.size, 2))
        src[valid] = np.einsum("pk,pkj->pj", self._grid[valid], maps[flat[valid]])
        src[~valid] = self._grid[~valid, :2]
        return src.reshape(self.resolution, self.resolution, 2).astype(np.float32)

    def move_between(self, before: FaceState, after: FaceState) -> np.ndarray:
        """(resolution, resolution, 2) float32 backward flow (output pixels) of the face from state
        ``before`` to ``after``: pixel p of ``after``'s frame shows the photo where ``before``'s
        frame shows it at p + flow(p), each pixel mapped by the triangle ``after``'s frame draws
        there (:meth:`drawn_triangles`: where moved triangles overlap, the nearer one, so a point
        a raised lid passes behind is not counted where the landmarks put it) onto that triangle
        in ``before``'s frame. The mouth's painted interior and seam are not moves and are left out."""
        (pb, _), (pa, depth) = self.landmarks(before), self.landmarks(after)
        dst_b, dst_a = ((p[:, :2] - self.offset) * self.scale for p in (pb, pa))
        maps = self._triangle_maps(dst_a, dst_b)  # after's pixel → before's
        index = self.drawn_triangles(dst_a, depth).reshape(-1)
        source = np.einsum("pk,pkj->pj", self._grid, maps[index])
        flow = source - self._grid[:, :2]
        return flow.reshape(self.resolution, self.resolution, 2).astype(np.float32)

    def _paint_mouth(self, frame: np.ndarray, dst: np.ndarray, state: FaceState) -> np.ndarray:
        seam_weight = 0.6 * float(np.clip(1 - state.mouth_open / 0.12, 0, 1))
        if seam_weight > 0:  # closing lips meet in a soft, darker seam
            seam = np.round(dst[INNER_UPPER] * 16).astype(np.int32)
            shade = frame.copy()
            cv2.polylines(shade, [seam], False, (110, 52, 54), max(2, round(1.5 * self.resolution / 256)), cv2.LINE_AA, shift=4)
            cv2.polylines(shade, [seam], False, (70, 24, 28), max(1, round(self.resolution / 256)), cv2.LINE_AA, shift=4)
            frame = cv2.addWeighted(frame, 1 - seam_weight, shade, seam_weight, 0)
        if state.mouth_open <= 0.02:
            return frame
        lower = dst[INNER_LOWER]
        teeth = dst[self.n_mesh : self.n_mesh + self.n_teeth]
        upper_edge = np.concatenate([dst[INNER_LOWER[:1]], teeth, dst[INNER_LOWER[-1:]]])
        band = 0.12 * self.source_gap.max() * self.scale  # the lower teeth just above the lower lip
        lower_edge = lower - np.stack([np.zeros(len(lower)), np.minimum(band, 0.3 * (lower[:, 1] - upper_edge[:, 1]))], 1)
        poly = np.concatenate([upper_edge, lower_edge[::-1]])
        ss = 4  # supersampled mask for smooth edges
        mask = np.zeros((self.resolution * ss, self.resolution * ss), np.uint8)
        cv2.fillPoly(mask, [np.round(poly * ss * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
        mask = cv2.resize(mask, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        mask = cv2.GaussianBlur(mask, (0, 0), 0.35 * max(1.0, self.resolution / 256))
        # a dark cavity, a little lighter (tongue) towards the bottom
        ys = np.linspace(0, 1, self.resolution, dtype=np.float32)[:, None, None]
        y_top, y_bot = upper_edge[:, 1].min() / self.resolution, lower[:, 1].max() / self.resolution
        t = np.clip((ys - y_top) / max(y_bot - y_top, 1e-3), 0, 1)
        cavity = (1 - t) * np.array([38, 14, 18], np.float32) + t * np.array([105, 42, 48], np.float32)
        alpha = 0.92 * min(1.0, state.mouth_open / 0.15)
        out = frame.astype(np.float32) * (1 - alpha * mask[..., None]) + cavity * (alpha * mask[..., None])
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
