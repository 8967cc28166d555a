"""benchmarks/cifar10_tables.py: row files per model, the item-2 choice on validation, the page."""
import importlib.util
import sys
from pathlib import Path

import pytest

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))  # the script imports _common and pq_vs_kmeans as siblings
_spec = importlib.util.spec_from_file_location("benchmarks_cifar10_tables", _DIR / "cifar10_tables.py")
T = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(T)


def test_row_files_keep_resnet20_names_and_prefix_other_models(tmp_path):
    assert T.row_file(tmp_path, "resnet20", "pq_kmeans") == tmp_path / "pq_kmeans.json"
    assert T.row_file(tmp_path, "alexnet_cifar", "pq_kmeans") == tmp_path / "alexnet_cifar-pq_kmeans.json"
    assert T.row_file(tmp_path, "vgg16_cifar", "baseline", ".partial.json") == tmp_path / "vgg16_cifar-baseline.partial.json"
    assert T.base_path("alexnet_cifar").parts[-3:] == ("cifar10", "alexnet_cifar", "base.pt")


def test_gi_pick_is_the_largest_ratio_within_the_tolerance_else_the_best_accuracy():
    pts = [{"thesis_ratio": 4.0, "val_acc": 82.0}, {"thesis_ratio": 6.0, "val_acc": 80.5},
           {"thesis_ratio": 9.0, "val_acc": 70.0}]
    assert T._gi_pick(pts, 82.0)["thesis_ratio"] == 6.0            # 80.5 >= 82 - 2
    assert T._gi_pick(pts, 83.0)["thesis_ratio"] == 4.0            # 80.5 < 81: only 82.0 is within
    assert T._gi_pick(pts, 90.0)["thesis_ratio"] == 4.0            # none within: the best accuracy
    # the published ratio plays no part: a point far above it at 12% accuracy is never chosen
    assert T._gi_pick(pts + [{"thesis_ratio": 50.0, "val_acc": 12.0}], 82.0)["thesis_ratio"] == 6.0


def test_gi_desc_short_forms():
    assert T._gi_desc({"bits": [8, 6, 4, 2], "clustering": "kmeans"}) == "bits [8, 6, 4, 2] kmeans thesis"
    q = T._Q([6, 5, 0], 0.38)
    assert abs(sum(q["fractions"]) - 1) < 1e-12
    assert T._gi_desc(q) == "bits [6, 5, 0] quantile keep 0.38 tight"
    assert T._gi_desc(T.GI_ITQ).startswith("ITQ 4/8-bit, quantiles [0.5, 0.75, 0.875], tight")


def _gi_row():
    m = {"file": "benchmarks/results/cifar10/alexnet_cifar-gi-ptq.wz", "file_bytes": 1_000_000, "file_ratio": 30.8,
         "thesis_ratio": 6.3, "published_ratio": 6.39, "test_acc_from_file": 80.0, "acc_drop_pt": 2.0,
         "chosen": {"method": "grad_ptq", **T._Q([6, 5, 0], 0.38)},
         "points": [{"config": T.GI_PTQ_GRID[0], "thesis_ratio": 4.9, "val_acc": 81.0},
                    {"config": T._Q([6, 5, 0], 0.38), "thesis_ratio": 6.3, "val_acc": 80.0}]}
    return {"row": "gradient_importance", "model": "alexnet_cifar", "baseline_test_acc": 82.0, "methods": {"ptq": m},
            "budget": {"track_epochs": 1, "itq": T.GI_ITQ, "itq_steps_per_epoch": 88, "lr": 1e-3, "tolerance_pt": 2.0},
            "wall_s": 100.0, "load_before": 1.0, "load_after": 2.0}


def test_page_has_every_model_baseline_and_the_item_2_rows():
    by_model = {"alexnet_cifar": {"baseline": {"test_acc": 84.1, "epochs": 30, "train_wall_s": 1e4, "val_acc": 84.0,
                                               "published_acc": None},
                                  "gradient_importance": _gi_row()}}
    page = T.markdown(by_model, {})
    assert "| AlexNet-CIFAR | 30 |" in page and "84.10" in page
    assert "## 2. Accumulated-gradient importance (seed 000), AlexNet-CIFAR" in page
    assert "| ptq | bits [6, 5, 0] quantile keep 0.38 tight | `alexnet_cifar-gi-ptq.wz` | 1,000,000 | 30.8x | 6.30x | 6.39x" in page
    assert "Models here: AlexNet-CIFAR. Not here (baseline not trained on this CPU yet): ResNet-20, VGG-16-CIFAR." in page
    assert "88 steps per epoch" in page


def test_rows_not_run_on_a_model_are_refused():
    with pytest.raises(SystemExit) as e:
        T.main(["--model", "alexnet_cifar", "--rows", "structured", "--render-only"])
    assert e.value.code == 2
