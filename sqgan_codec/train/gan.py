"""Adversarial loss of SQ-GAN: a small map-conditioned patch discriminator, hinge losses, an
adaptive weight, and "blinding" of the discriminator on low-relevance classes.

* The discriminator sees the image beside its one-hot semantic map (as SPADE's does), so it
  judges whether texture fits the class, and answers per 8×8 patch.
* Blinding (the paper): each patch's hinge term is weighted by the task relevance of its
  classes (``classes.CLASS_RELEVANCE``, pooled over the patch); sky and trees barely count,
  so the generator spends no capacity inventing foliage, and people and signs count fully.
* Adaptive weight (taming-transformers' VQGAN): the generator's GAN term is scaled so its
  gradient at the decoder's last layer is as large as the reconstruction loss's, times
  ``--gan``; this keeps one setting usable from the first fine-tuning step to convergence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from typing import Sequence

from ..classes import CLASS_RELEVANCE, NUM_CLASSES


class PatchDiscriminator(nn.Module):
    """RGB [-1, 1] + one-hot map → N×1×H/8×W/8 logits. Spectral-normalised: stable hinge
    training without batch statistics, with batches of a few crops on a CPU."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3 + num_classes, w, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * w, 1, 3, 1, 1),
        )

    def forward(self, rgb: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([rgb, onehot], dim=1))


def patch_relevance(labels: torch.Tensor, size: tuple[int, int],
                    relevance: Sequence[float] = CLASS_RELEVANCE) -> torch.Tensor:
    """N×H×W class ids → N×1×h×w mean task relevance (the vocabulary's, per class) of each
    discriminator patch (void: 0)."""
    rel = torch.tensor(list(relevance) + [0.0], device=labels.device)
    pixel = rel[labels.long().clamp(max=len(relevance))].unsqueeze(1)
    return F.adaptive_avg_pool2d(pixel, size)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-6)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator, each patch weighted by its relevance."""
    return 0.5 * (_weighted_mean(F.relu(1 - real_logits), weights)
                  + _weighted_mean(F.relu(1 + fake_logits), weights))


def generator_loss(fake_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator: raise the discriminator's score of relevant patches."""
    return -_weighted_mean(fake_logits, weights)


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """‖∇ rec‖ / ‖∇ gan‖ at the decoder's last layer (a detached scalar)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0, max_weight).detach()
