"""What `upgrade` pins in an inventory (group_vars/qwen35_nodes/zz-upgrade.yml), through the deployment reader:
read and written whole."""

import yaml

from qwen35_prov.deployment import PIN_KEYS, UPGRADE_PINS, Deployed


def test_no_pins_until_an_upgrade_writes_them(tmp_path):
    assert Deployed(tmp_path).pins == {}


def test_pins_are_written_whole_and_a_none_removes_one(tmp_path):
    d = Deployed(tmp_path)
    path = d.pin({"qwen35_image": "lmsysorg/sglang:v0.5.24", "sglang_image_digest": "sha256:" + "a" * 64})
    assert path == tmp_path / UPGRADE_PINS
    d.pin({"sglang_image_digest": None, "nvidia_driver_version": "580.173.02"})
    on_disk = yaml.safe_load(path.read_text())
    assert on_disk == {"qwen35_image": "lmsysorg/sglang:v0.5.24", "nvidia_driver_version": "580.173.02"}
    assert d.pins == on_disk
    assert not list(path.parent.glob("*.tmp"))


def test_only_the_known_keys_are_pins(tmp_path):
    (tmp_path / UPGRADE_PINS).parent.mkdir(parents=True)
    (tmp_path / UPGRADE_PINS).write_text("qwen35_image: x:1\nsomething_else: 2\n")
    assert Deployed(tmp_path).pins == {"qwen35_image": "x:1"} and "something_else" not in PIN_KEYS


def test_an_empty_value_is_pinned_so_a_new_image_drops_the_inventorys_digest_and_tarball(tmp_path):
    d = Deployed(tmp_path)
    d.pin({"qwen35_image": "new:1", "sglang_image_digest": "", "sglang_image_archive": ""})
    assert yaml.safe_load((tmp_path / UPGRADE_PINS).read_text()) == {
        "qwen35_image": "new:1", "sglang_image_digest": "", "sglang_image_archive": ""}
