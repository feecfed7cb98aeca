"""The built-in synthetic data generators, seeded and sized by the caller.

Each returns (x, labels): labels are what the plots colour by (a class, or the position along
the curve), never a training target.
"""
from __future__ import annotations

import numpy as np

__all__ = ["curve3d", "normal1d", "scurve", "two_gaussians"]


def curve3d(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """3-D points near a curved 2-D sheet (as in Geron's generate_3d_data)."""
    angles = rng.random(n) * 3 * np.pi / 2 - 0.5
    x = np.empty((n, 3))
    x[:, 0] = np.cos(angles) + np.sin(angles) / 2 + noise * rng.standard_normal(n) / 2
    x[:, 1] = np.sin(angles) * 0.7 + noise * rng.standard_normal(n) / 2
    x[:, 2] = x[:, 0] * 0.1 + x[:, 1] * 0.3 + noise * rng.standard_normal(n)
    return x, angles


def normal1d(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws of N(100, noise) in raw units: the model must store the scaling."""
    x = rng.normal(100.0, noise, size=(n, 1))
    return x, x[:, 0].copy()


def scurve(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D S-shaped curve in the unit box of 2-D, coloured by its parameter."""
    t_unit = rng.random(n)
    t = 3 * np.pi * (t_unit - 0.5)
    x = np.empty((n, 2))
    x[:, 0] = (1 + np.sin(t)) / 2
    x[:, 1] = (np.sign(t) * (np.cos(t) - 1) + 2) / 4
    x += noise * rng.standard_normal(x.shape)
    return x, t_unit


def two_gaussians(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated 2-D Gaussians (n rows in all); noise scales their spread."""
    cov = noise**2 * np.array([[1.0, 0.9], [0.9, 1.0]])
    half = n // 2
    a = rng.multivariate_normal([-1.1, 0.1], cov, half)
    b = rng.multivariate_normal([1.1, -0.1], cov, n - half)
    return np.concatenate([a, b]), np.repeat([0, 1], [half, n - half])
