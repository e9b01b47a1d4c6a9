"""Detection from fixture filesystem roots: every device, and how --device / --emulate resolve on each."""

from __future__ import annotations

import pytest
from ternarylm.devices.detect import DeviceError, detect_device, detect_host, resolve_device
from ternarylm.devices.profile import ProfileError

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]

# root -> (profile, arch, cpu model, dotprod, avx512, avx512_vnni, cores)
HOSTS = {
    "x86-avx512": ("cpu", "x86_64", "Intel(R) Xeon(R) Platinum 8480+", False, True, True, 2),
    "x86-avx2": ("cpu", "x86_64", "AMD Ryzen 7 5800U with Radeon Graphics", False, False, False, 4),
    "rpi4": ("rpi4", "aarch64", "Cortex-A72", False, False, False, 4),
    "rpi5": ("rpi5", "aarch64", "Cortex-A76", True, False, False, 4),
    "jetson-orin-nano": ("jetson-orin-nano", "aarch64", "Cortex-A78AE", True, False, False, 6),
    "jetson-agx-orin": ("jetson-agx-orin", "aarch64", "Cortex-A78AE", True, False, False, 12),
    "jetson-orin-nx": ("cpu", "aarch64", "Cortex-A78AE", True, False, False, 8),  # a Jetson with no profile
    "arm64-server": ("cpu", "aarch64", "Neoverse-N1", True, False, False, 4),
    "arm64-a72-nodt": ("cpu", "aarch64", "Cortex-A72", False, False, False, 4),
}


@pytest.mark.parametrize("root", sorted(HOSTS))
def test_detect_every_fixture_host(fixture_root, root):
    profile, arch, model, dotprod, avx512, vnni, cores = HOSTS[root]
    host = detect_host(fixture_root(root), providers=CPU)
    assert (host.arch, host.cpu_model, host.dotprod, host.avx512, host.avx512_vnni, host.cpu_count) == (
        arch, model, dotprod, avx512, vnni, cores)
    assert detect_device(fixture_root(root), providers=CPU) == profile
    assert host.providers == CPU
    assert host.memory_total_mb and host.memory_total_mb > 1000


def test_board_details(fixture_root):
    pi = detect_host(fixture_root("rpi5"), providers=[])
    assert pi.board_model == "Raspberry Pi 5 Model B Rev 1.0" and pi.is_raspberry_pi and not pi.is_jetson
    nano = detect_host(fixture_root("jetson-orin-nano"), providers=[])
    assert nano.is_jetson and nano.tegra_release == "L4T R36.4.0"
    assert "nvidia,tegra234" in nano.compatible
    assert detect_host(fixture_root("x86-avx2"), providers=[]).avx2


def test_missing_root_is_an_unknown_host(tmp_path):
    host = detect_host(tmp_path, providers=[])
    assert host.arch == "unknown" and detect_device(tmp_path, providers=[]) == "cpu"


def test_real_host_detects_something():
    host = detect_host("/")
    assert host.arch in ("x86_64", "aarch64") and "CPUExecutionProvider" in host.providers


@pytest.mark.parametrize("root, alias, expected", [
    ("rpi4", "rpi", "rpi4"), ("rpi5", "rpi", "rpi5"),
    ("jetson-orin-nano", "jetson", "jetson-orin-nano"), ("jetson-agx-orin", "jetson", "jetson-agx-orin"),
    ("rpi5", "auto", "rpi5"), ("x86-avx512", "auto", "cpu"),
    ("rpi4", "cpu", "cpu"),  # the generic CPU profile fits any host
])
def test_aliases_resolve_by_detection(fixture_root, root, alias, expected):
    r = resolve_device(alias, detect_host(fixture_root(root), providers=CUDA))
    assert r.profile.name == expected and r.on_device and not r.emulated


@pytest.mark.parametrize("root, request_, fragment", [
    ("x86-avx512", "jetson", "this host is not a Jetson"),
    ("x86-avx512", "rpi", "this host is not a Raspberry Pi"),
    ("rpi5", "rpi4", "this host is not a rpi4"),
    ("jetson-orin-nano", "jetson-agx-orin", "this host is not a jetson-agx-orin"),
])
def test_off_device_request_refused_without_emulate(fixture_root, root, request_, fragment):
    with pytest.raises(DeviceError, match=fragment) as e:
        resolve_device(request_, detect_host(fixture_root(root), providers=CPU))
    assert "--emulate" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("request_, expected", [("jetson", "jetson-orin-nano"), ("rpi", "rpi5"), ("rpi4", "rpi4")])
def test_emulate_applies_the_profile_off_device(fixture_root, request_, expected):
    r = resolve_device(request_, detect_host(fixture_root("x86-avx512"), providers=CPU), emulate=True)
    assert r.profile.name == expected and r.on_device is False and r.to_dict()["on_device"] is False


def test_jetson_without_a_profile_says_so(fixture_root):
    with pytest.raises(DeviceError, match="is a Jetson .*no profile matches"):
        resolve_device("jetson", detect_host(fixture_root("jetson-orin-nx"), providers=CPU))


def test_unknown_device_lists_known(fixture_root):
    with pytest.raises(ProfileError, match="unknown device 'raspberry'; known: auto, cpu, jetson-agx-orin"):
        resolve_device("raspberry", detect_host(fixture_root("rpi5"), providers=CPU))
