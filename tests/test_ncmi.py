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


def literal_loss(
    h: torch.Tensor, mu: torch.Tensor, q: torch.Tensor, y: list[int], t: float, w: list[float], sep: str = "mean_other"
) -> float:
    """mean_i w_{y_i} D(P_i||Q_{y_i}) / (SEP_i + eps), one number at a time; SEP_i over the other classes is
    1/(C-1) sum (mean_other), 1/C sum (mean_all) or the harmonic mean (softmin) of D(Q_c||P_i)."""
    total = 0.0
    centroids = q.tolist()
    for row, label in zip(h.tolist(), y, strict=True):
        diff = [a - b for a, b in zip(row, mu.tolist(), strict=True)]
        norm = math.sqrt(sum(d * d for d in diff))
        p = literal_sigmax([d / norm / t for d in diff])
        cmi = literal_kl(p, centroids[label])
        others = [literal_kl(centroids[c], p) for c in range(len(centroids)) if c != label]
        separation = {
            "mean_other": sum(others) / len(others),
            "mean_all": sum(others) / len(centroids),
            "softmin": len(others) / sum(1 / (d + 1e-8) for d in others),
        }[sep]
        total += w[label] * cmi / (separation + 1e-8)
    return total / len(y)


def _setup(seed: int = 0, n: int = 6, m: int = 8, c: int = 3) -> tuple[NCMIHead, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    head = NCMIHead(
        m, c, temperature=0.2, class_weights=[1.0, 2.0, 0.5][:c], centroids="epoch", centre="epoch",
        separation="mean_other",
    )  # fmt: skip
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
    head = NCMIHead(8, 3, centroids="epoch", centre="epoch").double()
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
    head = NCMIHead(8, 2, decay=0.9, centroids="ema", ema_alpha=0.5, centre="epoch")
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
    head = NCMIHead(16, 4, centroids="epoch", centre="epoch").double()
    negative, positive = torch.rand(16, dtype=torch.float64), torch.rand(16, dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.1, 0.4, 0.9], dtype=torch.float64)[:, None]
    h = (1 - alpha) * negative + alpha * positive
    y = torch.arange(4)
    head.epoch_pass(h, y)
    torch.testing.assert_close(head.centroids[0], head.centroids[1])
    torch.testing.assert_close(head.centroids[2], head.centroids[3])
    assert not torch.allclose(head.centroids[1], head.centroids[2])
    neck = build_neck("mlp", 16).double()
    projected = NCMIHead(16, 4, centroids="epoch", centre="epoch").double()
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


def _separable(seed: int, n: int = 10) -> tuple[NCMIHead, torch.Tensor, torch.Tensor]:
    """A head whose class means separate its validation embeddings perfectly (two far clusters)."""
    torch.manual_seed(seed)
    head = NCMIHead(8, 2, centroids="epoch", centre="epoch")
    h = torch.cat([torch.randn(n, 8) + 4 * torch.eye(8)[0], torch.randn(n, 8) - 4 * torch.eye(8)[0]])
    y = torch.tensor([0] * n + [1] * n)
    head.epoch_pass(h, y)
    return head, h, y


def test_a_separable_validation_set_gives_a_finite_tau_and_no_0_or_1_probabilities() -> None:
    """Plain NLL falls all the way to tau = 0 there (exact 0/1 probabilities, a meaningless AUC); the smoothed fit
    stops inside its search, says so once per head in our words, from the caller's line, and records it."""
    head, h, y = _separable(10)
    with pytest.warns(UserWarning) as said:
        for _ in range(3):
            head.calibrate(h, y)
    assert len(said) == 1 and "separated perfectly" in str(said[0].message) and "tau_smoothing" in str(said[0].message)
    assert said[0].filename == __file__
    record = head.calibration
    assert record["separable"] and record["at_bound"] is None and record["smoothing"] == pytest.approx(1 / 22)
    probs = head.probabilities(h)
    assert float(probs.min()) > 0 and float(probs.max()) < 1 and math.isfinite(float(head.tau))
    own = probs[torch.arange(len(y)), y]
    assert float(own.min()) > 0.5 and 0.85 < float(own.mean()) < 1 - 1 / 22 + 0.01


def test_tau_smoothing_is_a_setting_and_a_search_bound_is_said_once() -> None:
    head, h, y = _separable(11)
    sharper = NCMIHead(8, 2, centroids="epoch", centre="epoch", tau_smoothing=1e-3)
    sharper.load_state_dict(head.state_dict())
    with pytest.warns(UserWarning, match="separated perfectly"):
        head.calibrate(h, y)
        sharper.calibrate(h, y)
    assert float(sharper.tau) < float(head.tau) and sharper.calibration["smoothing"] == 1e-3
    flipped = 1 - y
    with pytest.warns(UserWarning) as said:
        head.calibrate(h, flipped)
        head.calibrate(h, flipped)
    assert [str(w.message).split(";")[0] for w in said] == [
        f"NCMI calibration: tau stopped at the upper bound of its search ({float(head.tau):.3g})"
    ]
    assert head.calibration["at_bound"] == "upper" and not head.calibration["separable"]
    inside, h2, y2 = _setup(5, n=60)
    inside.calibrate(h2, y2)
    assert inside.calibration["at_bound"] is None and not inside.calibration["separable"]
    with pytest.raises(ValueError, match="tau_smoothing"):
        NCMIHead(8, 2, tau_smoothing=1.0)


def test_built_heads_record_every_setting_with_its_default() -> None:
    head = build_head("ncmi", 8, 2)
    assert head.settings == {
        "class_weights": None,
        "temperature": 0.2,
        "decay": 0.999999,
        "centroids": "anchor",
        "ema_alpha": 0.99,
        "centre": "frozen",
        "centre_samples": 128,
        "separation": "mean_all",
        "tau_smoothing": None,
    }
    assert build_head("ce", 8, 2, label_smoothing=0.1).settings == {"class_weights": None, "label_smoothing": 0.1}
    assert build_model("abmil", 8).settings == {"dim": 512, "dropout": 0.25, "attention_dim": 256, "neck": "none"}


@pytest.mark.filterwarnings("ignore:NCMI calibration")
def test_training_temperature_reaches_the_checkpoint_and_changes_the_model(tmp_path) -> None:
    import numpy as np

    from wsi_ncmi.mil.checkpoint import load_trained
    from wsi_ncmi.mil.data import BagSet
    from wsi_ncmi.mil.train import TrainConfig, train

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


@pytest.mark.parametrize("separation", ["mean_other", "mean_all", "softmin"])
def test_each_separation_equals_its_literal_formula(separation: str) -> None:
    head, h, y = _setup(12)
    head.separation = separation
    expected = literal_loss(h, head.mu, head.centroids, y.tolist(), 0.2, head.class_weights.tolist(), separation)
    assert float(head.loss(h, y)) == pytest.approx(expected, rel=1e-9)


def test_softmin_separation_penalises_a_merged_centroid_more_than_the_mean() -> None:
    """A bag of class 0 sitting on class 1's centroid (classes 0 and 1 merged): a mean over the three other classes
    barely notices, the soft minimum does; with every other class equally far the two agree."""
    torch.manual_seed(13)
    log_p = N.log_sigmax(torch.randn(1, 16, dtype=torch.float64) / 0.2)
    far = N.log_sigmax(torch.randn(4, 16, dtype=torch.float64) / 0.2)
    merged = far.clone()
    merged[1] = N.log_sigmax(log_p[0] + 1e-3 * torch.randn(16, dtype=torch.float64))
    y = torch.tensor([0])
    ratio = {}
    for separation in ("mean_other", "softmin"):
        loss_far = N.ncmi_loss(log_p, far, y, separation=separation)
        loss_merged = N.ncmi_loss(log_p, merged, y, separation=separation)
        ratio[separation] = float(loss_merged / loss_far)
    assert ratio["mean_other"] < 2 and ratio["softmin"] > 100
    equally_far = far.clone()
    equally_far[1:] = far[1]
    _, sep_mean = N.ncmi_terms(log_p, equally_far, y, "mean_other")
    _, sep_soft = N.ncmi_terms(log_p, equally_far, y, "softmin")
    torch.testing.assert_close(sep_mean, sep_soft)


@pytest.mark.parametrize("case", ["P equals Q", "near-identical in float32", "merged centroids", "h equals mu"])
@pytest.mark.parametrize("separation", ["mean_other", "mean_all", "softmin"])
def test_loss_is_never_negative_nor_non_finite(case: str, separation: str) -> None:
    """A KL of near-identical float32 distributions rounds below 0; divided by a separation near 0 it gave
    validation losses of -6,000. Both terms are float64 and clamped, so the loss is >= 0 and finite."""
    torch.manual_seed(14)
    u = torch.randn(64, 32) / 0.2
    log_p = N.log_sigmax(u)
    y = torch.zeros(64, dtype=torch.long)
    if case == "P equals Q":
        log_q = log_p[:4].clone()
        log_q[0] = log_p[0]
        rows = log_p[:1]
    elif case == "near-identical in float32":
        log_q = torch.stack([N.log_sigmax(u[0] + 1e-4 * torch.randn(32)) for _ in range(4)])
        rows = N.log_sigmax(u[0] + 1e-4 * torch.randn(64, 32))
    elif case == "merged centroids":
        rows = log_p
        log_q = log_p[:1].expand(4, -1).clone()
    else:
        head = NCMIHead(32, 4, separation=separation, centre="epoch")
        h = torch.randn(1, 32).expand(3, -1).clone().requires_grad_(True)
        head.mu.copy_(h.detach()[0])
        loss = head.loss(h, torch.tensor([0, 1, 2]))
        loss.backward()
        assert float(loss.detach()) >= 0 and torch.isfinite(loss) and float(h.grad.abs().max()) == 0.0
        return
    cmi, sep = N.ncmi_terms(rows, log_q, y[: len(rows)], separation)
    assert float(cmi.min()) >= 0 and float(sep.min()) >= 0
    loss = N.ncmi_loss(rows, log_q, y[: len(rows)], separation=separation)
    assert torch.isfinite(loss) and float(loss) >= 0


def test_frozen_centre_is_the_first_steps_train_mode_mean_and_no_epoch_pass_moves_it() -> None:
    torch.manual_seed(15)
    head = NCMIHead(8, 3, centre_samples=6, decay=0.9)
    y = torch.arange(6) % 3
    head.epoch_pass(torch.randn(30, 8) + 5, torch.arange(30) % 3)
    assert torch.equal(head.mu, torch.zeros(8)) and not bool(head.centre_ready)
    h = torch.randn(6, 8, requires_grad=True)
    expected = literal_loss(h.detach().double(), h.detach().double().mean(0), head.centroids.double(), y.tolist(),
                            0.2, [1.0] * 3, "mean_all")  # fmt: skip
    assert float(head.loss(h, y).detach()) == pytest.approx(expected, rel=1e-6)
    head.after_step(h.detach(), y)
    torch.testing.assert_close(head.mu, h.detach().mean(0))
    assert bool(head.centre_ready) and int(head.centre_seen) == 6
    centre = head.mu.clone()
    head.epoch_pass(torch.randn(30, 8) - 5, torch.arange(30) % 3)
    assert torch.equal(head.mu, centre)
    step = torch.randn(4, 8)
    head.after_step(step, y[:4])
    torch.testing.assert_close(head.mu, 0.9 * centre + 0.1 * step.mean(0))
    epoch = NCMIHead(8, 3, centre="epoch")
    later = torch.randn(30, 8) - 5
    epoch.epoch_pass(later, torch.arange(30) % 3)
    torch.testing.assert_close(epoch.mu, later.mean(0))


def test_one_bag_steps_average_the_first_centre_until_enough_bags_or_the_first_epoch_end() -> None:
    """The mean of one bag is that bag: its step is centred on itself, has no direction and adds no gradient; the
    next steps average in until `centre_samples` bags were seen (or an epoch pass ends the first epoch)."""
    torch.manual_seed(16)
    head = NCMIHead(8, 2, centre_samples=3)
    bags = torch.randn(5, 8)
    for i in range(3):
        h = bags[i : i + 1].clone().requires_grad_(True)
        loss = head.loss(h, torch.tensor([i % 2]))
        loss.backward()
        assert torch.isfinite(loss) and (float(h.grad.abs().max()) == 0.0) == (i == 0)
        head.after_step(h.detach(), torch.tensor([i % 2]))
        torch.testing.assert_close(head.mu, bags[: i + 1].mean(0))
        assert bool(head.centre_ready) == (i == 2)
    head.after_step(bags[3:4], torch.tensor([1]))
    torch.testing.assert_close(head.mu, bags[:3].mean(0), atol=1e-5, rtol=0)
    short = NCMIHead(8, 2, centre_samples=100)
    short.after_step(bags[:2], torch.tensor([0, 1]))
    short.epoch_pass(bags, torch.tensor([0, 1, 0, 1, 0]))
    assert bool(short.centre_ready) and int(short.centre_seen) == 2
    torch.testing.assert_close(short.mu, bags[:2].mean(0))


def test_state_written_before_the_centre_setting_loads_with_its_old_behaviour() -> None:
    """An old head state (no centre buffers; anchor files without class means) loads strictly, and the head then
    re-estimates mu at every epoch pass and separates over the other classes, as it was trained."""
    torch.manual_seed(17)
    for mode in ("epoch", "anchor"):
        old = NCMIHead(8, 3, centroids=mode, centre="epoch").state_dict()
        for key in ("centre_seen", "centre_ready", "class_centroids"):
            old.pop(key, None)
        old["mu"] = torch.randn(8)
        head = build_head("ncmi", 8, 3, centroids=mode, decay=0.999)
        head.load_state_dict(old)
        assert (head.centre, head.separation) == ("epoch", "mean_other")
        assert head.settings["centre"] == "epoch" and head.settings["separation"] == "mean_other"
        torch.testing.assert_close(head.mu, old["mu"])
        h = torch.randn(12, 8)
        head.epoch_pass(h, torch.arange(12) % 3)
        torch.testing.assert_close(head.mu, h.mean(0))
    new = build_head("ncmi", 8, 3)
    new.load_state_dict(NCMIHead(8, 3).state_dict())
    assert new.centre == "frozen" and new.settings["centre"] == "frozen"


def test_default_ncmi_learns_a_separable_problem_with_mini_batches_and_batchnorm() -> None:
    """The authors' regime in miniature: a BatchNorm network, SGD, batches of 32, the head driven as training
    drives it (epoch pass before and after each epoch, after_step after each step)."""
    torch.manual_seed(18)
    means = 3 * torch.randn(4, 16)
    y = torch.arange(400) % 4
    x = means[y] + torch.randn(400, 16)
    net = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 16)
    )
    head = build_head("ncmi", 16, 4)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

    def embed() -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            return net(x)

    head.epoch_pass(embed(), y)
    for _ in range(8):
        net.train()
        for index in torch.randperm(400).split(32):
            h = net(x[index])
            loss = head.loss(h, y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            head.after_step(h.detach(), y[index])
        head.epoch_pass(embed(), y)
    assert bool(head.centre_ready) and float((head.predict(embed()) == y).float().mean()) > 0.95
