"""A table shows a difference against a published number only when the protocol matches (sample count)."""

from test_results import write_record

from elit_bench.cli import main


def test_proxy_numbers_sit_beside_the_paper_without_a_difference(tmp_path):
    out = tmp_path / "runs"
    for num, scale in ((50000, "paper"), (5000, "proxy")):
        write_record(out, "table1-256", "DiT-XL", "DiT-XL", "-G", "-G", {"fid": 14.3}, scale=scale, num=num)
    for scale in ("paper", "proxy"):
        dest = tmp_path / scale
        assert main(["table", "table1-256", "--out", str(out), "--scale", scale, "--dest", str(dest)]) == 0
        md = (dest / "table.md").read_text()
        row = next(line for line in md.splitlines() if line.startswith("| DiT-XL"))
        if scale == "paper":  # 50k samples, as published: the relative change
            assert "14.3 (13, +10%)" in row and "Not comparable" not in md
        else:  # 5k samples: both numbers, no change, and a footnote saying what differs
            assert row.split("|")[3].strip() == "14.3 (paper 13\u2020)"
            assert "\u2020 Not comparable: other protocol (samples per set: 5000 here vs 50000 in the paper)" in md
