"""The built-in demo dataset: coloured shapes on textured backgrounds, generated offline.

It exists so the whole path (prepare, train, evaluate) can be shown in minutes on a laptop
CPU with no download. It is learnable but not trivial (random colours, sizes, rotations,
positions and backgrounds); it is a demo, not a benchmark. Every shape stands out from its
background (a colour far from the background's mean, a size of a third of the image or
more): a label that no eye could read from the image would only teach noise.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from resnetctl.data.records import ArrayRecords, SourceData

CLASSES = ["circle", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon"]


def _polygon(center, radius, sides, angle, star=False):
    points = []
    count = sides * 2 if star else sides
    for k in range(count):
        r = radius * (0.45 if star and k % 2 else 1.0)
        a = angle + 2 * math.pi * k / count
        points.append((center[0] + r * math.cos(a), center[1] + r * math.sin(a)))
    return np.round(np.asarray(points)).astype(np.int32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    if rng.random() < 0.5:  # stripes
        period = rng.integers(3, 8)
        stripes = (np.arange(size) // period) % 2 * rng.integers(10, 60)
        image += stripes[:, None, None] if rng.random() < 0.5 else stripes[None, :, None]
    image += rng.integers(-12, 13, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


MIN_COLOR_DISTANCE = 150  # Euclidean, in RGB, from the background's mean colour


def _contrasting_color(rng: np.random.Generator, background: np.ndarray) -> tuple[int, ...]:
    mean = background.reshape(-1, 3).mean(axis=0)
    while True:
        color = rng.integers(0, 256, 3)
        if np.linalg.norm(color - mean) >= MIN_COLOR_DISTANCE:
            return tuple(int(c) for c in color)


def draw_shape(kind: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    image = _background(rng, size)
    color = _contrasting_color(rng, image)
    radius = size * rng.uniform(0.3, 0.45)
    margin = radius + 1
    center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    angle = rng.uniform(0, 2 * math.pi)
    c = (round(center[0]), round(center[1]))
    name = CLASSES[kind]
    if name == "circle":
        cv2.circle(image, c, round(radius), color, -1, cv2.LINE_AA)
    elif name == "ring":
        cv2.circle(image, c, round(radius), color, max(2, round(radius / 3)), cv2.LINE_AA)
    elif name == "cross":
        for a in (angle, angle + math.pi / 2):
            d = (radius * math.cos(a), radius * math.sin(a))
            p1 = (round(center[0] - d[0]), round(center[1] - d[1]))
            p2 = (round(center[0] + d[0]), round(center[1] + d[1]))
            cv2.line(image, p1, p2, color, max(2, round(radius / 3)), cv2.LINE_AA)
    else:
        sides = {"square": 4, "triangle": 3, "star": 5, "diamond": 4, "hexagon": 6}[name]
        if name == "diamond":  # a square stretched along one axis
            pts = _polygon((0, 0), radius, 4, 0)
            pts = pts * np.array([0.6, 1.0])
            rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            pts = np.round(pts @ rot.T + np.asarray(center)).astype(np.int32)
        else:
            pts = _polygon(center, radius, sides, angle, star=name == "star")
        cv2.fillPoly(image, [pts], color, cv2.LINE_AA)
    return image


def generate_shapes(train: int = 4000, test: int = 1000, size: int = 32, seed: int = 0) -> SourceData:
    rng = np.random.default_rng(seed)

    def make(n: int) -> ArrayRecords:
        labels = np.arange(n, dtype=np.int32) % len(CLASSES)
        rng.shuffle(labels)
        images = np.stack([draw_shape(int(k), rng, size) for k in labels])
        return ArrayRecords(images, labels)

    return SourceData(
        kind="shapes",
        classes=list(CLASSES),
        splits={"train": make(train), "test": make(test)},
        image_size=size,
    )
