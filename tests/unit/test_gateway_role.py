"""The gateway, cutover and rollback plans, and the nginx configuration they render."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmhost.errors import ConfigError
from llmhost.onhost.runtimectl import upstream_text
from llmhost.render import render
from llmhost.secrets import add_api_key, api_keys
from roles.gateway import gateway
from roles.gateway.cutover import cutover
from roles.gateway.rollback import rollback
from tests.unit import test_runtime_role as runtime_tests
from tests.unit.pyinfra_plan import SECRETS_DIR, per_argument, plan

catalog = runtime_tests.catalog  # the same catalog and recorded build (autouse fixture)
host_data = runtime_tests.host_data


@pytest.fixture(autouse=True)
def a_key() -> None:
    if "team-a" not in api_keys(Path(SECRETS_DIR)):
        add_api_key(Path(SECRETS_DIR), "team-a")


def site_conf(**overrides: object) -> str:
    values = dict(
        nginx_dir="/etc/nginx/llmhost",
        port=8000,
        tls=True,
        rps=10,
        burst=20,
        max_body_kb=1024,
        read_timeout=600,
        audit_log="/var/log/nginx/a.log",
        runtime_ports=[("blue", 8001), ("green", 8002)],
        metrics_allow=["10.231.1.2/32"],
        usage_script="/etc/nginx/llmhost/usage.js",
        drain_flag="/run/llmhost-gateway-drain",
        edge_sources=["10.0.0.9/32"],
    )
    return render("gateway/llmhost-gateway.conf.j2", **{**values, **overrides})


def test_the_health_check_answers_503_while_the_host_drains_and_the_engine_otherwise():
    conf = site_conf()
    health = conf[conf.index("location = /healthz {") :]
    health = health[: health.index("\n    }\n")]
    assert "if (-f /run/llmhost-gateway-drain) {" in health
    assert "return 503 " in health
    assert health.rstrip().endswith("proxy_pass http://llmhost_runtime/health;")


def test_team_and_feature_are_taken_from_the_edges_in_front_alone():
    conf = site_conf()
    geo = conf[conf.index("geo $llmhost_from_edge {") :]
    assert geo[: geo.index("}")].split("\n")[1:3] == ["    default 0;", "    10.0.0.9/32 1;"]
    assert 'map "$llmhost_from_edge:$http_x_llmhost_team" $llmhost_team {' in conf
    assert '"~^1:(?<team>[a-z0-9][a-z0-9-]{0,31})$" $team;' in conf
    assert '"team":"$llmhost_team","feature":"$llmhost_feature"' in conf


def test_answers_pass_through_the_usage_counter_and_their_tokens_reach_the_audit_line():
    conf = site_conf()
    assert "js_import llmhost_usage from /etc/nginx/llmhost/usage.js;" in conf
    for variable in ("llmhost_prompt_tokens", "llmhost_completion_tokens", "llmhost_usage_tail"):
        assert f"js_var ${variable};" in conf
    proxied = conf.split("location / {", 1)[1].split("\n    }", 1)[0]
    assert "js_body_filter llmhost_usage.count;" in proxied
    assert "js_body_filter" not in conf.split("location / {", 1)[0], "only engine answers"
    audit = conf.split("log_format llmhost_audit", 1)[1].split(";", 1)[0]
    assert '"prompt_tokens":"$llmhost_prompt_tokens"' in audit
    assert '"completion_tokens":"$llmhost_completion_tokens"' in audit
    # The same lines go to the file and to the journal.
    assert "access_log /var/log/nginx/a.log llmhost_audit;" in conf
    assert "access_log syslog:server=unix:/dev/log,tag=llmhost_gateway,nohostname" in conf


def test_the_usage_script_finds_the_last_usage_and_ignores_escaped_quotes():
    script = render("gateway/usage.js.j2")
    assert script.startswith("// managed by llmhost")
    # The script's own patterns, applied the way its loop does (last match wins).
    pattern = re.search(r"var PROMPT = /(.*)/g;", script)
    assert pattern
    regex = re.compile(pattern[1])
    answer = (
        '{"text":"say \\"prompt_tokens\\": 99","usage":{"prompt_tokens":12,"completion_tokens":3}}'
    )
    assert [m[1] for m in regex.finditer(answer)] == ["12"]
    assert "r.sendBuffer(data, flags);" in script, "every chunk is passed on unchanged"


def test_engine_metrics_are_proxied_per_colour_for_the_scrapers_only():
    text = site_conf()
    for colour, port in (("blue", 8001), ("green", 8002)):
        block = text.split(f"location = /metrics/{colour} {{", 1)[1].split("}", 1)[0]
        assert "allow 10.231.1.2/32;" in block and "deny all;" in block
        assert f"proxy_pass http://127.0.0.1:{port}/metrics;" in block
        assert "access_log off;" in block
    nobody = site_conf(metrics_allow=[])
    block = nobody.split("location = /metrics/blue {", 1)[1].split("}", 1)[0]
    assert "allow" not in block and "deny all;" in block


def test_the_server_block_checks_keys_limits_sizes_and_streams():
    text = site_conf()
    assert 'if ($llmhost_identity = "") {\n            return 401;' in text
    assert "limit_req_zone $llmhost_identity zone=llmhost_per_identity:10m rate=10r/s;" in text
    assert "limit_req zone=llmhost_per_identity burst=20 nodelay;" in text
    assert "limit_req_status 429;" in text
    assert "client_max_body_size 1024k;" in text
    assert "proxy_buffering off;" in text and "proxy_read_timeout 600s;" in text
    assert 'proxy_set_header Authorization "";' in text
    assert 'proxy_set_header Connection "";' in text, "kept-alive connections to the engine"
    assert "proxy_next_upstream error non_idempotent;" in text, "a dead pooled one is retried"
    assert "listen 8000 ssl;" in text and "ssl_certificate /etc/nginx/llmhost/tls.crt;" in text
    assert "listen 8000;" in site_conf(tls=False) and "ssl_certificate" not in site_conf(tls=False)


def test_the_audit_line_names_identity_and_colour_but_never_the_key_or_the_body():
    text = site_conf()
    audit = text[text.index("log_format llmhost_audit") : text.index("server {")]
    for field in ("identity", "request_id", "colour", "status", "request_time", "upstream_time"):
        assert f'"{field}":' in audit
    for secret in ("http_authorization", "request_body", "$args"):
        assert secret not in audit


def test_keys_render_as_a_map_from_the_bearer_header_to_the_identity():
    text = render("gateway/api-keys.conf.j2", keys=[("team-a", "k" * 40)])
    assert 'default "";' in text
    assert f'"Bearer {"k" * 40}" "team-a";' in text


def test_the_first_plan_installs_nginx_writes_root_only_keys_and_points_at_no_colour():
    planned = plan(gateway, host_data())
    assert any(n.startswith("Install nginx") for n in planned)
    upstream = planned["Gateway: upstream include, first pointed at no colour (502)"]
    assert upstream, "written on a new host"
    keys = [c for n, cmds in planned.items() if n.startswith("Gateway: API keys") for c in cmds]
    assert any("chmod 600 /etc/nginx/llmhost/api-keys.conf" in c for c in keys)
    assert planned["Firewall: allow TCP 8000 (LLM gateway)"]


def test_an_existing_upstream_is_left_to_cutover():
    upstream = per_argument({"path=/etc/nginx/llmhost/upstream.conf": {"mode": 644}})
    planned = plan(gateway, host_data(), facts={"File": upstream})
    assert not any(n.startswith("Gateway: upstream include") for n in planned)


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"gateway_port": 8001}, "gateway_port", "also `runtime_ports.blue`'s port"),
        ({"gateway_rate_limit_rps": 0}, "gateway_rate_limit_rps", "is below 1"),
        ({"gateway_rollback_window_s": -1}, "gateway_rollback_window_s", "is below 0"),
        ({"gateway_identities": ["ghost"]}, "gateway_identities", "ghost"),
        ({"gateway_tls_certificate": "/x.pem"}, "gateway_tls_certificate", "needs both"),
        ({"gateway_allow_from": ["nope"]}, "gateway_allow_from", "is not a network"),
    ],
)
def test_bad_gateway_settings_are_refused_naming_the_key(data, key, problem):
    with pytest.raises(ConfigError) as raised:
        plan(gateway, host_data(**data))
    assert raised.value.key == key and problem in str(raised.value)


def test_no_key_for_this_host_is_refused_with_the_command_that_makes_one(tmp_path):
    with pytest.raises(ConfigError, match="llmhost keys add"):
        plan(gateway, host_data(secrets_dir=str(tmp_path)))


def test_cutover_switches_to_the_colour_the_runtime_stages():
    release = runtime_tests.the_release().id
    state = runtime_tests.active_state("blue", "old")
    facts = {"HostState": state, "FileContents": upstream_text("blue", 8001).splitlines()}
    planned = plan(cutover, host_data(), facts=facts)
    (name,) = planned
    assert name == f"Cutover: gateway to green (release {release})"
    command = planned[name][0]
    assert "cutover --to green --ports blue=8001,green=8002" in command
    assert "--rollback-window 3600" in command


def test_with_monitoring_hosts_a_cutover_first_asks_their_prometheus_to_watch_this_host():
    state = runtime_tests.active_state("blue", "old")
    facts = {"HostState": state, "FileContents": upstream_text("blue", 8001).splitlines()}
    data = host_data(ssh_hostname="10.0.0.9")
    (command,) = next(iter(plan(cutover, data, facts=facts, groups=["monitoring"]).values()))
    assert "--watched-by http://10.0.0.9:9090 --host host1" in command
    (unwatched,) = next(iter(plan(cutover, data, facts=facts).values()))
    assert "--watched-by" not in unwatched


def test_cutover_does_nothing_when_the_gateway_already_sends_to_the_active_release():
    state = runtime_tests.active_state("blue", runtime_tests.the_release().id)
    facts = {"HostState": state, "FileContents": upstream_text("blue", 8001).splitlines()}
    assert plan(cutover, host_data(), facts=facts) == {}


def test_cutover_repairs_a_gateway_pointing_away_from_the_active_colour():
    state = runtime_tests.active_state("blue", runtime_tests.the_release().id)
    facts = {"HostState": state, "FileContents": upstream_text("green", 8002).splitlines()}
    (name,) = plan(cutover, host_data(), facts=facts)
    assert name.startswith("Cutover: gateway to blue")


def test_rollback_asks_the_host_to_switch_back():
    ((_name, commands),) = plan(rollback, host_data(gateway_rollback_window_s=60)).items()
    assert "rollback --ports blue=8001,green=8002" in commands[0]
    assert "--rollback-window 60" in commands[0]


def test_api_keys_are_refused_when_malformed_without_echoing_them(tmp_path):
    (tmp_path / "api-keys.json").write_text('{"team-a": "short-secret"}')
    with pytest.raises(ConfigError) as raised:
        api_keys(tmp_path)
    assert "short-secret" not in str(raised.value)
    assert "--rotate" in str(raised.value)


def test_a_key_is_made_once_and_replaced_only_on_rotate(tmp_path):
    first = add_api_key(tmp_path, "team-c")
    with pytest.raises(ConfigError, match="already has a key"):
        add_api_key(tmp_path, "team-c")
    rotated = add_api_key(tmp_path, "team-c", rotate=True)
    assert rotated != first and api_keys(tmp_path) == {"team-c": rotated}
    assert (tmp_path / "api-keys.json").stat().st_mode & 0o777 == 0o600
