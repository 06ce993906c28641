"""Rebuild the sample images from scikit-image's bundled photographs (run from the repo root).

    python sample_images/make_samples.py

Writes PNGs and the ground-truth homography of the warped pair (coffee_warped_H.txt, mapping
pixel (x, y, 1) of coffee.png to coffee_warped.png, OpenCV convention).
"""

from pathlib import Path

import cv2
import numpy as np
import skimage.data

HERE = Path(__file__).resolve().parent


def known_homography(width: int, height: int) -> np.ndarray:
    """Rotation by 15°, scale 0.85 about the centre, plus a mild perspective tilt."""
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    angle = np.radians(15)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    ) * np.array([[0.85], [0.85], [1]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [2e-4, 1e-4, 1]])
    back = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    h = back @ tilt @ rot @ centre
    return h / h[2, 2]


def save(name: str, rgb: np.ndarray) -> None:
    cv2.imwrite(
        str(HERE / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )


def main() -> None:
    save("astronaut.png", skimage.data.astronaut())
    coffee = skimage.data.coffee()
    save("coffee.png", coffee)
    h, w = coffee.shape[:2]
    H = known_homography(w, h)
    save("coffee_warped.png", cv2.warpPerspective(coffee, H, (w, h), flags=cv2.INTER_LINEAR))
    np.savetxt(
        HERE / "coffee_warped_H.txt",
        H,
        fmt="%.10e",
        header="homography coffee.png -> coffee_warped.png (x, y, 1), OpenCV pixels",
    )
    left, right, _ = skimage.data.stereo_motorcycle()
    save("motorcycle_left.png", left)
    save("motorcycle_right.png", right)


if __name__ == "__main__":
    main()
