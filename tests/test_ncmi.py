"""The NCMI loss against a slow, literal reading of its formulas, and the guarantees the training relies on."""

from __future__ import annotations

import math

import pytest
import torch

from wsi_ncmi.mil import ncmi as N
from wsi_ncmi.mil.heads import NCMIHead, build_head
from wsi_ncmi.mil.models import build_model, build_neck


def literal_sigmax(u: list[float]) -> list[float]:
    s = [1 / (1 + math.exp(-v)) for v in u]
    return [v / sum(s) for v in s]


def literal_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def literal_loss(h: torch.Tensor, mu: torch.Tensor, q: torch.Tensor, y: list[int], t: float, w: list[float]) -> float:
    """mean_i w_{y_i} D(P_i||Q_{y_i}) / (1/(C-1) sum_{c != y_i} D(Q_c||P_i) + eps), one number at a time."""
    total = 0.0
    centroids = q.tolist()
    for row, label in zip(h.tolist(), y, strict=True):
        diff = [a - b for a, b in zip(row, mu.tolist(), strict=True)]
        norm = math.sqrt(sum(d * d for d in diff))
        p = literal_sigmax([d / norm / t for d in diff])
        cmi = literal_kl(p, centroids[label])
        others = [literal_kl(centroids[c], p) for c in range(len(centroids)) if c != label]
        total += w[label] * cmi / (sum(others) / len(others) + 1e-8)
    return total / len(y)


def _setup(seed: int = 0, n: int = 6, m: int = 8, c: int = 3) -> tuple[NCMIHead, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    head = NCMIHead(m, c, temperature=0.2, class_weights=[1.0, 2.0, 0.5][:c])
    h = torch.randn(n, m, dtype=torch.float64)
    y = torch.tensor([i % c for i in range(n)])
    head.epoch_pass(torch.randn(20, m), torch.tensor([i % c for i in range(20)]))
    return head.double(), h, y


def test_loss_equals_literal_formula() -> None:
    head, h, y = _setup()
    expected = literal_loss(h, head.mu, head.centroids, y.tolist(), 0.2, head.class_weights.tolist())
    assert float(head.loss(h, y)) == pytest.approx(expected, rel=1e-9)


def test_gradients_equal_literal_formula() -> None:
    head, h, y = _setup(1)
    h.requires_grad_(True)
    head.loss(h, y).backward()
    ours = h.grad.clone()
    h.grad = None

    def literal_torch(x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for i in range(len(y)):
            diff = x[i] - head.mu
            u = diff / diff.norm() / 0.2
            p = torch.sigmoid(u) / torch.sigmoid(u).sum()
            q = head.centroids
            cmi = (p * (p.log() - q[y[i]].log())).sum()
            sep = torch.stack([(q[c] * (q[c].log() - p.log())).sum() for c in range(len(q)) if c != y[i]]).mean()
            total = total + head.class_weights[y[i]] * cmi / (sep + 1e-8)
        return total / len(y)

    literal_torch(h).backward()
    torch.testing.assert_close(ours, h.grad, rtol=1e-7, atol=1e-10)


def test_cmi_is_zero_at_the_centroid() -> None:
    head, h, y = _setup(2)
    log_p = head.log_p(h)
    centroids = head.centroids.clone()
    centroids[y[0]] = log_p[0].exp()
    cmi, sep = N.ncmi_terms(log_p[:1], N.safe_log(centroids), y[:1])
    assert float(cmi[0]) == pytest.approx(0.0, abs=1e-12) and float(sep[0]) > 0


def test_no_gradient_reaches_mu_or_centroids() -> None:
    head, h, y = _setup(3)
    h.requires_grad_(True)
    mu, q = head.mu.clone(), head.centroids.clone()
    head.loss(h, y).backward()
    assert not head.mu.requires_grad and not head.centroids.requires_grad
    assert head.mu.grad is None and head.centroids.grad is None
    assert torch.equal(mu, head.mu) and torch.equal(q, head.centroids)
    assert list(head.parameters()) == []


def test_q_step_gives_class_means_and_the_training_centre() -> None:
    head = NCMIHead(8, 3).double()
    h = torch.randn(30, 8, dtype=torch.float64)
    y = torch.arange(30) % 3
    head.epoch_pass(h, y)
    with torch.no_grad():
        torch.testing.assert_close(head.mu, head.embed(h).mean(0))
    p = head.log_p(h).exp()
    for c in range(3):
        torch.testing.assert_close(head.centroids[c], p[y == c].mean(0))
    torch.testing.assert_close(head.centroids.sum(1), torch.ones(3, dtype=torch.float64))


def test_prediction_is_nearest_centroid_in_kl() -> None:
    head, h, _ = _setup(4)
    log_p = head.log_p(h)
    expected = [
        min(range(3), key=lambda c, i=i: literal_kl(log_p[i].exp().tolist(), head.centroids[c].tolist()))
        for i in range(len(h))
    ]
    assert head.predict(h).tolist() == expected
    probs = head.probabilities(h)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(h), dtype=torch.float64))
    assert probs.argmax(1).tolist() == expected


@pytest.mark.parametrize("case", ["identical centroids", "one-class batch", "h equals mu", "huge h"])
def test_no_nan_or_inf_reaches_the_optimiser(case: str) -> None:
    head = NCMIHead(16, 4)
    h = torch.randn(5, 16, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    if case == "identical centroids":
        head.centroids.copy_(head.centroids[0].expand(4, -1))
    elif case == "one-class batch":
        y = torch.zeros(5, dtype=torch.long)
    elif case == "h equals mu":
        head.mu.copy_(h.detach()[0])
        h = h.detach().clone()
        h[1:] = h[0]
        h.requires_grad_(True)
    else:
        h = (h.detach() * 1e30).requires_grad_(True)
    loss = head.loss(h, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()


def test_running_centre_and_ema_centroids() -> None:
    head = NCMIHead(8, 2, decay=0.9, centroids="ema", ema_alpha=0.5)
    h = torch.randn(1, 8)
    q_before = head.centroids.clone()
    head.after_step(h, torch.tensor([1]))
    torch.testing.assert_close(head.mu, 0.1 * h[0])
    assert torch.equal(head.centroids[0], q_before[0]) and not torch.equal(head.centroids[1], q_before[1])
    torch.testing.assert_close(head.centroids.sum(1), torch.ones(2))


def test_anchor_centroids_stay_fixed_in_the_loss_and_prediction_uses_class_means() -> None:
    torch.manual_seed(3)
    head = NCMIHead(8, 3, centroids="anchor").double()
    anchors = head.centroids.clone()
    assert int(anchors[1].argmax()) == 1
    h = torch.randn(12, 8, dtype=torch.float64)
    y = torch.arange(12) % 3
    head.epoch_pass(h, y)
    assert torch.equal(head.centroids, anchors)
    p = head.log_p(h).exp()
    means = torch.stack([p[y == c].mean(0) for c in range(3)])
    kl = torch.tensor([[literal_kl(p[i].tolist(), means[c].tolist()) for c in range(3)] for i in range(12)])
    torch.testing.assert_close(head.kl_to_centroids(h), kl.double())
    assert head.predict(h).tolist() == kl.argmin(1).tolist()


def test_calibration_lowers_validation_nll() -> None:
    head, h, y = _setup(5, n=60)
    before = float(torch.nn.functional.nll_loss(head.probabilities(h).log(), y))
    head.calibrate(h, y)
    after = float(torch.nn.functional.nll_loss(head.probabilities(h).log(), y))
    assert after <= before and float(head.tau) != 1.0


def test_diagnostic_matches_literal_and_falls_with_accuracy() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2])
    out = N.ncmi_diagnostic(probs, y, 3)
    q = [probs[y == c].mean(0).tolist() for c in range(3)]
    cmi = sum(literal_kl(probs[i].tolist(), q[int(y[i])]) for i in range(4)) / 4
    gamma = sum(sum(literal_kl(q[c], probs[i].tolist()) for c in range(3) if c != y[i]) / 2 for i in range(4)) / 4
    assert out["cmi"] == pytest.approx(cmi) and out["gamma"] == pytest.approx(gamma)
    assert out["ncmi"] == pytest.approx(cmi / gamma)
    sharper = torch.nn.functional.one_hot(y, 3).double() * 0.9 + 0.1 / 3
    assert N.ncmi_diagnostic(sharper, y, 3)["ncmi"] < out["ncmi"]


def test_neck_feeds_the_same_formula_and_is_trained() -> None:
    torch.manual_seed(6)
    model = build_model("mean", 8, dim=None, dropout=0.0, neck="mlp").double()
    head = NCMIHead(8, 3).double()
    bags = [torch.randn(5, 8, dtype=torch.float64) for _ in range(9)]
    y = torch.arange(9) % 3
    h = torch.stack([model(b).h for b in bags])
    torch.testing.assert_close(h, torch.stack([model.neck(b.mean(0)) for b in bags]))
    head.epoch_pass(h.detach(), y)
    loss = head.loss(h, y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.neck.parameters())
    assert head.mu.grad is None and head.centroids.grad is None and list(head.parameters()) == []


def test_centred_segment_collapses_to_two_directions_without_a_projector() -> None:
    """Why the projector exists: pooled embeddings that differ by one mixing weight give two distinct P's."""
    torch.manual_seed(7)
    head = NCMIHead(16, 4).double()
    negative, positive = torch.rand(16, dtype=torch.float64), torch.rand(16, dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.1, 0.4, 0.9], dtype=torch.float64)[:, None]
    h = (1 - alpha) * negative + alpha * positive
    y = torch.arange(4)
    head.epoch_pass(h, y)
    torch.testing.assert_close(head.centroids[0], head.centroids[1])
    torch.testing.assert_close(head.centroids[2], head.centroids[3])
    assert not torch.allclose(head.centroids[1], head.centroids[2])
    neck = build_neck("mlp", 16).double()
    projected = NCMIHead(16, 4).double()
    with torch.no_grad():
        projected.epoch_pass(neck(h), y)
        assert projected.predict(neck(h)).tolist() == [0, 1, 2, 3]


def test_unknown_losses_and_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="known: ce, cmic, focal, ncmi"):
        build_head("hinge", 8, 2)
    with pytest.raises(ValueError, match="centroids must be one of"):
        build_head("ncmi", 8, 2, centroids="median")
    with pytest.raises(ValueError, match="embedding size"):
        build_head("ncmi", 2, 4)
    with pytest.raises(ValueError, match="neck must be one of"):
        build_model("abmil", 8, neck="deep")
    with pytest.raises(ValueError, match="projector"):
        build_head("ncmi", 8, 2, projector="mlp")


def test_kl_is_precise_between_near_identical_distributions() -> None:
    """KL near a centroid is ~4e-6 while each sum p log p is ~ -6.2: a difference of sums loses it in fp32."""
    torch.manual_seed(8)
    u = torch.randn(4, 512, dtype=torch.float64) / 0.2
    log_p = N.log_sigmax(u)
    log_q = N.log_sigmax(u + 1e-2 * torch.randn(4, 512, dtype=torch.float64))
    exact = N.kl_rows_to_centroids(log_p, log_q)
    exact_back = N.kl_centroids_to_rows(log_p, log_q)
    assert 0 < float(exact.diagonal().max()) < 1e-5
    fp32 = N.kl_rows_to_centroids(log_p.float(), log_q.float()).double()
    fp32_back = N.kl_centroids_to_rows(log_p.float(), log_q.float()).double()
    assert float((fp32 - exact).diagonal().abs().max()) < 1e-7
    assert float((fp32_back - exact_back).diagonal().abs().max()) < 1e-7


@pytest.mark.parametrize("loss", ["ce", "cmic", "focal", "ncmi"])
def test_class_weights_scale_a_one_bag_step(loss: str) -> None:
    """With one bag per step the weighted loss is w_y times the unweighted one, for every loss."""
    torch.manual_seed(9)
    plain = build_head(loss, 8, 3)
    weighted = build_head(loss, 8, 3, class_weights=[0.5, 3.0, 1.0])
    weighted.load_state_dict({**plain.state_dict(), "class_weights": weighted.class_weights})
    h = torch.randn(1, 8)
    for label, w in enumerate([0.5, 3.0, 1.0]):
        y = torch.tensor([label])
        if loss == "cmic":
            ce = torch.nn.functional.cross_entropy(plain.scores(h), y)
            extra = plain.loss(h, y) - ce
            torch.testing.assert_close(weighted.loss(h, y), w * ce + extra)
        else:
            torch.testing.assert_close(weighted.loss(h, y), w * plain.loss(h, y))


def test_tau_at_a_grid_bound_warns_and_is_recorded() -> None:
    torch.manual_seed(10)
    head = NCMIHead(8, 2)
    h = torch.cat([torch.randn(10, 8) + 4 * torch.eye(8)[0], torch.randn(10, 8) - 4 * torch.eye(8)[0]])
    y = torch.tensor([0] * 10 + [1] * 10)
    head.epoch_pass(h, y)
    with pytest.warns(UserWarning, match="tau stopped at the lower bound"):
        head.calibrate(h, y)
    assert head.calibration["at_bound"] == "lower" and head.calibration["tau"] == pytest.approx(1e-4)
    inside, h2, y2 = _setup(5, n=60)
    inside.calibrate(h2, y2)
    assert inside.calibration["at_bound"] is None


def test_built_heads_record_every_setting_with_its_default() -> None:
    head = build_head("ncmi", 8, 2)
    assert head.settings == {
        "class_weights": None,
        "temperature": 0.2,
        "decay": 0.999,
        "centroids": "epoch",
        "ema_alpha": 0.99,
    }
    assert build_head("ce", 8, 2, label_smoothing=0.1).settings == {"class_weights": None, "label_smoothing": 0.1}
    assert build_model("abmil", 8).settings == {"dim": 512, "dropout": 0.25, "attention_dim": 256, "neck": "none"}


@pytest.mark.filterwarnings("ignore:NCMI probability calibration")
def test_training_temperature_reaches_the_checkpoint_and_changes_the_model(tmp_path) -> None:
    import numpy as np

    from wsi_ncmi.mil.data import BagSet
    from wsi_ncmi.mil.train import TrainConfig, load_trained, train

    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 6)
    features = [(rng.normal(size=(int(rng.integers(5, 12)), 8)) + y).astype(np.float32) for y in labels]
    ids = [f"b{i}" for i in range(len(labels))]
    bags = BagSet(ids, labels, [tmp_path / i for i in ids], 8, dict(zip(ids, features, strict=True)))
    trained = {}
    for temperature in (0.1, 1.0):
        run = tmp_path / f"t{temperature}"
        run.mkdir()
        config = TrainConfig(
            model="abmil", model_args={"dim": 8, "attention_dim": 8}, loss="ncmi",
            loss_args={"temperature": temperature}, epochs=2, warmup_epochs=0, seed=0, device="cpu",
        )  # fmt: skip
        train(bags, bags, ["a", "b"], config, run, progress=False)
        trained[temperature] = load_trained(run / "model.pt")
    assert [t.head.temperature for t in trained.values()] == [0.1, 1.0]
    low, high = (dict(t.model.named_parameters()) for t in trained.values())
    assert any(not torch.equal(low[name], high[name]) for name in low)
