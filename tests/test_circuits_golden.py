"""Golden numbers and shortcut checks for the fast circuit code (fp32).

- EAP-IG scores, the evaluation's metrics and the logit lens of tiny-random-llama equal those of the tree
  before the speed work (commit 252123c's circuit code plus the validity fixes: connected random baselines);
- EAP-IG equals the mean over the interpolation points of the brute-force derivative of the patched forward
  in each edge's coefficient (autograd through the intervention, a route that shares nothing with the
  per-reader gradient hooks or the fused norm Jacobian);
- the patched forward's shortcuts (fully patched readers read the corrupted stream; a fully patched MLP is
  not run) give the dense intervention's logits, on every supported family;
- the faithfulness curve's whole-model point is the clean run itself: exactly 1.

To regenerate the numbers (only when they are meant to change, saying why in the commit), run
test_eap_ig_evaluation_and_lens_equal_the_pinned_fp32_numbers's body against the old tree and print them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdyn.circuits.attribution import Batch, attribute, logit_diff, new_writes, run_corrupted
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import Evaluator, evaluate, logit_lens, patched_logits
from kdyn.circuits.hooks import HookedLM, RunState

from .test_circuits_exact import FAMILIES, make, make_batch

# From the tree before the speed work: per-prompt Σ scores and Σ |scores|, the 6 largest |mean| edges (flat
# index into [U, V], mean score), metrics, faithfulness curve and logit lens of two batches of 4 prompts. (The
# curve's whole-model point was 0.9999983 there; it is 1 exactly now, see the test below.)
GOLDEN = {
    "query": {
        "sums": [0.1730783, -0.006813112, 0.0369389, 0.09353885, 0.225664, -0.09517694, 0.09041032, 0.02159653],
        "abs_sums": [0.4794294, 0.5147483, 0.4576739, 0.6249808, 0.5492284, 0.4765668, 0.6131419, 0.8901393],
        "top": [(8, 0.01951337), (53, 0.01592744), (242, 0.01437232), (80, 0.009686289), (10, 0.008147349),
                (134, -0.007646388)],
        "metrics": {"clean_metric": -0.1362776, "corrupted_metric": -0.1101875, "faithfulness": 0.8242781,
                    "faithfulness_random": 0.1218798, "faithfulness_random_sd": 0.1459086, "mrr_circuit": 0.007839012},
        "curve": [[0.05, 2, 0.661804], [0.2, 14, 0.5543937], [1.0, 110, 1.0]],
    },
    "kv": {
        "sums": [0.1730783, -0.006813092, 0.03693888, 0.09353886, 0.225664, -0.09517696, 0.09041034, 0.02159655],
        "abs_sums": [0.4241466, 0.4679638, 0.3914819, 0.5245575, 0.4609541, 0.4332374, 0.504411, 0.7501444],
        "top": [(6, 0.01757753), (37, 0.01592744), (170, 0.01437232), (7, 0.01026686), (56, 0.009686289),
                (72, 0.008937592)],
        "metrics": {"clean_metric": -0.1362776, "corrupted_metric": -0.1101875, "faithfulness": 1.079177,
                    "faithfulness_random": 0.1303015, "faithfulness_random_sd": 0.4695071, "mrr_circuit": 0.007112802},
        "curve": [[0.05, 2, 0.661804], [0.2, 14, 1.052079], [1.0, 82, 1.0]],
    },
}  # fmt: skip
LENS = [[0, 206.75, 225.5], [1, 175.0, 189.5]]


def tiny_checkpoint(kv_readers: str) -> tuple[HookedLM, list[Batch], list, np.ndarray, dict, list, list]:
    hooked = HookedLM(make("llama-gqa"), kv_readers)  # type: ignore[arg-type]
    batches = [make_batch(4, 9, 1), make_batch(4, 11, 2)]
    cfg = CircuitsConfig(top_k=20, fractions=[0.05, 0.2, 1.0], random_draws=3, min_metric_gap=0.0)
    with hooked.attached():
        results = [attribute(hooked, b, "eap-ig", 5) for b in batches]
        per = torch.cat([r.scores for r in results]).double()  # [N, U, V]
        _, metrics, curve = evaluate(Evaluator(hooked, batches, results, 0.0), per.mean(0).float().numpy(), cfg, "r")
        lens = logit_lens(hooked, batches, results)
    return hooked, batches, results, per.numpy(), metrics, curve, lens


@pytest.mark.parametrize("kv_readers", ["query", "kv"])
def test_eap_ig_evaluation_and_lens_equal_the_pinned_fp32_numbers(kv_readers: str) -> None:
    want = GOLDEN[kv_readers]
    _, _, _, per, metrics, curve, lens = tiny_checkpoint(kv_readers)
    np.testing.assert_allclose(per.sum((1, 2)), want["sums"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.abs(per).sum((1, 2)), want["abs_sums"], rtol=1e-5)
    mean = per.mean(0).ravel()
    assert [i for i, _ in want["top"]] == list(np.argsort(-np.abs(mean), kind="stable")[:6])
    np.testing.assert_allclose(mean[[i for i, _ in want["top"]]], [s for _, s in want["top"]], rtol=1e-5)
    for key, value in want["metrics"].items():
        assert metrics[key] == pytest.approx(value, rel=1e-5), key
    assert [row[:2] for row in curve] == [row[:2] for row in want["curve"]]
    np.testing.assert_allclose([row[2] for row in curve], [row[2] for row in want["curve"]], rtol=1e-5)
    assert lens == LENS


def test_the_whole_model_point_of_the_curve_is_the_clean_run_exactly() -> None:
    """Keeping every edge patches nothing: that point's outcome is the clean one (no forward pass), so its
    faithfulness is 1 to the last bit (it was 0.9999983: α = 1 ran corrupted + 1 · (clean − corrupted))."""
    *_, curve, _ = tiny_checkpoint("query")
    assert curve[-1][0] == 1.0 and curve[-1][2] == 1.0


def ig_by_patching(hooked: HookedLM, batch: Batch, m: int) -> torch.Tensor:
    """[U, V] EAP-IG scores summed over prompts as Σ_k ∂M/∂coef at coef = 0 of the run at α_k = k/m whose
    patch difference is (corrupted − clean) writes, divided by m."""
    p0, last = batch.p0, batch.last
    with torch.no_grad():
        _, corrupt = run_corrupted(hooked, batch)
        e_clean, e_corrupt = hooked.embed(batch.clean), hooked.embed(batch.corrupt)
        clean = new_writes(hooked, batch)
        hooked.forward(e_clean, RunState(p0=p0, last=last, writes=clean))
    total = torch.zeros(hooked.graph.valid.shape)
    for k in range(1, m + 1):
        embeds = e_clean if k == m else e_corrupt + (k / m) * (e_clean - e_corrupt)
        here = new_writes(hooked, batch)
        with torch.no_grad():
            hooked.forward(embeds, RunState(p0=p0, last=last, writes=here))
        coef = torch.zeros(hooked.graph.valid.shape, requires_grad=True)
        st = RunState(p0=p0, last=last, corrupt=corrupt - clean + here, diff=torch.empty_like(here), coef=coef,
                      total=torch.zeros(here.shape[1:]))  # fmt: skip  # this run's own writes cancel: diff = corrupted − clean
        logit_diff(hooked.forward(embeds, st), batch).sum().backward()
        total += coef.grad
    return total / m


@pytest.mark.parametrize("family", ["llama-gqa", "gpt2"])
def test_eap_ig_is_the_mean_derivative_of_the_patched_run_over_the_interpolation_points(family: str) -> None:
    hooked = HookedLM(make(family), "query")
    batch = make_batch()
    with hooked.attached():
        ig = attribute(hooked, batch, "eap-ig", 4).scores.sum(0)
        brute = ig_by_patching(hooked, batch, 4)
    assert brute.abs().max() > 1e-3
    torch.testing.assert_close(ig, brute * torch.from_numpy(hooked.graph.valid), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kv_readers", ["query", "kv"])
@pytest.mark.parametrize("family", FAMILIES)
def test_patched_shortcuts_give_the_dense_intervention(family: str, kv_readers: str) -> None:
    """A random 25% of the edges kept, then every edge into layer 0's MLP and into half of layer 1's readers
    patched (its edge to the logits kept): fully and partly patched readers side by side, one MLP skipped.
    Differentiating in coef
    takes no shortcut, so the same coefficients with requires_grad are the reference."""
    hooked = HookedLM(make(family), kv_readers)  # type: ignore[arg-type]
    g, batch = hooked.graph, make_batch()
    keep = g.valid & (np.random.default_rng(3).random(g.valid.shape) < 0.25)
    attn1 = g.blocks[2].readers
    keep[:, [g.blocks[1].readers.start, *range(attn1.start, attn1.stop, 2)]] = False
    keep[0, g.blocks[3].readers.start] = True
    keep[g.mlp_writer(0), g.blocks[-1].readers.start] = True  # what the skipped MLP writes is read unpatched
    coef = torch.from_numpy(g.valid & ~keep).float()
    full = ((coef == 1) | ~hooked.valid).all(0).numpy()
    mlps = [b.readers.start for b in g.blocks if b.kind == "mlp"]
    assert full[mlps].any() and not full[mlps].all() and full.any() and not full.all()  # not vacuous
    with hooked.attached():
        _, writes = run_corrupted(hooked, batch)
        scratch = torch.empty_like(writes)  # reused across runs, as Evaluator.run does
        with torch.no_grad():
            fast = patched_logits(hooked, batch, writes, coef, scratch)
            patched_logits(hooked, batch, writes, 1.0 - coef, scratch)
            again = patched_logits(hooked, batch, writes, coef, scratch)
        dense = patched_logits(hooked, batch, writes, coef.clone().requires_grad_(True)).detach()
    torch.testing.assert_close(fast, dense, atol=2e-5, rtol=0)
    assert torch.equal(fast, again)  # nothing of the previous run stays in the scratch buffer
    assert (dense - patched_logits_clean(hooked, batch)).abs().max() > 1e-3  # the patch changes the logits


def patched_logits_clean(hooked: HookedLM, batch: Batch) -> torch.Tensor:
    with hooked.attached(), torch.no_grad():
        return hooked.forward(hooked.embed(batch.clean), RunState(p0=batch.p0, last=batch.last))
