"""A call's datasource settings and Live path are worked out once, and again when they change."""

import pytest

from services.common.channels import Limits
from services.common.config import PluginSettings
from services.common.errors import InvalidChannel
from services.hostemu.host import Datasource
from services.plugin import specs
from services.plugin.specs import Specs


def test_a_datasource_is_read_once_per_version_of_its_settings_and_keys() -> None:
    kept = Specs(PluginSettings.load([], env={}))
    first = kept.config(Datasource(json_data={"maxChannels": 5}).context())
    assert kept.config(Datasource(json_data={"maxChannels": 5}).context()) is first, "read once"
    saved = kept.config(Datasource(json_data={"maxChannels": 7}, updated_ms=2).context())
    assert saved.max_channels == 7
    keys = {"curveSecretKey": "a" * 40, "brokerPublicKey": "b" * 40}
    assert kept.config(Datasource(json_data={"maxChannels": 7}, secure_json_data=keys).context()).curve == (
        "a" * 40,
        "b" * 40,
    ), "new keys with the same jsonData and time are read too"


def test_a_path_is_parsed_once_per_datasource_limits_and_refused_every_time() -> None:
    kept = Specs(PluginSettings.load([], env={}))
    spec, shown = kept.channel("custom-0-1-50", Limits())
    assert kept.channel("custom-0-1-50", Limits()) == (spec, shown)
    assert kept.channel("custom-0-1-50", Limits())[0] is spec, "parsed once"
    with pytest.raises(InvalidChannel, match="tick"):
        kept.channel("custom-0-1-50", Limits(min_tick_ms=100))  # a datasource allowing less
    with pytest.raises(InvalidChannel, match="unknown generator"):
        kept.channel("custom-0-1-50-nope-1", Limits())


def test_the_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specs, "KEPT", 3)
    kept = Specs(PluginSettings.load([], env={}))
    first = kept.channel("custom-0-1-50", Limits())[0]
    for i in range(2, 5):
        kept.channel(f"custom-0-{i}-50", Limits())
    assert kept.channel("custom-0-1-50", Limits())[0] is not first, "forgotten once the table was full"
