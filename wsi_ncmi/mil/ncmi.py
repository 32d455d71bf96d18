"""The NCMI formulas (Ye, Chi, Plataniotis, Yang, 2026), in log space so no NaN or inf ever appears.

sigmax(u)_i = sigmoid(u_i) / sum_j sigmoid(u_j)          a probability vector over the m embedding coordinates
P(h)        = sigmax(((h - mu) / ||h - mu||) / T)
CMI_i       = D(P_i || Q_{y_i})                          concentration
SEP_i       = mean over c != y_i of D(Q_c || P_i)        separation (`mean_other`; see SEPARATIONS)
L           = mean_i w_{y_i} CMI_i / (SEP_i + eps)

Both KL terms are formed in float64 and clamped at 0, so the ratio is never negative (a KL of near-identical
distributions can round below 0 in float32) and a separation near 0 cannot flip its sign.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOG_FLOOR = -30.0
"""log-probabilities are clamped here (exp(-30) ~ 1e-13), so a zero probability never yields -inf."""
EPS = 1e-8
SEPARATIONS = ("mean_other", "mean_all", "softmin")
"""How SEP_i combines D(Q_c || P_i) over the other classes c != y_i:
mean_other: their mean, 1/(C-1) sum (the paper's text);
mean_all:   1/C sum with the own class zeroed (the authors' code): mean_other times (C-1)/C;
softmin:    their harmonic mean, a soft minimum ruled by the nearest other centroid, so that a sample sitting on
            another class's centroid (two classes merged) has a separation near 0 and a large loss; with a mean,
            merging with one of several other classes costs almost nothing."""


def log_sigmax(u: torch.Tensor) -> torch.Tensor:
    """log of the normalised sigmoid along the last axis: logsigmoid(u) - logsumexp(logsigmoid(u))."""
    logs = F.logsigmoid(u)
    return logs - torch.logsumexp(logs, dim=-1, keepdim=True)


def centred_direction(h: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """(h - mu) / ||h - mu||; h == mu (no direction) gives zeros with zero gradient, not NaN nor a 1/eps gradient."""
    diff = h - mu
    norm = diff.norm(dim=-1, keepdim=True)
    return torch.where(norm > EPS, diff / norm.clamp_min(EPS), torch.zeros_like(diff))


def log_p(h: torch.Tensor, mu: torch.Tensor, temperature: float) -> torch.Tensor:
    """log P(h): the output distribution of embeddings h (B, m) in embedding space."""
    return log_sigmax(centred_direction(h, mu) / temperature)


def safe_log(q: torch.Tensor) -> torch.Tensor:
    return torch.log(q.clamp_min(torch.finfo(q.dtype).tiny)).clamp_min(LOG_FLOOR)


def kl_rows_to_centroids(log_p_rows: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """D(P_i || Q_c) = sum p (log p - log q) for every row i and centroid c: (B, C).

    The log ratio is formed before summing, so near-identical distributions give a small KL with small error
    (a difference of two sums of about -log m each would lose it to rounding).
    """
    p = log_p_rows.exp()
    return (p[:, None, :] * (log_p_rows[:, None, :] - log_q[None, :, :])).sum(-1)


def kl_centroids_to_rows(log_p_rows: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """D(Q_c || P_i) = sum q (log q - log p) for every row i and centroid c: (B, C)."""
    q = log_q.exp()
    return (q[None, :, :] * (log_q[None, :, :] - log_p_rows.clamp_min(LOG_FLOOR)[:, None, :])).sum(-1)


def ncmi_terms(
    log_p_rows: torch.Tensor, log_q: torch.Tensor, y: torch.Tensor, separation: str = "mean_other"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample CMI_i = D(P_i||Q_{y_i}) and SEP_i over the other classes (see SEPARATIONS), float64, both >= 0."""
    if separation not in SEPARATIONS:
        raise ValueError(f"separation must be one of {', '.join(SEPARATIONS)}, got {separation!r}")
    log_p_rows, log_q = log_p_rows.double(), log_q.double()
    n_classes = log_q.shape[0]
    cmi = kl_rows_to_centroids(log_p_rows, log_q).gather(1, y[:, None]).squeeze(1).clamp_min(0.0)
    to_rows = kl_centroids_to_rows(log_p_rows, log_q).clamp_min(0.0)
    others = torch.ones_like(to_rows).scatter_(1, y[:, None], 0.0)
    if separation == "softmin":
        sep = others.sum(1).clamp_min(1) / (others / (to_rows + EPS)).sum(1).clamp_min(EPS)
    else:
        sep = (to_rows * others).sum(1) / (max(n_classes - 1, 1) if separation == "mean_other" else n_classes)
    return cmi, sep


def ncmi_loss(
    log_p_rows: torch.Tensor,
    log_q: torch.Tensor,
    y: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    separation: str = "mean_other",
) -> torch.Tensor:
    """mean_i w_{y_i} * CMI_i / (SEP_i + eps): float64, never negative nor non-finite."""
    cmi, sep = ncmi_terms(log_p_rows, log_q, y, separation)
    ratio = cmi / (sep + EPS)
    if class_weights is not None:
        ratio = ratio * class_weights[y].double()
    return ratio.mean()


def class_means(values: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean row per class (C, d); a class with no rows gets the overall mean."""
    sums = torch.zeros(n_classes, values.shape[1], dtype=values.dtype, device=values.device)
    sums.index_add_(0, y, values)
    counts = torch.bincount(y, minlength=n_classes).to(values.dtype)
    means = sums / counts.clamp_min(1)[:, None]
    empty = counts == 0
    if empty.any():
        means[empty] = values.mean(0)
    return means


def ncmi_diagnostic(probs: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict[str, float]:
    """CMI, Gamma and NCMI = CMI / Gamma of class-probability outputs (any model), with class-mean centroids.

    Classes absent from `y` are left out of the centroids and of Gamma.
    """
    present = torch.unique(y)
    if len(present) < 2 or len(y) == 0:
        return {"cmi": float("nan"), "gamma": float("nan"), "ncmi": float("nan")}
    remap = torch.full((n_classes,), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    y_local = remap[y]
    centroids = class_means(probs, y_local, len(present))
    centroids = centroids / centroids.sum(1, keepdim=True)
    log_p_rows = safe_log(probs)
    cmi, gamma = ncmi_terms(log_p_rows, safe_log(centroids), y_local)
    cmi_mean, gamma_mean = float(cmi.mean()), float(gamma.mean())
    return {"cmi": cmi_mean, "gamma": gamma_mean, "ncmi": cmi_mean / gamma_mean if gamma_mean > 0 else float("nan")}
