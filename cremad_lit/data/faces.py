"""Face crops: one square box per clip around the face, from a detector whose weights ship inside an installed package.

    from cremad_lit.data.faces import crop_faces
    crops, found = crop_faces(frames, method="lbp", margin=0.35, size=224)   # (T, 224, 224, 3), FaceCrop
    found.kind          # "face" (cropped), "whole" (the face already fills the frame), "centre" (no face: fallback)

Detectors (`data.preprocessing.face_crop`):
- `lbp` (default on real corpora): OpenCV's LBP frontal-face cascade as scikit-image ships it inside its wheel
  (`skimage/data/lbpcascade_frontalface_opencv.xml`), run by `skimage.feature.Cascade`. Nothing is downloaded, and it
  does not depend on OpenCV's CascadeClassifier, which OpenCV 5 removed (measured: `cv2.CascadeClassifier` is absent
  from opencv-python-headless 5.0.0.93, so shipping the Haar XML would not have saved the Haar detector).
- `haar`: OpenCV's Haar frontal-face cascade, where the installed OpenCV (4.x) still has it.
- `mtcnn`: MTCNN (facenet-pytorch's P/R/O-Nets, shipped in its wheel) finds the face and five landmarks per frame;
  the clip's median eye positions define one similarity transform (rotation, scale, shift) that puts the eyes level at
  the usual aligned-face template's places (EYE_TEMPLATE), so every clip's face sits where every other's does.
  `face_margin` does not apply (the template fixes the framing); a frame whose face is already framed as tightly as
  the template would frame it (a pre-cropped face) is kept whole.
- `none`: the centre square of the frame.

The box is the median of the per-frame detections (the largest face of each frame), widened by `margin` on each side.
A face that fills most of the frame (WHOLE_FACE_SHARE of its short side), or a square-ish frame that the face with its
margin fills, is a pre-cropped face: the whole frame is kept, not cropped again. Detection runs on a copy at most 320 pixels wide (faces of interest fill a fifth of the frame or more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

FACE_CROPS = ("none", "lbp", "haar", "mtcnn")
# Where aligned faces put the eyes, as shares of the output side: the eyes of the five-point 112x112 template that
# face recognition models (ArcFace, InsightFace) align to, (38.29, 51.70) and (73.53, 51.50), the rows averaged so the
# eyes are level.
EYE_TEMPLATE = ((38.2946 / 112, 51.5988 / 112), (73.5318 / 112, 51.5988 / 112))
DETECT_WIDTH = (
    320  # frames are searched at about this size: faster, and the cascades' 24-px window still fits
)
MIN_FACE_FRACTION = 5  # faces smaller than 1/5 of the frame's short side are not looked for
# A detected face at least this share of the short side is a pre-cropped face (measured on the shared clips: 0.74-0.86
# in RAVDESS face-crop videos, 0.59 in the 1280x720 originals, 0.35 in CREMA-D's 480x360 flv).
WHOLE_FACE_SHARE = 0.65
BORDER = 0.15  # share of the short side added around each frame before detection (see find_face)


@dataclass
class FaceCrop:
    """Where a clip was cropped and why: `kind` is face | whole | centre (no face found) | none (face_crop=none)."""

    kind: str
    box: tuple[int, int, int]  # left, top, side in the original frame
    searched: int = 0
    found: int = 0
    # mtcnn: the clip's median five landmarks (eyes, nose, mouth corners) in the frame, and the 2x3 similarity that
    # maps the frame onto a crop of side 1 (scaled to the crop's side when cropping).
    landmarks: list | None = None
    transform: list | None = None

    @property
    def fallback(self) -> bool:
        return self.kind == "centre"

    def to_dict(self) -> dict:
        info = {**asdict(self), "box": [int(v) for v in self.box]}
        if self.landmarks is None:  # the cache's info of lbp/haar/none crops stays as it was before 0.8
            info.pop("landmarks"), info.pop("transform")
        else:
            info["crop_landmarks"] = self.crop_landmarks()
        return info

    def crop_landmarks(self) -> list | None:
        """The landmarks in the crop, as shares of its side (faces.png draws them)."""
        if self.landmarks is None:
            return None
        matrix = np.array(self.transform)
        points = np.array(self.landmarks) @ matrix[:, :2].T + matrix[:, 2]
        return [[round(float(x), 4), round(float(y), 4)] for x, y in points]


def centre_box(height: int, width: int) -> tuple[int, int, int]:
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


@lru_cache(maxsize=1)
def _lbp_cascade():
    import skimage.data
    from skimage.feature import Cascade

    return Cascade(skimage.data.lbp_frontal_face_cascade_filename())


@lru_cache(maxsize=1)
def _haar_cascade():
    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"face_crop=haar needs OpenCV's CascadeClassifier, which OpenCV {cv2.__version__} does not have "
            "(OpenCV 5 removed it): use data.preprocessing.face_crop=lbp"
        )
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise RuntimeError(
            f"OpenCV's Haar cascade is missing at {path}: use data.preprocessing.face_crop=lbp"
        )
    return detector


@lru_cache(maxsize=1)
def _mtcnn():
    from facenet_pytorch import MTCNN

    # Its own thresholds and scale step (the paper's); frames are searched at DETECT_WIDTH like the cascades'.
    return MTCNN(device="cpu", select_largest=True)


def load_detector(method: str) -> None:
    """Load a detector now (the environment check), raising if this install cannot run it."""
    if method == "lbp":
        _lbp_cascade()
    elif method == "haar":
        _haar_cascade()
    elif method == "mtcnn":
        _mtcnn()


def detect_landmarks(frames: list[np.ndarray], smallest: int) -> list[np.ndarray | None]:
    """Per RGB frame (all one size), the five landmarks (5, 2) of its largest face by MTCNN, or None."""
    import torch

    detector = _mtcnn()
    detector.min_face_size = smallest
    with torch.inference_mode():
        boxes, _, points = detector.detect(np.stack(frames), landmarks=True)
    return [
        None if box is None or not len(box) else np.asarray(point[0], dtype=np.float64)
        for box, point in zip(boxes, points, strict=True)
    ]


def is_precropped(face_side: float, height: int, width: int, margin: float) -> bool:
    """A face that fills most of the frame, or a square-ish frame the face with its margin fills: a face crop already,
    kept whole rather than cropped again."""
    short, long = sorted((height, width))
    framed = long <= 1.25 * short and face_side * (1 + 2 * margin) >= 0.9 * short
    return face_side >= WHOLE_FACE_SHARE * short or framed


def eye_alignment(landmarks: np.ndarray) -> np.ndarray:
    """The 2x3 similarity mapping a frame onto an aligned crop of side 1: the eyes (landmarks 0, 1) onto EYE_TEMPLATE."""
    (x1, y1), (x2, y2) = landmarks[0], landmarks[1]
    (u1, v1), (u2, v2) = EYE_TEMPLATE
    source, target = complex(x2 - x1, y2 - y1), complex(u2 - u1, v2 - v1)
    rotation = target / source  # scale and angle as one complex number
    shift = complex(u1, v1) - rotation * complex(x1, y1)
    a, b = rotation.real, rotation.imag
    return np.array([[a, -b, shift.real], [b, a, shift.imag]])


def align_face(frames: np.ndarray) -> FaceCrop:
    """mtcnn: the five landmarks per frame, their median over the clip, the similarity that aligns the eyes; a frame
    that frames the face as tightly as the template does, or more (a pre-cropped face), is kept whole."""
    height, width = frames.shape[1:3]
    scale = max(1, int(np.ceil(max(height, width) / DETECT_WIDTH)))
    small = [np.ascontiguousarray(frame[::scale, ::scale]) for frame in frames]
    pad = int(BORDER * min(small[0].shape[:2]))  # as for the cascades: context for faces that touch the edges
    padded = [cv2.copyMakeBorder(f, pad, pad, pad, pad, cv2.BORDER_REPLICATE) for f in small]
    smallest = max(20, min(small[0].shape[:2]) // MIN_FACE_FRACTION)
    found = [(points - pad) * scale for points in detect_landmarks(padded, smallest) if points is not None]
    if not found:
        return FaceCrop("centre", centre_box(height, width), len(frames), 0)
    landmarks = np.median(np.stack(found), axis=0)
    matrix = eye_alignment(landmarks)
    # The crop as a square in the frame (what the box of the other detectors says): the unit square mapped back.
    side = 1.0 / float(np.hypot(*matrix[:, 0]))
    if side >= min(height, width):  # framed as tightly as the template, or more: a face crop already
        return FaceCrop("whole", centre_box(height, width), len(frames), len(found))
    inverse = cv2.invertAffineTransform(matrix)
    centre_x, centre_y = inverse @ np.array([0.5, 0.5, 1.0])
    box = (int(round(centre_x - side / 2)), int(round(centre_y - side / 2)), int(round(side)))
    return FaceCrop(
        "face",
        box,
        len(frames),
        len(found),
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in landmarks],
        transform=matrix.tolist(),
    )


def detect_faces(gray: np.ndarray, method: str) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of the faces in one grey frame."""
    short = min(gray.shape)
    smallest = max(24, short // MIN_FACE_FRACTION)
    if method == "haar":
        found = _haar_cascade().detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest)
        )
        return [tuple(int(v) for v in box) for box in found]
    if method == "lbp":
        found = _lbp_cascade().detect_multi_scale(
            img=gray.astype(np.float32) / 255.0,
            scale_factor=1.25,
            step_ratio=1,
            min_size=(smallest, smallest),
            max_size=(short, short),
            min_neighbor_number=4,
        )
        return [(d["c"], d["r"], d["width"], d["height"]) for d in found]
    raise ValueError(f"face_crop must be one of {FACE_CROPS}, not {method!r}")


def find_face(frames: np.ndarray, method: str, margin: float) -> FaceCrop:
    """The clip's crop box: the median face over the frames, widened by `margin`, or the centre square."""
    height, width = frames.shape[1:3]
    if method == "none":
        return FaceCrop("none", centre_box(height, width))
    if method == "mtcnn":
        return align_face(frames)
    scale = max(1, int(np.ceil(max(height, width) / DETECT_WIDTH)))
    boxes = []
    for frame in frames:
        gray = cv2.cvtColor(np.ascontiguousarray(frame[::scale, ::scale]), cv2.COLOR_RGB2GRAY)
        # A border of repeated edge pixels gives a face that touches the frame's edges (a pre-cropped face) the context
        # the cascades were trained with: measured on the 120 RAVDESS face crops, LBP finds a face in 95.5% of their
        # frames with it, 82.0% without (and none at all in 4 clips).
        pad = int(BORDER * min(gray.shape))
        faces = detect_faces(cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE), method)
        if faces:
            x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
            x, y = max(x - pad, 0), max(y - pad, 0)
            w, h = min(w, gray.shape[1] - x), min(h, gray.shape[0] - y)
            boxes.append(np.array((x, y, w, h)) * scale)
    if not boxes:
        return FaceCrop("centre", centre_box(height, width), len(frames), 0)
    x, y, w, h = np.median(np.array(boxes), axis=0)
    if is_precropped(max(w, h), height, width, margin):  # already a face crop: kept whole, not cropped again
        return FaceCrop("whole", centre_box(height, width), len(frames), len(boxes))
    side = min(int(max(w, h) * (1 + 2 * margin)), min(height, width))
    left = int(np.clip(x + w / 2 - side / 2, 0, width - side))
    top = int(np.clip(y + h / 2 - side / 2, 0, height - side))
    return FaceCrop("face", (left, top, side), len(frames), len(boxes))


def crop_and_resize(frames: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    left, top, side = box
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return np.stack(
        [
            cv2.resize(f[top : top + side, left : left + side], (size, size), interpolation=interpolation)
            for f in frames
        ]
    )


def crop(frames: np.ndarray, found: FaceCrop, size: int) -> np.ndarray:
    """(T, size, size, 3): the aligned face where there is a transform (mtcnn), else the box, resized."""
    if found.transform is None:
        return crop_and_resize(frames, found.box, size)
    matrix = np.array(found.transform) * size
    # An affine warp has no area filter: a large face is first shrunk (INTER_AREA) to about twice the crop's size.
    factor = max(1, found.box[2] // (2 * size))
    if factor > 1:
        shrink = 1 / factor
        frames = [cv2.resize(f, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) for f in frames]
        matrix[:, :2] *= factor
    warp = {"flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_REPLICATE}
    return np.stack([cv2.warpAffine(f, matrix, (size, size), **warp) for f in frames])


def crop_faces(frames: np.ndarray, method: str, margin: float, size: int) -> tuple[np.ndarray, FaceCrop]:
    """(T, size, size, 3) crops of (T, H, W, 3) frames, and how they were found."""
    found = find_face(frames, method, margin)
    return crop(frames, found, size), found


def summarise(method: str, per_clip: dict[str, dict]) -> dict:
    """prepare_report.json's `faces`: the detector, frames searched and with a face, and each clip's rate and crop."""
    searched = sum(c["searched"] for c in per_clip.values())
    found = sum(c["found"] for c in per_clip.values())
    return {
        "detector": method,
        "frames_searched": searched,
        "frames_with_face": found,
        "rate": round(found / searched, 4) if searched else None,
        "fallback_clips": sorted(c for c, info in per_clip.items() if info["kind"] == "centre"),
        "clips": {
            clip: {
                "kind": info["kind"],
                "rate": round(info["found"] / info["searched"], 4) if info["searched"] else None,
                "searched": info["searched"],
                "found": info["found"],
            }
            for clip, info in sorted(per_clip.items())
        },
    }
