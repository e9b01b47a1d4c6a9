"""Every shipped profile loads and validates; bad profiles fail with a message naming file and field."""

from __future__ import annotations

import json

import pytest
from ternarylm.devices.profile import ProfileError, families, known_names, load_profile, load_profiles
from ternarylm.format.targets import TARGETS

EXPECTED = {
    "cpu": ("ort-cpu", 2, False),
    "rpi4": ("ort-arm64-nodot", 4, False),
    "rpi5": ("ort-cpu", 2, False),
    "jetson-orin-nano": ("ort-cuda", 4, True),
    "jetson-agx-orin": ("ort-cuda", 4, True),
}


def test_shipped_profiles_are_the_expected_set():
    assert set(load_profiles()) == set(EXPECTED)
    assert families(load_profiles()) == {"jetson": ["jetson-agx-orin", "jetson-orin-nano"], "rpi": ["rpi4", "rpi5"]}
    assert known_names()[:1] == ["auto"] and {"rpi", "jetson"} <= set(known_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_fields(name):
    p = load_profile(name)
    target, bits, gpu = EXPECTED[name]
    assert p.export_target == target and p.lowering.bits == bits and p.uses_gpu == gpu
    assert p.export_target in TARGETS
    assert p.providers[-1] == "CPUExecutionProvider"
    assert p.memory_budget_mb > 0 and p.recommended_context >= 512 and p.notes
    assert p.lowering.block_size in (32, 64, 128) and p.lowering.accuracy_level is not None
    assert p.tune.lowerings, "every profile gives --tune candidates"
    for lw in p.tune.lowerings:
        assert lw.target in TARGETS and lw.bits in (2, 4)
    json.dumps(p.to_dict())  # JSON round-trip of the whole profile (report.json embeds it)
    if gpu:
        assert p.lowering.activation_dtype == "float16"


def test_pi_lowerings_follow_the_dotprod_evidence():
    assert load_profile("rpi5").lowering.accuracy_level == 4  # 2-bit fast path needs dotprod + acc 4
    assert load_profile("rpi4").lowering.bits == 4  # Cortex-A72: 2-bit falls back, 4-bit stays fast
    assert any(lw.session_config.get("mlas.use_lut_gemm") == "1" for lw in load_profile("rpi5").tune.lowerings)


def test_cpu_profile_switches_to_4bit_on_arm_without_dotprod():
    cpu = load_profile("cpu")
    assert cpu.lowering_for(dotprod=False, arch="aarch64").target == "ort-arm64-nodot"
    assert cpu.lowering_for(dotprod=True, arch="aarch64").target == "ort-cpu"
    assert cpu.lowering_for(dotprod=False, arch="x86_64").target == "ort-cpu"


def test_unknown_profile_lists_known_names():
    with pytest.raises(ProfileError, match="unknown device 'pi9'; known: auto, cpu.*rpi"):
        load_profile("pi9")


BASE = """
version = 1
name = "{name}"
description = "test"
memory_budget_mb = 100
recommended_context = 512
[providers]
order = ["CPUExecutionProvider"]
[lowering]
{lowering}
"""


@pytest.mark.parametrize("lowering, message", [
    ('target = "ort-gpu"', "unknown export target 'ort-gpu'"),
    ('target = "ort-cpu"\nblock_size = 256\naccuracy_level = 4', "block_size must be one of"),
    ('target = "ort-cpu"\nblock_size = 32\naccuracy_level = 7', "accuracy_level must be 0-4"),
    ('target = "ort-cpu"\nblock_size = 32\naccuracy_level = 4\nbogus = 1', "unknown lowering field"),
])
def test_bad_profile_names_file_and_field(tmp_path, lowering, message):
    (tmp_path / "dev.toml").write_text(BASE.format(name="dev", lowering=lowering))
    with pytest.raises(ProfileError, match=message) as e:
        load_profiles(tmp_path)
    assert "dev.toml" in str(e.value)


def test_profile_name_must_match_file(tmp_path):
    (tmp_path / "dev.toml").write_text(BASE.format(name="other", lowering='target = "portable"'))
    with pytest.raises(ProfileError, match="does not match the file name"):
        load_profiles(tmp_path)


def test_adding_a_device_is_adding_a_file(tmp_path):
    (tmp_path / "mydev.toml").write_text(BASE.format(name="mydev", lowering='target = "portable"') +
                                         '[detect]\ndevice_tree_model = ["My Board"]\n')
    p = load_profiles(tmp_path)["mydev"]
    assert p.detect.device_tree_model == ("My Board",) and p.export_target == "portable"
