"""Procedurally drawn street scenes with the 19 Cityscapes classes (numpy only).

Each scene: a sky gradient, buildings (with windows), walls, fences and trees on the
horizon; a road with lane marks between sidewalks and terrain; poles carrying traffic
lights and signs; cars, trucks, buses and trams; pedestrians; riders on bicycles and
motorcycles; parked bicycles. Objects are drawn far to near, sized by their distance below
the horizon, in a colour near (never equal to) their class colour, with shading,
per-image brightness and pixel noise: a small CNN learns it in minutes, yet colour alone
does not decide the class (lane marks are road, windows are building or car). Objects
are at least ~5 px wide at 128x256, so they survive an output stride of 4. All randomness
comes from the generator passed in, so a scene is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cityscapes_labels import CLASS_COLORS

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)  # fmt: skip
PALETTE = np.array(CLASS_COLORS, dtype=np.float32)


class Canvas:
    """An HxWx3 float image and an HxW label map, painted shape by shape (later covers earlier).

    ``cls=None`` paints colour only (details such as windows keep the label underneath);
    ``color=None`` picks a fresh colour near the class colour.
    """

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = height, width, rng
        self.image = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), 255, np.uint8)

    def color(self, cls: int, spread: float = 14.0) -> np.ndarray:
        """The class colour moved by a random offset of at least 6 levels, so never equal to it."""
        offset = self.rng.normal(0.0, spread, 3)
        offset *= max(1.0, 6.0 / (np.abs(offset).max() + 1e-6))
        return PALETTE[cls] + offset.astype(np.float32)

    def paint(self, cls, y0: int, x0: int, mask: np.ndarray, color, shade: float) -> None:
        """Fill ``mask`` (a window with top-left pixel (y0, x0)), darkening/lightening downwards by ``shade``."""
        color = self.color(cls) if color is None else np.asarray(color, np.float32)
        ys = slice(max(y0, 0), min(y0 + mask.shape[0], self.h))
        xs = slice(max(x0, 0), min(x0 + mask.shape[1], self.w))
        if ys.stop <= ys.start or xs.stop <= xs.start:  # entirely off the canvas
            return
        mask = mask[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        if not mask.any():
            return
        if shade:
            ramp = 1.0 + shade * np.linspace(-0.5, 0.5, mask.shape[0], dtype=np.float32)[:, None, None]
            self.image[ys, xs] = np.where(mask[..., None], color * ramp, self.image[ys, xs])
        else:
            self.image[ys, xs][mask] = color
        if cls is not None:
            self.label[ys, xs][mask] = cls

    def rect(self, cls, y0, y1, x0, x1, color=None, shade=0.0) -> None:
        y0, y1, x0, x1 = (int(round(v)) for v in (y0, y1, x0, x1))
        if y1 > y0 and x1 > x0:
            self.paint(cls, y0, x0, np.ones((y1 - y0, x1 - x0), bool), color, shade)

    def ellipse(self, cls, cy, cx, ry, rx, color=None, shade=0.0) -> None:
        y0, x0 = int(np.floor(cy - ry)), int(np.floor(cx - rx))
        yy, xx = np.ogrid[y0 : int(np.ceil(cy + ry)) + 1, x0 : int(np.ceil(cx + rx)) + 1]
        mask = ((yy + 0.5 - cy) / max(ry, 0.5)) ** 2 + ((xx + 0.5 - cx) / max(rx, 0.5)) ** 2 <= 1.0
        self.paint(cls, y0, x0, mask, color, shade)

    def polygon(self, cls, points, color=None, shade=0.0) -> None:
        """A convex polygon with corners (y, x), in either winding order."""
        pts = np.asarray(points, np.float32)
        y0, x0 = int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min()))
        yy, xx = np.ogrid[y0 : int(np.ceil(pts[:, 0].max())) + 1, x0 : int(np.ceil(pts[:, 1].max())) + 1]
        yy, xx = yy + 0.5, xx + 0.5
        sides = [(b[1] - a[1]) * (yy - a[0]) - (b[0] - a[0]) * (xx - a[1]) for a, b in zip(pts, np.roll(pts, -1, 0))]
        inside = np.logical_and.reduce([s >= 0 for s in sides]) | np.logical_and.reduce([s <= 0 for s in sides])
        self.paint(cls, y0, x0, inside, color, shade)

    def line(self, cls, p, q, thickness, color=None) -> None:
        """A thick segment from p to q, both (y, x)."""
        (py, px), (qy, qx) = p, q
        n = np.hypot(qy - py, qx - px) + 1e-6
        oy, ox = (qx - px) / n * thickness / 2, -(qy - py) / n * thickness / 2
        self.polygon(cls, [(py + oy, px + ox), (qy + oy, qx + ox), (qy - oy, qx - ox), (py - oy, px - ox)], color)


@dataclass
class Street:
    """The scene's perspective: depth d runs from 0 at the horizon to 1 at the bottom edge."""

    horizon: float
    vx: float  # vanishing point column
    left: float  # road edges at the bottom row
    right: float
    walk: tuple[float, float]  # sidewalk widths at the bottom row, left and right
    height: int

    def y(self, d: float) -> float:
        return self.horizon + d * (self.height - self.horizon)

    def road_x(self, d: float, side: float) -> float:
        """A column on the road at depth d; side -1 (left edge) .. 1 (right edge)."""
        return self.vx + side * d * ((self.right - self.vx) if side > 0 else (self.vx - self.left))

    def walk_x(self, d: float, right: bool, across: float) -> float:
        """A column on a sidewalk at depth d, ``across`` 0 (kerb) .. 1 (outer edge)."""
        if right:
            return self.vx + d * (self.right - self.vx + across * self.walk[1])
        return self.vx - d * (self.vx - self.left + across * self.walk[0])


def draw_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (uint8 HxWx3 RGB image, uint8 HxW train ids)."""
    c, u = Canvas(height, width, rng), rng.uniform
    vx = width * u(0.3, 0.7)
    s = Street(height * u(0.36, 0.48), vx, vx - u(0.5, 0.85) * width, vx + u(0.5, 0.85) * width,
               (u(0.15, 0.35) * width, u(0.15, 0.35) * width), height)  # fmt: skip
    draw_background(c, s)
    objects = [(u(0.3, 0.85), pole) for _ in range(rng.integers(1, 4))]
    for draw, p, most in ((car, 1.0, 4), (truck, 0.5, 1), (bus, 0.45, 1), (train, 0.35, 1),
                          (person, 1.0, 4), (cyclist, 0.8, 2), (parked_bicycle, 0.4, 2)):  # fmt: skip
        if rng.random() < p:
            for _ in range(rng.integers(1, most + 1)):
                objects.append((u(0.12, 0.3) if draw is train else u(0.25, 0.9), draw))
    for d, draw in sorted(objects, key=lambda o: o[0]):  # far to near
        draw(c, s, d)
    image = c.image * u(0.75, 1.25) + u(3.0, 9.0) * rng.standard_normal(c.image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), c.label


def draw_background(c: Canvas, s: Street) -> None:
    """Sky, skyline (buildings, trees, wall, fence), terrain, sidewalks and road."""
    u, h, w, hz = c.rng.uniform, c.h, c.w, s.horizon
    c.rect(SKY, 0, hz + 1, 0, w, c.color(SKY) * u(0.75, 0.95), shade=-u(0.3, 0.6))
    for _ in range(c.rng.integers(0, 3)):  # clouds: still sky
        c.ellipse(None, u(0.1, 0.6) * hz, u(0, w), u(0.02, 0.06) * h, u(0.05, 0.15) * w, c.color(SKY) + 45)
    x = u(-0.1, 0.05) * w
    while x < w:
        bw = u(0.1, 0.28) * w
        if c.rng.random() < 0.85:
            top, col = hz * u(0.05, 0.75), c.color(BUILDING, 22)
            c.rect(BUILDING, top, hz + 2, x, x + bw, col, shade=u(-0.3, 0.3))
            win, glass = max(3.0, 0.025 * h), col * u(0.45, 0.7) + np.float32([0, 5, 20])
            y0, x0 = int(top + win), int(x + win)
            yy, xx = np.ogrid[y0 : int(hz - win), x0 : int(x + bw - win)]
            grid = ((yy - y0) % (2.2 * win) < 1.3 * win) & ((xx - x0) % (2.2 * win) < win)
            c.paint(None, y0, x0, grid, glass, 0.0)
        x += bw + (u(0.02, 0.1) * w if c.rng.random() < 0.3 else 0)
    for _ in range(c.rng.integers(1, 5)):  # trees: trunk and crown are both vegetation
        tx, r = u(0, w), u(0.07, 0.16) * h
        c.rect(VEGETATION, hz - r, hz + 3, tx - 0.15 * r, tx + 0.15 * r, c.color(VEGETATION) * 0.6)
        c.ellipse(VEGETATION, hz - r * u(1.2, 1.8), tx, r, r * u(0.9, 1.4), shade=u(0.2, 0.5))
    if c.rng.random() < 0.75:
        x, wh = u(-0.1, 0.7) * w, u(0.07, 0.13) * h
        c.rect(WALL, hz - wh, hz + 3, x, x + u(0.2, 0.45) * w, shade=u(-0.3, 0.3))
    if c.rng.random() < 0.75:
        x, fh, fw, col = u(-0.1, 0.75) * w, u(0.06, 0.11) * h, u(0.2, 0.4) * w, c.color(FENCE)
        c.rect(FENCE, hz - fh, hz + 3, x, x + fw, col * 0.7)
        y0, x0 = int(hz - fh), int(x)
        posts = np.arange(x0, int(x + fw))[None, :] % max(4, int(0.03 * w)) < 2  # brighter posts and top rail
        c.paint(None, y0, x0, np.broadcast_to(posts, (int(hz + 3) - y0, posts.shape[1])), col * 1.1, 0.0)
        c.rect(None, hz - fh, hz - fh + 2, x, x + fw, col * 1.1)
    c.rect(TERRAIN, hz, h, 0, w, shade=u(0.0, 0.4))
    walk = [(hz, s.vx - 2), (h, s.left - s.walk[0]), (h, s.right + s.walk[1]), (hz, s.vx + 2)]
    c.polygon(SIDEWALK, walk, shade=0.3)
    c.polygon(ROAD, [(hz, s.vx - 1), (h, s.left), (h, s.right), (hz, s.vx + 1)], shade=u(0.1, 0.4))
    mark = c.color(ROAD) + u(90, 120)  # lane marks: white, but road
    for d in np.arange(u(0.05, 0.2), 1.0, 0.25):
        e, half = d + 0.1, 0.02 * w
        corners = [(s.y(d), s.vx - d * half), (s.y(e), s.vx - e * half),
                   (s.y(e), s.vx + e * half), (s.y(d), s.vx + d * half)]  # fmt: skip
        c.polygon(None, corners, mark)


def wheels(c: Canvas, cls: int, y: float, xs: tuple[float, ...], r: float) -> None:
    for x in xs:
        c.ellipse(cls, y - r, x, r, r, c.color(cls) * 0.35)
        c.ellipse(None, y - r, x, 0.45 * r, 0.45 * r, c.color(cls) * 0.7)


def pole(c: Canvas, s: Street, d: float) -> None:
    """A pole (>= 5 px wide at 128 rows) on a sidewalk, most with a traffic light and/or a sign."""
    u, y = c.rng.uniform, s.y(d)
    x = s.walk_x(d, c.rng.random() < 0.5, u(0.1, 0.5))
    pw = max(5.0 * c.h / 128, 0.07 * c.h * d)
    top = y - c.h * d * u(0.9, 1.2)
    c.rect(POLE, top, y, x - pw / 2, x + pw / 2, shade=0.2)
    if c.rng.random() < 0.7:
        lw, lh, lit = 2.2 * pw, 5 * pw, c.rng.integers(3)
        c.rect(LIGHT, top, top + lh, x - lw / 2, x + lw / 2)
        for k in range(3):
            lamp = c.color(LIGHT) * (1.3 if k == lit else 0.45)
            c.ellipse(None, top + lh * (k + 0.5) / 3, x, 0.6 * pw, 0.6 * pw, lamp)
    if c.rng.random() < 0.7:
        sy, r, shape = top + (y - top) * u(0.3, 0.5), pw * u(1.4, 2.0), c.rng.integers(3)
        if shape == 0:
            c.ellipse(SIGN, sy, x, r, r)
        elif shape == 1:
            c.rect(SIGN, sy - r, sy + r, x - r, x + r)
        else:
            c.polygon(SIGN, [(sy - r, x), (sy + r, x - 1.15 * r), (sy + r, x + 1.15 * r)])


def car(c: Canvas, s: Street, d: float) -> None:
    y, x, w = s.y(d), s.road_x(d, c.rng.uniform(-0.8, 0.8)), d * 0.38 * c.w * c.rng.uniform(0.85, 1.15)
    h, col = 0.5 * w, c.color(CAR)
    c.rect(CAR, y - 0.6 * h, y - 0.15 * h, x - w / 2, x + w / 2, col, shade=0.3)
    cabin = [(y - 0.6 * h, x - 0.42 * w), (y - h, x - 0.28 * w), (y - h, x + 0.22 * w), (y - 0.6 * h, x + 0.4 * w)]
    glass = [(y - 0.63 * h, x - 0.36 * w), (y - 0.93 * h, x - 0.25 * w),
             (y - 0.93 * h, x + 0.19 * w), (y - 0.63 * h, x + 0.34 * w)]  # fmt: skip
    c.polygon(CAR, cabin, col)
    c.polygon(None, glass, col * 0.4 + 40)
    wheels(c, CAR, y, (x - 0.3 * w, x + 0.3 * w), 0.2 * h)


def truck(c: Canvas, s: Street, d: float) -> None:
    y, x, w = s.y(d), s.road_x(d, c.rng.uniform(-0.7, 0.7)), d * 0.45 * c.w
    h, col, front = 0.55 * w, c.color(TRUCK), 1 if c.rng.random() < 0.5 else -1
    c.rect(TRUCK, y - h, y - 0.15 * h, x - w / 2, x + w / 2 - 0.28 * w, col, shade=0.2)  # cargo box
    cab = (x + w / 2 - 0.27 * w, x + w / 2) if front > 0 else (x - w / 2 - 0.27 * w, x - w / 2)
    c.rect(TRUCK, y - 0.7 * h, y - 0.15 * h, *cab, col * 1.2)
    c.rect(None, y - 0.65 * h, y - 0.45 * h, cab[0] + 0.04 * w, cab[1] - 0.04 * w, col * 0.5 + 50)
    wheels(c, TRUCK, y, (x - 0.35 * w, x - 0.1 * w, cab[0] + 0.12 * w), 0.15 * h)


def bus(c: Canvas, s: Street, d: float) -> None:
    y, x, w = s.y(d), s.road_x(d, c.rng.uniform(-0.6, 0.6)), d * 0.55 * c.w
    h, col = 0.42 * w, c.color(BUS)
    c.rect(BUS, y - h, y - 0.12 * h, x - w / 2, x + w / 2, col, shade=0.2)
    c.rect(None, y - 0.85 * h, y - 0.55 * h, x - 0.46 * w, x + 0.46 * w, col * 0.5 + 45)  # window band
    wheels(c, BUS, y, (x - 0.33 * w, x + 0.33 * w), 0.14 * h)


def train(c: Canvas, s: Street, d: float) -> None:
    """A tram crossing the far road."""
    y, x, w, h = s.y(d), c.w * c.rng.uniform(0.0, 1.0), c.w * c.rng.uniform(0.5, 1.0), c.h * c.rng.uniform(0.13, 0.2)
    col = c.color(TRAIN)
    c.rect(TRAIN, y - h, y, x - w / 2, x + w / 2, col, shade=0.3)
    c.rect(None, y - 0.85 * h, y - 0.5 * h, x - 0.48 * w, x + 0.48 * w, col * 0.5 + 50)
    for wx in np.arange(x - 0.48 * w, x + 0.48 * w, 0.12 * w):  # window pillars
        c.rect(None, y - 0.85 * h, y - 0.5 * h, wx, wx + 0.015 * w + 1, col)


def figure(c: Canvas, cls: int, y: float, x: float, ph: float, legs: bool = True) -> None:
    """A standing (or, without legs, seated) person of height ``ph`` with feet at (y, x)."""
    col = c.color(cls)
    c.ellipse(cls, y - 0.9 * ph, x, 0.1 * ph, 0.08 * ph, col * 1.25)
    c.rect(cls, y - 0.8 * ph, y - 0.42 * ph, x - 0.15 * ph, x + 0.15 * ph, col)
    if legs:
        c.rect(cls, y - 0.45 * ph, y, x - 0.13 * ph, x - 0.02 * ph, col * 0.6)
        c.rect(cls, y - 0.45 * ph, y, x + 0.02 * ph, x + 0.13 * ph, col * 0.6)


def person(c: Canvas, s: Street, d: float) -> None:
    on_road = c.rng.random() < 0.25
    x = s.road_x(d, c.rng.uniform(-1, 1)) if on_road else s.walk_x(d, c.rng.random() < 0.5, c.rng.uniform(0.1, 0.9))
    figure(c, PERSON, s.y(d), x, d * c.h * c.rng.uniform(0.55, 0.7))


def bike(c: Canvas, cls: int, y: float, x: float, bw: float) -> None:
    """A bicycle or motorcycle of length ``bw`` with wheels on row y."""
    r, col = 0.22 * bw, c.color(cls)
    back, front = (y - r, x - 0.5 * bw + r), (y - r, x + 0.5 * bw - r)
    if cls == MOTORCYCLE:
        c.ellipse(cls, y - 1.6 * r, x, 0.9 * r, 0.45 * bw, col, shade=0.3)
    else:
        seat = (y - 2.2 * r, x - 0.1 * bw)
        crank, bar = (y - r, x), (y - 2.6 * r, front[1])
        for p, q in ((back, seat), (seat, front), (back, crank), (crank, seat), (front, bar)):
            c.line(cls, p, q, max(3.0, 0.3 * r), col)
    wheels(c, cls, y, (back[1], front[1]), r)


def cyclist(c: Canvas, s: Street, d: float) -> None:
    y, x = s.y(d), s.road_x(d, c.rng.choice([-1, 1]) * c.rng.uniform(0.25, 0.7))
    cls, bw = (MOTORCYCLE, d * 0.3 * c.w) if c.rng.random() < 0.5 else (BICYCLE, d * 0.25 * c.w)
    ph, seat = d * c.h * 0.55, y - 0.45 * bw
    figure(c, RIDER, seat + 0.42 * ph, x, ph, legs=False)  # torso ends on the seat
    bike(c, cls, y, x, bw)
    c.line(RIDER, (seat - 0.05 * ph, x), (y - 0.2 * bw, x + 0.12 * bw), max(3.0, 0.1 * ph), c.color(RIDER) * 0.6)


def parked_bicycle(c: Canvas, s: Street, d: float) -> None:
    bike(c, BICYCLE, s.y(d), s.walk_x(d, c.rng.random() < 0.5, c.rng.uniform(0.3, 0.9)), d * 0.25 * c.w)
