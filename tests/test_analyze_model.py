"""tools/analyze_model.py and ltm_d2/deploy/model_analysis.py on the tiny config."""

import re

import pytest

from detectron2.modeling import build_model

from ltm_d2.deploy.model_analysis import model_cost

from support import TINY_CONFIG, load_tool, tiny_cfg

# Each test runs the tool, or builds models of every config once per module.
pytestmark = pytest.mark.slow

SIZE = (64, 96)


@pytest.fixture(scope="module")
def costs():
    """The ModelCost of the tiny LTM, RetinaNet and LTM-AF models at SIZE."""
    return {
        architecture: model_cost(
            build_model(tiny_cfg("MODEL.META_ARCHITECTURE", architecture)).eval(), SIZE
        )
        for architecture in ("LTM", "RetinaNet", "LTMAF")
    }


def test_ltm_and_retinanet_have_the_same_parameters_and_flops(costs):
    assert costs["LTM"].parameters == costs["RetinaNet"].parameters > 0
    assert costs["LTM"].flops == costs["RetinaNet"].flops > 0


def test_ltm_af_has_the_head_outputs_of_one_anchor_per_location_instead_of_nine(costs):
    cfg = tiny_cfg()
    outputs_per_anchor = cfg.MODEL.RETINANET.NUM_CLASSES + 4
    weights_per_output = cfg.MODEL.FPN.OUT_CHANNELS * 3 * 3 + 1  # the 3x3 prediction convs and bias
    assert (
        costs["LTM"].parameters - costs["LTMAF"].parameters
        == 8 * outputs_per_anchor * weights_per_output
    )


def test_the_tool_prints_one_row_per_config_at_its_test_size_by_default(tmp_path, capsys):
    retinanet = tmp_path / "retinanet_tiny.yaml"
    retinanet.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  META_ARCHITECTURE: "RetinaNet"\n')
    load_tool("tools/analyze_model.py").main(
        ["--config-file", TINY_CONFIG, "--config-file", str(retinanet), "MODEL.DEVICE", "cpu"]
    )
    printed = capsys.readouterr().out
    rows = re.findall(
        r"^\| (\S+) \| (\w+) \| (\d+x\d+) \| ([\d.]+) M \| ([\d.]+) G \|", printed, re.M
    )
    assert [row[:3] for row in rows] == [
        ("ltm_R_18_FPN_tiny", "LTM", "128x128"),
        ("retinanet_tiny", "RetinaNet", "128x128"),
    ]
    assert rows[0][3:] == rows[1][3:] and float(rows[0][3]) > 0
