"""deploy/k8s renders with kustomize (base and both overlays) and every built-in object is valid
for the Kubernetes schemas (kubernetes-validate, bundled schemas, strict: an unknown field is
an error). cert-manager's kinds have no schema there; their fields are checked here."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from services.common.identity import SERVICES
from tests.deploy.manifests import KUSTOMIZATIONS, Manifest, container, of_kind, render
from tests.harness import ROOT, SERVICE_NAMES

# The oldest Kubernetes the manifests are for (native gRPC probes, matchLabelKeys) and the
# newest the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CREATED_BEFOREHAND = {"saga-context-key", "saga-vault-keys"}
"""Secrets no kustomization makes (key material): deploy/README.md says how to create them."""


def validate(obj: Manifest, version: str) -> None:
    """Raise unless `obj` is valid for Kubernetes `version`, strictly."""
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_built_in_object_is_valid(kustomization: str, version: str) -> None:
    objects = render(kustomization)
    built_in = [o for o in objects if not o["apiVersion"].startswith("cert-manager.io/")]
    assert len(of_kind(objects, "Deployment")) >= len(SERVICES)
    for obj in built_in:
        validate(obj, version)


def test_the_validator_refuses_an_invalid_object() -> None:
    deployment = copy.deepcopy(of_kind(render("base"), "Deployment")["router"])
    validate(deployment, VERSIONS[0])
    container(deployment)["ports"][0]["containerPort"] = "fifty"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, VERSIONS[0])
    container(deployment)["ports"][0]["containerPort"] = 50054
    container(deployment)["livenessProbe"]["grpc"]["servce"] = ""  # strict: unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, VERSIONS[0])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_meet_the_restricted_standard_and_have_resources(kustomization: str) -> None:
    objects = render(kustomization)
    accounts = of_kind(objects, "ServiceAccount")
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        account = accounts.get(pod.get("serviceAccountName", ""), {})
        no_token = pod.get(
            "automountServiceAccountToken", account.get("automountServiceAccountToken")
        )
        assert no_token is False, name  # none of them talks to the Kubernetes API
        for c in pod["containers"]:
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert security["readOnlyRootFilesystem"] is True, name
            assert set(c["resources"]) == {"requests", "limits"}, name
            assert "@sha256:" in c["image"] or c["image"].startswith("saga"), name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_ask_what_the_services_serve_on_declared_ports(kustomization: str) -> None:
    deployments = of_kind(render(kustomization), "Deployment")
    for service in SERVICES:
        c = container(deployments[service])
        ports = {p["containerPort"] for p in c["ports"]}
        assert c["args"] == [f"services.{service}"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c[kind]
            if "grpc" in probe:
                assert probe["grpc"]["port"] in ports, (service, kind)
                asked = probe["grpc"]["service"]
                assert asked == "" if kind != "readinessProbe" else asked in SERVICE_NAMES[service]
            else:
                assert service == "gateway", (service, kind)
                assert probe["httpGet"]["port"] == 8080 in ports
                expected = "/readyz" if kind == "readinessProbe" else "/healthz"
                assert probe["httpGet"]["path"] == expected
    gateway = container(deployments["gateway"])
    assert "httpGet" in gateway["readinessProbe"]
    assert "httpGet" in gateway["livenessProbe"]


@pytest.mark.parametrize("kustomization", ["overlays/dev", "overlays/production"])
def test_each_service_gets_a_certificate_for_its_identity(kustomization: str) -> None:
    objects = render(kustomization)
    certificates = of_kind(objects, "Certificate")
    issuers = of_kind(objects, "Issuer")
    for service in SERVICES:
        spec = certificates[f"saga-tls-{service}"]["spec"]
        assert spec["secretName"] == f"saga-tls-{service}"
        assert spec["uris"] == [f"spiffe://saga/{service}"]
        assert spec["dnsNames"] == [service]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["encoding"] == "PKCS8"
        assert spec["issuerRef"] == {"name": "saga-ca", "kind": "Issuer"}
    assert issuers["saga-ca"]["spec"] == {"ca": {"secretName": "saga-ca"}}


def test_dev_brings_its_own_ca_and_databases_production_does_not() -> None:
    dev, production = render("overlays/dev"), render("overlays/production")
    assert of_kind(dev, "Certificate")["saga-ca"]["spec"]["isCA"] is True
    assert "saga-ca" not in of_kind(production, "Certificate")
    assert {"postgres", "redis"} <= set(of_kind(dev, "Deployment"))
    assert not {"postgres", "redis"} & set(of_kind(production, "Deployment"))
    assert all(d["spec"]["replicas"] == 1 for d in of_kind(dev, "Deployment").values())
    assert not of_kind(dev, "HorizontalPodAutoscaler")
    assert not of_kind(dev, "PodDisruptionBudget")
    assert set(of_kind(production, "PodDisruptionBudget")) == set(SERVICES)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_secret_a_pod_reads_is_made_here_or_documented(kustomization: str) -> None:
    objects = render(kustomization)
    made = set(of_kind(objects, "Secret")) | {
        c["spec"]["secretName"] for c in of_kind(objects, "Certificate").values()
    }
    assert not made & CREATED_BEFOREHAND  # key material is never in a manifest
    readme = (ROOT / "deploy" / "README.md").read_text()
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        read = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        read |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in pod["containers"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for secret in read - made:
            spelled = "saga-tls-<id>" if secret.startswith("saga-tls-") else secret
            assert f"`{spelled}`" in readme, f"{kustomization}: {name} reads {secret}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_network_policies_open_only_declared_ports(kustomization: str) -> None:
    objects = render(kustomization)
    declared = {
        p["containerPort"]
        for d in of_kind(objects, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    for name, policy in of_kind(objects, "NetworkPolicy").items():
        for rule in policy["spec"].get("ingress", []):
            assert {p["port"] for p in rule["ports"]} <= declared, name
