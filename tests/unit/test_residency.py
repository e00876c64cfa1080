import pytest

from llmhost.errors import ConfigError
from llmhost.residency import EU_MEMBER_STATES, ResidencySettings, check_region, region_allowed

DEFAULT = ResidencySettings().residency_allowed_regions


def test_default_allows_the_uk_and_all_27_member_states():
    assert len(EU_MEMBER_STATES) == 27
    assert {"gb", "uk"} <= set(DEFAULT)
    assert set(EU_MEMBER_STATES) <= set(DEFAULT)


@pytest.mark.parametrize("region", ["gb", "gb-lon1", "uk-man", "de-fra", "nl-ams-2", "ie"])
def test_uk_and_eu_regions_are_allowed(region):
    assert check_region(region, DEFAULT, "h1") == region


@pytest.mark.parametrize("region", ["us-east-1", "ch-zrh", "no-osl", "ru", "gg-stp"])
def test_regions_outside_the_list_are_refused_with_the_fix(region):
    with pytest.raises(ConfigError, match="outside `residency_allowed_regions`") as raised:
        check_region(region, DEFAULT, "h1")
    assert "host h1: key `region`" in str(raised.value)
    assert "Fix: move the host" in str(raised.value)


def test_entries_allow_themselves_and_regions_below_them_only():
    assert region_allowed("de-fra-2", ["de-fra"])
    assert not region_allowed("de-ber", ["de-fra"])
    assert not region_allowed("dex", ["de"])


def test_missing_region_names_the_key_and_an_example():
    with pytest.raises(ConfigError) as raised:
        check_region(None, DEFAULT, "gpu-1")
    assert str(raised.value).startswith("host gpu-1: key `region`: is missing")
    assert '"region": "gb-lon1"' in str(raised.value)


@pytest.mark.parametrize("region", ["GB", "gb_lon", "", "g", 44, "gb-", "gbr-lon", "deu"])
def test_malformed_region_codes_are_refused(region):
    with pytest.raises(ConfigError, match="is not a region code"):
        check_region(region, DEFAULT, "h1")
