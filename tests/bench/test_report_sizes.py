"""`make bench` keeps in its report the settlement sizes measured apart, never drops them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.settlement import keep_sizes_measured_apart


def size(obligations: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "obligations": obligations,
        "settlement_seconds": seconds,
        "aggregate_seconds": seconds / 100,
        **extra,
    }


def test_a_larger_size_measured_apart_is_kept_with_its_date_and_its_own_growth(
    tmp_path: Path,
) -> None:
    previous = tmp_path / "latest.json"
    apart = size(10_000_000, 500.0, measured_apart="2026-12-04T22:46:38Z", requested=10_000_000)
    previous.write_text(
        json.dumps({
            "settlement": {
                "sizes": [size(250_000, 4.0), size(1_000_000, 20.0), apart],
                "growth": {"rows_factor": 40.0, "settlement_time_factor": 125.0,
                           "aggregate_time_factor": 40.0},
            }
        })
    )  # fmt: skip
    now = {
        "sizes": [size(250_000, 5.0), size(1_000_000, 19.0)],
        "growth": {"rows_factor": 4.0, "settlement_time_factor": 3.8, "aggregate_time_factor": 3.8},
    }

    keep_sizes_measured_apart(now, previous)

    assert [s["obligations"] for s in now["sizes"]] == [250_000, 1_000_000, 10_000_000]
    assert now["sizes"][-1]["measured_apart"] == "2026-12-04T22:46:38Z"
    assert now["sizes"][1]["settlement_seconds"] == 19.0, "this run's figure, not the old one"
    assert now["growth"]["rows_factor"] == 4.0, "this run's growth stays its own"
    assert now["growth_apart"] == {
        "rows_factor": 40.0,
        "settlement_time_factor": 125.0,
        "aggregate_time_factor": 40.0,
        "measured_apart": "2026-12-04T22:46:38Z",
    }, "the growth to the kept size is the one measured with it, not mixed with today's sizes"


def test_sizes_measured_now_replace_old_ones_and_no_previous_report_changes_nothing(
    tmp_path: Path,
) -> None:
    previous = tmp_path / "latest.json"
    old = size(1_000_000, 30.0, measured_apart="2026-11-30T00:00:00Z")
    previous.write_text(json.dumps({"settlement": {"sizes": [old]}}))
    now = {"sizes": [size(1_000_000, 19.0)], "growth": None}

    keep_sizes_measured_apart(now, previous)
    keep_sizes_measured_apart(now, tmp_path / "missing.json")

    assert now == {"sizes": [size(1_000_000, 19.0)], "growth": None}
