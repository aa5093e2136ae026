"""The KServe example: its container's command is a valid ``aticnet serve``, Ray keeps its token authentication
(from a Secret), and only the inference ports are open to other pods."""

from __future__ import annotations

import yaml

from aticnet.cli import build_parser
from tests.helpers import ROOT


def test_the_kserve_example_keeps_ray_authentication_and_opens_only_inference_ports():
    service, policy = yaml.safe_load_all((ROOT / "examples" / "kserve" / "inferenceservice.yaml").read_text())
    container = service["spec"]["predictor"]["containers"][0]
    assert container["command"] == ["aticnet", "serve"]
    args = build_parser().parse_args(["serve", *container["args"]])
    assert args.host == "0.0.0.0" and (args.http_port, args.grpc_port) == (8080, 8081)
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "aticnet-ray-token"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "aticnet"}
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {8080, 8081, 8012} and all("from" not in rule for rule in policy["spec"]["ingress"])


def test_serve_listens_on_loopback_unless_told():
    args = build_parser().parse_args(["serve", "--weights", "aticnet-camvid"])
    assert (args.host, args.max_megapixels, args.max_body_mb, args.max_queued) == ("127.0.0.1", 16.0, 64.0, 32)
