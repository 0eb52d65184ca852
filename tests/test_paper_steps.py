"""Paper-scale training lengths of every suite follow the paper, each count with the line that states it."""

from pathlib import Path

import pytest

from elit_bench.suites.spec import ComputeRun, list_suites, load_suite

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "elit-paper.md"

# Sec. 4.1 "Training details"; nothing in the paper notes another length for Tables 3, 5 or Figure 2.
IMAGES = (500_000, "Unless noted, all image experiments are trained for 500k steps")
VIDEO = (200_000, "while video experiments are trained for 200k steps")
EXPECTED = {
    "table1-256": IMAGES, "table1-512": IMAGES, "table2-video": VIDEO, "table3-readwrite": IMAGES,
    "table5a-group-size": IMAGES, "table5b-block-alloc": IMAGES, "table5c-variable-budget": IMAGES,
    "table5d-batching": IMAGES, "table6-rho": IMAGES, "fig2-adaptive-compute": IMAGES, "fig4-convergence": IMAGES,
    "fig5-guidance": IMAGES, "fig7-steps-vs-tokens": IMAGES, "fig8-teacache": IMAGES,
}
# suites without a paper training run: analytic FLOPs (Table 4, Fig. 10), latency (Fig. 9), the digits quickstart
# and the CPU claims suite (digits only)
DIGITS_ONLY = {"quickstart", "claims"}
NO_PAPER_TRAINING = {"table4-mmdit-flops", "fig9-latency", "fig10-flops"} | DIGITS_ONLY
# table4-t2i fine-tunes Qwen-Image for 60k + 60k steps (App. E), not the 500k of Sec. 4.1: checked below
FINE_TUNING = {"table4-t2i"}
# suites whose paper scale follows other papers' protocols (docs/zoo.md): run label -> steps
OTHER_PAPERS = {"elastic-zoo": {"DiT": 400_000, "ELIT-MB": 400_000, "TREAD": 400_000,  # TREAD's DiT-XL/2 at 400k
                                "DyDiT 0.7": 150_000, "DyDiT 0.5": 200_000}}  # DyDiT's fine-tuning lengths


def test_every_suite_is_classified():
    # catches: a new suite whose paper-scale length nobody checked against the paper
    assert set(list_suites()) == set(EXPECTED) | NO_PAPER_TRAINING | set(OTHER_PAPERS) | FINE_TUNING


def test_table4_t2i_fine_tunes_as_appendix_e_says():
    # App. E: 60k steps at 512 px (batch 1536), then 60k at 1024 px (batch 384), from the original model
    trained = {r.label: (r.train["steps"], r.train["batch"], r.train["resolution"])
               for r in load_suite("table4-t2i").runs("paper", strict_variables=False) if hasattr(r, "train")}
    assert trained == {"ELIT-Qwen-Image 512px": (60_000, 1536, 512), "ELIT-Qwen-Image": (60_000, 384, 1024)}


@pytest.mark.parametrize("suite", sorted(OTHER_PAPERS))
def test_paper_scale_steps_follow_the_methods_papers(suite):
    trained = load_suite(suite).runs("paper", strict_variables=False)
    assert {r.label: r.train["steps"] for r in trained} == OTHER_PAPERS[suite]


@pytest.mark.parametrize("suite", sorted(EXPECTED))
def test_paper_scale_steps_follow_the_paper(suite):
    # catches: a paper-scale length the paper does not state (e.g. 400k for the ablations, where it says 500k)
    steps, quote = EXPECTED[suite]
    trained = [r for r in load_suite(suite).runs("paper", strict_variables=False) if not isinstance(r, ComputeRun)]
    assert trained
    assert {r.train["steps"] for r in trained} == {steps}, suite


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper's text is not in this checkout")
def test_quoted_lines_are_the_papers():
    # catches: a quote that was paraphrased, so the expected counts no longer rest on the paper's words
    text = " ".join(PAPER.read_text().split())
    for _, quote in {IMAGES, VIDEO}:
        assert quote in text
    assert "400k" not in text.lower()  # no shorter image length is noted anywhere


def test_suites_without_paper_training_train_nothing_at_paper_scale():
    # catches: a compute-only suite that quietly gained a training run with no length checked above
    for suite in NO_PAPER_TRAINING - DIGITS_ONLY:
        assert all(isinstance(r, ComputeRun) for r in load_suite(suite).runs("paper", strict_variables=False)), suite
